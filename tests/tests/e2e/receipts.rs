//! Receipts go through the queue; statuses only move forward.

use commcenter_tests::{TestApp, spawn_app};
use serde_json::{Value, json};

use crate::WAIT;

async fn sent_message(app: &TestApp) -> String {
    let sent = app.send_ok(&app.staff_token(), "cust-1", "hello").await;
    let id = sent["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "sent").await;
    id
}

async fn mark(app: &TestApp, token: &str, id: &str, receipt: &str) -> reqwest::Response {
    app.post_json(
        &format!("/api/communications/{id}/{receipt}"),
        token,
        &json!({}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn delivered_then_read_reach_the_sender_and_show_in_status() {
    let app = spawn_app().await;
    let id = sent_message(&app).await;
    let customer = app.customer_token("cust-1");
    let mut staff_ws = app.ws("staff-1", &app.staff_token()).await;

    let response = mark(&app, &customer, &id, "mark-delivered").await;
    assert_eq!(response.status(), 202);
    let frame = staff_ws
        .next_of_type("communication.status", WAIT)
        .await
        .expect("delivered event");
    assert_eq!(frame["status"], "delivered");
    assert_eq!(frame["previous"], "sent");
    assert_eq!(frame["communication_id"], id.as_str());

    assert_eq!(mark(&app, &customer, &id, "mark-read").await.status(), 202);
    let frame = staff_ws
        .next_of_type("communication.status", WAIT)
        .await
        .expect("read event");
    assert_eq!(frame["status"], "read");

    let status: Value = app
        .get(&format!("/api/communications/{id}/status"), &customer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "read");
    assert!(
        status["sent_at"].is_string()
            && status["delivered_at"].is_string()
            && status["read_at"].is_string()
    );
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_delivered_never_undoes_read() {
    let app = spawn_app().await;
    let id = sent_message(&app).await;
    let customer = app.customer_token("cust-1");
    let mut staff_ws = app.ws("staff-1", &app.staff_token()).await;
    assert_eq!(mark(&app, &customer, &id, "mark-read").await.status(), 202);
    let read = staff_ws
        .next_of_type("communication.status", WAIT)
        .await
        .expect("read event");
    assert_eq!(read["status"], "read");

    assert_eq!(
        mark(&app, &customer, &id, "mark-delivered").await.status(),
        202
    );
    app.assert_no_jobs_left().await;
    assert_eq!(app.communication_status(&id).await, "read");
    let frames = staff_ws.drain(std::time::Duration::from_millis(300)).await;
    assert!(
        frames.iter().all(|f| f["type"] != "communication.status"),
        "a late receipt announces nothing: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_receiving_party_posts_receipts() {
    let app = spawn_app().await;
    let id = sent_message(&app).await;
    // Staff sent it: staff cannot mark it read for the customer.
    let response = mark(&app, &app.staff_token(), &id, "mark-read").await;
    assert_eq!(response.status(), 403);
    assert_eq!(app.count("jobs WHERE kind = 'receipt.apply'").await, 0);
    // Not a UUID, and unknown ids.
    assert_eq!(
        mark(&app, &app.customer_token("cust-1"), "nope", "mark-read")
            .await
            .status(),
        400
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        mark(&app, &app.customer_token("cust-1"), &unknown, "mark-read")
            .await
            .status(),
        404
    );
}
