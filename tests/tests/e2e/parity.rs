//! The original API, as its portal calls it (SEED-API.md): its own six test steps,
//! its wire values and record fields, multipart parts in any order, files without text.

use std::io::Cursor;

use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, json_of, spawn_app};
use futures_util::StreamExt;
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

use crate::WAIT;

fn jpeg() -> Vec<u8> {
    let image = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// Waits until the communication is `status` (a worker's doing).
async fn settled(app: &TestApp, id: &str, status: &str) {
    app.wait_for_status(id, status).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_originals_six_test_steps_work_as_written() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let customer = app.customer_token("test-customer-1");

    // 1. Upload, `file` before `customer_id` as in the original's curl.
    let uploaded = json_of(
        app.upload_file(&staff, "test-customer-1", jpeg(), "test-image.jpg", true)
            .await,
        202,
    )
    .await;
    let file = &uploaded["files"][0];
    let file_id = file["file_id"].as_str().unwrap().to_owned();
    assert_eq!(file["filename"], "test-image.jpg");
    assert_eq!(file["file_type"], "image/jpeg");
    assert_eq!(file["file_category"], "images");
    assert!(
        file["url"]
            .as_str()
            .unwrap()
            .starts_with("/api/communications/file/")
    );
    assert!(
        file["thumbnail_url"]
            .as_str()
            .unwrap()
            .starts_with("/api/communications/file/thumbnails/")
    );

    // 2. Send with the file attached.
    let sent = json_of(
        app.post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "test-customer-1", "message": "Hello! Here is your invoice.", "attachments": [file_id] }),
        )
        .await,
        202,
    )
    .await;
    let id = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(sent["type"], "inapp");
    assert_eq!(sent["content"], "Hello! Here is your invoice.");
    assert_eq!(sent["attachments"][0]["file_id"], file_id.as_str());
    settled(&app, &id, "sent").await;

    // 3. List by customer and the original's `inapp`.
    let listed = json_of(
        app.get(
            "/api/communications?customer_id=test-customer-1&type=inapp",
            &staff,
        )
        .await,
        200,
    )
    .await;
    let rows = listed["communications"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["type"], "inapp");

    // 4. Search for "invoice" in that customer's conversation.
    let found = json_of(
        app.search(
            &staff,
            &json!({ "query": "invoice", "customer_id": "test-customer-1" }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(found["communications"][0]["id"], id.as_str());
    assert!(
        found["communications"][0]["highlight"]
            .as_str()
            .unwrap()
            .contains("<mark>invoice</mark>"),
        "{found}"
    );

    // 5. Mark it read (the customer received it), with no body, as curl -X POST sends.
    let response = app
        .client
        .post(app.url(&format!("/api/communications/{id}/mark-read")))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    settled(&app, &id, "read").await;
    let status = json_of(
        app.get(&format!("/api/communications/{id}/status"), &staff)
            .await,
        200,
    )
    .await;
    assert_eq!(status["status"], "read");
    assert_eq!(status["read"], true);
    assert_eq!(status["read_by"], "user-of-test-customer-1");

    // 6. The WebSocket at /api/ws/user-123, with the token as a bearer header.
    let user_token = app.token("user-123", Role::Staff, None);
    let mut request = format!("ws://{}/api/ws/user-123", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {user_token}")).unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = tokio::time::timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "connected");
}

#[tokio::test(flavor = "multi_thread")]
async fn records_carry_the_originals_fields_and_values() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let customer = app.customer_token("cust-1");

    let in_app = app.send_ok(&staff, "cust-1", "Crew arrives at 9").await;
    let in_app_id = in_app["id"].as_str().unwrap().to_owned();
    let sms = json_of(
        app.post_json(
            "/api/integrations/ringcentral/sms",
            &staff,
            &json!({ "customer_id": "cust-1", "to": "+14155550100", "message": "On our way" }),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(sms["type"], "sms");
    assert_eq!(sms["to"], "+14155550100");
    assert_eq!(sms["integration"], "ringcentral");
    assert_eq!(sms["segments"], 1);
    let call = json_of(
        app.post_json(
            "/api/integrations/ringcentral/call-log",
            &staff,
            &json!({ "customer_id": "cust-1", "phone": "+14155550100", "direction": "outbound", "duration": 65, "notes": "Confirmed" }),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(call["type"], "phone");
    assert_eq!(call["phone"], "+14155550100");
    assert_eq!(call["content"], "Confirmed");

    settled(&app, &in_app_id, "sent").await;
    app.mark_read(&customer, &in_app_id).await;
    settled(&app, &in_app_id, "read").await;
    settled(&app, sms["id"].as_str().unwrap(), "sent").await;

    let listed = json_of(
        app.get("/api/communications?customer_id=cust-1", &staff)
            .await,
        200,
    )
    .await;
    let rows = listed["communications"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let by_type = |t: &str| rows.iter().find(|r| r["type"] == t).unwrap().clone();
    let row = by_type("inapp");
    for field in [
        "content",
        "message",
        "user_id",
        "timestamp",
        "read",
        "read_at",
        "read_by",
        "to",
        "subject",
        "integration",
        "external_id",
        "attachments",
        "created_at",
        "status",
        "delivered_at",
        "direction",
        "customer_id",
    ] {
        assert!(row.get(field).is_some(), "{field} is on the record: {row}");
    }
    assert_eq!(row["content"], "Crew arrives at 9");
    assert_eq!(row["message"], "Crew arrives at 9");
    assert_eq!(row["user_id"], "staff-1");
    assert_eq!(row["read"], true);
    assert_eq!(row["read_by"], "user-of-cust-1");
    assert_eq!(row["integration"], Value::Null);
    let row = by_type("sms");
    assert_eq!(row["to"], "+14155550100");
    assert_eq!(row["integration"], "ringcentral");
    assert!(row["external_id"].is_string(), "the provider's id: {row}");
    assert_eq!(row["read"], false);
    let row = by_type("phone");
    assert_eq!(row["phone"], "+14155550100");

    // Old words still filter; every answer speaks the original's.
    for (filter, wire) in [("in_app", "inapp"), ("call", "phone"), ("phone", "phone")] {
        let listed = json_of(
            app.get(&format!("/api/communications?type={filter}"), &staff)
                .await,
            200,
        )
        .await;
        let rows = listed["communications"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{filter}");
        assert_eq!(rows[0]["type"], wire);
    }
    let refused = json_of(app.get("/api/communications?type=fax", &staff).await, 400).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("inapp, sms, email or phone")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_parts_come_in_any_order_and_a_refused_file_leaves_nothing() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let customer = app.customer_token("cust-1");

    for (token, file_first) in [(&staff, true), (&staff, false), (&customer, true)] {
        let body = json_of(
            app.upload_file(token, "cust-1", jpeg(), "site.jpg", file_first)
                .await,
            202,
        )
        .await;
        assert_eq!(body["files"][0]["status"], "processing");
    }
    assert_eq!(app.count("file_attachments").await, 3);
    // Processed (thumbnails made, duplicate copies removed): the store is at rest.
    app.assert_no_jobs_left().await;

    // A customer naming another's conversation after the file: refused, the staged
    // bytes removed, nothing recorded.
    let stored_before = stored_objects(&app);
    let response = app
        .upload_file(&customer, "cust-2", jpeg(), "other.jpg", true)
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(app.count("file_attachments").await, 3);
    assert_eq!(stored_objects(&app), stored_before);
    // A crew member cannot upload at all.
    let crew = app.token("crew-1", Role::Crew, None);
    let response = app
        .upload_file(&crew, "cust-1", jpeg(), "x.jpg", true)
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(stored_objects(&app), stored_before);
}

/// Objects in this test's disk store (uploads and thumbnails, staged or not).
fn stored_objects(app: &TestApp) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { count(&path) } else { 1 }
                })
                .sum()
        })
    }
    count(&app.settings.storage.upload_dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_may_be_files_alone_but_never_empty() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let uploaded = json_of(
        app.upload_file(&staff, "cust-1", jpeg(), "roof.jpg", false)
            .await,
        202,
    )
    .await;
    let file_id = uploaded["files"][0]["file_id"].as_str().unwrap().to_owned();

    for body in [
        json!({ "customer_id": "cust-1", "attachments": [file_id] }),
        json!({ "customer_id": "cust-1", "message": "", "attachments": [file_id] }),
        json!({ "customer_id": "cust-1", "message": "\u{200B}", "attachments": [file_id] }),
    ] {
        let sent = json_of(
            app.post_json("/api/messages/send", &staff, &body).await,
            202,
        )
        .await;
        assert_eq!(sent["message"], "", "{body}");
        assert_eq!(sent["attachments"][0]["file_id"], file_id.as_str());
    }
    for (body, names) in [
        (json!({ "customer_id": "cust-1" }), "message"),
        (json!({ "customer_id": "cust-1", "message": "" }), "message"),
        (
            json!({ "customer_id": "cust-1", "message": "\u{200B}\u{FEFF}\u{2060}" }),
            "message",
        ),
        (
            json!({ "customer_id": "cust-1", "message": " \n\t" }),
            "message",
        ),
    ] {
        let refused = json_of(
            app.post_json("/api/messages/send", &staff, &body).await,
            422,
        )
        .await;
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains(names),
            "{body}: {refused}"
        );
    }
    assert_eq!(app.count("communications").await, 3);
}
