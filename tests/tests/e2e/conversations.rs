//! Conversation status: set by staff through the queue, read by both parties.

use commcenter_shared::domain::Role;
use commcenter_tests::spawn_app;
use serde_json::{Value, json};

use crate::WAIT;

#[tokio::test(flavor = "multi_thread")]
async fn staff_close_a_conversation_and_the_customer_hears_of_it() {
    let app = spawn_app().await;
    let customer = app.customer_token("cust-1");
    let path = "/api/communications/conversation/cust-1/status";

    let before: Value = app.get(path, &customer).await.json().await.unwrap();
    assert_eq!(before["status"], "open");

    let mut customer_ws = app.ws("user-of-cust-1", &customer).await;
    let response = app
        .post_json(path, &app.staff_token(), &json!({ "status": "closed" }))
        .await;
    assert_eq!(response.status(), 202);
    let frame = customer_ws
        .next_of_type("conversation.status", WAIT)
        .await
        .expect("conversation event");
    assert_eq!(frame["status"], "closed");
    assert_eq!(frame["updated_by"], "staff-1");

    let after: Value = app.get(path, &customer).await.json().await.unwrap();
    assert_eq!(after["status"], "closed");
    assert_eq!(after["updated_by"], "staff-1");

    // Setting the same status again changes nothing and announces nothing.
    assert_eq!(
        app.post_json(path, &app.staff_token(), &json!({ "status": "closed" }))
            .await
            .status(),
        202
    );
    app.assert_no_jobs_left().await;
    let frames = customer_ws
        .drain(std::time::Duration::from_millis(300))
        .await;
    assert!(frames.is_empty(), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_statuses_and_callers_are_refused() {
    let app = spawn_app().await;
    let path = "/api/communications/conversation/cust-1/status";
    let staff = app.staff_token();
    let response = app
        .post_json(path, &staff, &json!({ "status": "deleted" }))
        .await;
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("open, closed or archived")
    );
    assert_eq!(app.post_json(path, &staff, &json!({})).await.status(), 422);
    assert_eq!(
        app.post_json(
            path,
            &app.customer_token("cust-1"),
            &json!({ "status": "archived" })
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        app.post_json(
            path,
            &app.token("crew-1", Role::Crew, None),
            &json!({ "status": "open" })
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        app.post_json(
            "/api/communications/conversation/bad%20id/status",
            &staff,
            &json!({ "status": "open" })
        )
        .await
        .status(),
        400
    );
    assert_eq!(app.count("jobs").await, 0);
}
