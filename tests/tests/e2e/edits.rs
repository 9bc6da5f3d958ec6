//! Editing and deleting in-app messages (`PATCH|DELETE /api/communications/{id}`) and
//! deleting unattached files (`DELETE /api/communications/files/{file_id}`).

use std::time::Duration;

use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, spawn_app};
use serde_json::{Value, json};

use crate::WAIT;

async fn answer(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    body
}

async fn audit(app: &TestApp, id: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT action, previous_message, by_user FROM communication_edits
         WHERE communication_id = $1::uuid ORDER BY id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sender_edits_their_message_everyone_hears_and_the_old_text_is_kept() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let customer = app.customer_token("cust-1");
    let mut customer_ws = app.ws("user-of-cust-1", &customer).await;
    let sent = app.send_ok(&staff, "cust-1", "Crew arrives at 9").await;
    let id = sent["id"].as_str().unwrap().to_owned();
    customer_ws.next_of_type("message.new", WAIT).await.unwrap();

    let edited = answer(
        app.edit_message(&staff, &id, "Crew arrives at 10").await,
        200,
    )
    .await;
    assert_eq!(edited["message"], "Crew arrives at 10");
    assert_eq!(edited["content"], "Crew arrives at 10");
    assert!(edited["edited_at"].is_string());
    let frame = customer_ws
        .next_of_type("message.updated", WAIT)
        .await
        .unwrap();
    assert_eq!(frame["communication_id"], id.as_str());
    assert_eq!(frame["message"], "Crew arrives at 10");
    assert_eq!(
        audit(&app, &id).await,
        [("edit".into(), "Crew arrives at 9".into(), "staff-1".into())]
    );

    // Only its sender edits it: not the customer, not another staff member.
    answer(app.edit_message(&customer, &id, "hacked").await, 403).await;
    let other_staff = app.token("staff-2", Role::Staff, None);
    answer(app.edit_message(&other_staff, &id, "hmm").await, 403).await;
    // A crew member sees only their crew's projects: to them this message is unknown.
    let crew = app.token("crew-1", Role::Crew, None);
    answer(app.edit_message(&crew, &id, "hmm").await, 404).await;
    answer(app.delete_message(&crew, &id).await, 404).await;
    let refused = answer(app.edit_message(&staff, &id, "\u{200B}").await, 422).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("message")
    );
    let other = app.customer_token("cust-2");
    answer(app.edit_message(&other, &id, "x").await, 404).await;
    answer(app.edit_message(&staff, "not-a-uuid", "x").await, 400).await;
    assert_eq!(audit(&app, &id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_message_is_a_tombstone_everywhere() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let customer = app.customer_token("cust-1");
    let mut staff_ws = app.ws("staff-1", &staff).await;
    let sent = app
        .send_ok(&customer, "cust-1", "my secret gate code is 4711")
        .await;
    let id = sent["id"].as_str().unwrap().to_owned();
    staff_ws.next_of_type("message.new", WAIT).await.unwrap();

    // Staff may delete a customer's message (moderation); the sender may too.
    let deleted = answer(app.delete_message(&staff, &id).await, 200).await;
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["message"], Value::Null);
    assert_eq!(deleted["content"], Value::Null);
    assert_eq!(deleted["attachments"], json!([]));
    let frame = staff_ws
        .next_of_type("message.deleted", WAIT)
        .await
        .unwrap();
    assert_eq!(frame["communication_id"], id.as_str());

    let listed: Value = app
        .get("/api/communications?customer_id=cust-1", &customer)
        .await
        .json()
        .await
        .unwrap();
    let row = &listed["communications"][0];
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["deleted"], true);
    assert_eq!(row["message"], Value::Null);
    let found: Value = app
        .search(&staff, &json!({ "query": "gate code" }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        found["communications"],
        json!([]),
        "a deleted message is found by nothing"
    );
    assert_eq!(
        audit(&app, &id).await,
        [(
            "delete".into(),
            "my secret gate code is 4711".into(),
            "staff-1".into()
        )]
    );
    // Again: the same tombstone, nothing new; no edit of a deleted message.
    answer(app.delete_message(&customer, &id).await, 200).await;
    assert_eq!(audit(&app, &id).await.len(), 1);
    answer(app.edit_message(&customer, &id, "x").await, 409).await;

    // A customer may not delete staff's message.
    let from_staff = app.send_ok(&staff, "cust-1", "hello").await;
    answer(
        app.delete_message(&customer, from_staff["id"].as_str().unwrap())
            .await,
        403,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sms_email_and_calls_cannot_be_changed() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let sms = answer(
        app.post_json(
            "/api/integrations/ringcentral/sms",
            &staff,
            &json!({ "customer_id": "cust-1", "to": "+14155550100", "message": "On our way" }),
        )
        .await,
        202,
    )
    .await;
    let id = sms["id"].as_str().unwrap();
    let refused = answer(app.edit_message(&staff, id, "x").await, 409).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SMS")
    );
    let refused = answer(app.delete_message(&staff, id).await, 409).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only in-app")
    );
    assert_eq!(app.count("communication_edits").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unattached_file_is_deleted_with_its_bytes_and_an_attached_one_is_kept() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let customer = app.customer_token("cust-1");
    let pdf = |tag: &str| format!("%PDF-1.4\n%\u{e2}{tag}\n").into_bytes();
    let upload = |token: String, bytes: Vec<u8>| {
        let app = &app;
        async move {
            let body = answer(
                app.upload_file(&token, "cust-1", bytes, "plan.pdf", false)
                    .await,
                202,
            )
            .await;
            body["files"][0]["file_id"].as_str().unwrap().to_owned()
        }
    };
    let loose = upload(customer.clone(), pdf("loose")).await;
    let attached = upload(staff.clone(), pdf("attached")).await;
    let by_staff = upload(staff.clone(), pdf("staff")).await;
    for id in [&loose, &attached, &by_staff] {
        wait_ready(&app, id).await;
    }
    answer(
        app.post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-1", "message": "plan", "attachments": [attached] }),
        )
        .await,
        202,
    )
    .await;

    let refused = answer(
        app.delete(&format!("/api/communications/files/{attached}"), &staff)
            .await,
        409,
    )
    .await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("attached")
    );
    answer(
        app.delete(&format!("/api/communications/files/{by_staff}"), &customer)
            .await,
        403,
    )
    .await;
    let other = app.customer_token("cust-2");
    answer(
        app.delete(&format!("/api/communications/files/{loose}"), &other)
            .await,
        404,
    )
    .await;

    let key: String = sqlx::query_scalar(
        "SELECT b.storage_key FROM file_attachments f JOIN blobs b ON b.sha256 = f.sha256 WHERE f.id = $1::uuid",
    )
    .bind(&loose)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let path = app.settings.storage.upload_dir.join(&key);
    assert!(path.exists(), "{path:?}");
    answer(
        app.delete(&format!("/api/communications/files/{loose}"), &customer)
            .await,
        200,
    )
    .await;
    answer(
        app.get(&format!("/api/communications/files/{loose}"), &customer)
            .await,
        404,
    )
    .await;
    for _ in 0..200 {
        if !path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!path.exists(), "the bytes go when nothing refers to them");
    answer(
        app.delete(&format!("/api/communications/files/{loose}"), &customer)
            .await,
        404,
    )
    .await;
}

async fn wait_ready(app: &TestApp, id: &str) {
    for _ in 0..200 {
        let status: String =
            sqlx::query_scalar("SELECT status FROM file_attachments WHERE id = $1::uuid")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if status == "ready" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("file {id} never became ready");
}
