//! `POST /api/messages/send`: accepted and announced over WebSocket; without files its
//! own commit delivers it (no job), with files a worker does once they are ready.

use commcenter_tests::spawn_app;
use serde_json::json;

use crate::WAIT;

#[tokio::test(flavor = "multi_thread")]
async fn a_send_is_accepted_delivered_and_announced_to_the_right_people() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let customer = app.customer_token("cust-1");
    let other_customer = app.customer_token("cust-2");
    let mut staff_ws = app.ws("staff-1", &staff).await;
    let mut customer_ws = app.ws("user-of-cust-1", &customer).await;
    let mut other_ws = app.ws("user-of-cust-2", &other_customer).await;

    let response = app
        .send_message(&staff, "cust-1", "Your crew arrives at 9")
        .await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "sent", "its commit delivered it");
    assert!(body["sent_at"].is_string(), "{body}");
    assert!(
        body["job_id"].is_null(),
        "nothing is left for a job: {body}"
    );
    assert_eq!(body["type"], "inapp");
    let id = body["id"].as_str().unwrap().to_owned();

    for ws in [&mut customer_ws, &mut staff_ws] {
        let frame = ws
            .next_of_type("message.new", WAIT)
            .await
            .expect("message.new frame");
        assert_eq!(frame["communication_id"], id.as_str());
        assert_eq!(frame["customer_id"], "cust-1");
        assert_eq!(frame["message"], "Your crew arrives at 9");
        assert_eq!(frame["status"], "sent");
    }
    // Staff coming online is news to every customer (presence); nothing else is.
    let seen: Vec<_> = other_ws
        .drain(std::time::Duration::from_millis(500))
        .await
        .into_iter()
        .filter(|frame| frame["type"] != "presence")
        .collect();
    assert!(
        seen.is_empty(),
        "another customer must not see cust-1's messages: {seen:?}"
    );
    app.wait_for_status(&id, "sent").await;
    assert_eq!(app.count("jobs").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_with_files_is_queued_until_its_job_delivers_it() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let mut staff_ws = app.ws("staff-1", &staff).await;
    let body = app.send_job_ok(&staff, "cust-1", "the invoice").await;
    assert_eq!(body["status"], "queued");
    assert!(body["job_id"].is_string(), "{body}");
    let frame = staff_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("message.new frame");
    assert_eq!(frame["communication_id"], body["id"]);
    assert_eq!(frame["status"], "sent");
    assert_eq!(frame["attachments"].as_array().map(Vec::len), Some(1));
    app.wait_for_job_state(body["job_id"].as_str().unwrap(), "succeeded")
        .await;
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_sends_into_their_own_conversation_as_inbound() {
    let app = spawn_app().await;
    let customer = app.customer_token("cust-7");
    let mut staff_ws = app.ws("staff-1", &app.staff_token()).await;
    let response = app
        .send_message(&customer, "cust-7", "Can you come earlier?")
        .await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["direction"], "inbound");
    let frame = staff_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("staff sees it");
    assert_eq!(frame["sender_role"], "customer");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_returns_the_first_answer_and_creates_nothing_new() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let send = |key: &'static str, text: &'static str| {
        app.client
            .post(app.url("/api/messages/send"))
            .bearer_auth(&staff)
            .header("Idempotency-Key", key)
            .json(&json!({ "customer_id": "cust-1", "message": text }))
            .send()
    };
    let first = send("key-1", "hello").await.unwrap();
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = send("key-1", "hello").await.unwrap();
    assert_eq!(again.status(), 202);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first, again, "a retried POST returns the first answer");
    assert_eq!(app.count("communications").await, 1);
    assert_eq!(app.count_events("message.new").await, 1);

    // The same key with another request is refused, and writes nothing.
    let conflict = send("key-1", "something else").await.unwrap();
    assert_eq!(conflict.status(), 409);
    let error: serde_json::Value = conflict.json().await.unwrap();
    assert_eq!(error["error"]["code"], "conflict");
    assert_eq!(app.count("communications").await, 1);

    // Another key is another request.
    assert_eq!(send("key-2", "hello").await.unwrap().status(), 202);
    assert_eq!(app.count("communications").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_retries_with_one_key_create_one_message() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let sends = (0..8).map(|_| {
        app.client
            .post(app.url("/api/messages/send"))
            .bearer_auth(&staff)
            .header("Idempotency-Key", "same-key")
            .json(&json!({ "customer_id": "cust-1", "message": "once" }))
            .send()
    });
    let responses = futures_util::future::join_all(sends).await;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 202);
        let body: serde_json::Value = response.json().await.unwrap();
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        ids.len(),
        1,
        "every retry answers with the same communication"
    );
    assert_eq!(app.count("communications").await, 1);
    assert_eq!(app.count_events("message.new").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attachment_that_does_not_exist_is_refused() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            "/api/messages/send",
            &app.staff_token(),
            &json!({ "customer_id": "cust-1", "message": "see file", "attachments": [uuid::Uuid::new_v4()] }),
        )
        .await;
    assert_eq!(response.status(), 422);
    let error: serde_json::Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("attachments")
    );
    assert_eq!(app.count("communications").await, 0);
    assert_eq!(app.count("jobs").await, 0);
}
