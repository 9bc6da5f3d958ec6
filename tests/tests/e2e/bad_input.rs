//! Bad input gets a clear 4xx with `{"error": {"code", "message"}}` naming the problem,
//! and leaves nothing written.

use commcenter_tests::{TestApp, spawn_app};
use serde_json::{Value, json};

async fn post_raw(app: &TestApp, body: &str, content_type: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/messages/send"))
        .bearer_auth(app.staff_token())
        .body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

async fn assert_error(response: reqwest::Response, status: u16, code: &str, mentions: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(mentions),
        "{message:?} should mention {mentions:?}"
    );
}

async fn assert_nothing_written(app: &TestApp) {
    assert_eq!(app.count("communications").await, 0);
    assert_eq!(app.count("jobs").await, 0);
    assert_eq!(app.count("idempotency_keys").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_missing_wrong_typed_and_oversized_bodies_are_refused() {
    let app = spawn_app().await;
    let json = Some("application/json");

    assert_error(
        post_raw(&app, "{\"customer_id\": ", json).await,
        400,
        "invalid_json",
        "EOF",
    )
    .await;
    assert_error(
        post_raw(&app, r#"{"message": "hi"}"#, json).await,
        422,
        "invalid_field",
        "customer_id",
    )
    .await;
    assert_error(
        post_raw(&app, r#"{"customer_id": "c1"}"#, json).await,
        422,
        "invalid_field",
        "message",
    )
    .await;
    assert_error(
        post_raw(&app, r#"{"customer_id": 42, "message": "hi"}"#, json).await,
        422,
        "invalid_field",
        "customer_id",
    )
    .await;
    assert_error(
        post_raw(&app, r#"{"customer_id": "c1", "message": ["hi"]}"#, json).await,
        422,
        "invalid_field",
        "message",
    )
    .await;
    assert_error(
        post_raw(
            &app,
            r#"{"customer_id": "c1", "message": "hi", "sneaky": 1}"#,
            json,
        )
        .await,
        422,
        "invalid_field",
        "sneaky",
    )
    .await;
    assert_error(
        post_raw(&app, r#"{"customer_id": "../etc", "message": "hi"}"#, json).await,
        422,
        "invalid_field",
        "customer_id",
    )
    .await;
    assert_error(
        post_raw(&app, r#"{"customer_id": "c1", "message": "hi"}"#, None).await,
        415,
        "unsupported_media_type",
        "application/json",
    )
    .await;
    let huge = json!({ "customer_id": "c1", "message": "x".repeat(100 * 1024) }).to_string();
    assert_error(
        post_raw(&app, &huge, json).await,
        413,
        "payload_too_large",
        "MAX_BODY_BYTES",
    )
    .await;
    assert_nothing_written(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_blank_and_over_long_messages_are_refused() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    for (message, mentions) in [
        (String::new(), "empty"),
        ("   \n\t".to_owned(), "empty"),
        ("é".repeat(10_001), "at most 10000"),
    ] {
        let response = app
            .post_json(
                "/api/messages/send",
                &staff,
                &json!({ "customer_id": "c1", "message": message }),
            )
            .await;
        assert_error(response, 422, "invalid_field", mentions).await;
    }
    // The longest allowed message is accepted (10,000 two-byte characters fit the body limit).
    let response = app
        .post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "c1", "message": "é".repeat(10_000) }),
        )
        .await;
    assert_eq!(response.status(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_idempotency_key_is_refused_before_anything_is_written() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/messages/send"))
        .bearer_auth(app.staff_token())
        .header("Idempotency-Key", "has spaces in it")
        .json(&json!({ "customer_id": "c1", "message": "hi" }))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_idempotency_key", "Idempotency-Key").await;
    assert_nothing_written(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_paths_and_queries_name_the_problem() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    assert_error(
        app.get("/api/communications/not-a-uuid/status", &staff)
            .await,
        400,
        "invalid_path",
        "id",
    )
    .await;
    assert_error(
        app.get("/api/communications?limit=0", &staff).await,
        400,
        "invalid_query",
        "limit",
    )
    .await;
    assert_error(
        app.get("/api/communications?limit=abc", &staff).await,
        400,
        "invalid_query",
        "limit",
    )
    .await;
    assert_error(
        app.get("/api/communications?type=fax", &staff).await,
        400,
        "invalid_query",
        "type",
    )
    .await;
    assert_error(
        app.get("/api/communications?cursor=garbage", &staff).await,
        400,
        "invalid_query",
        "cursor",
    )
    .await;
    assert_error(
        app.get("/api/communications?colour=red", &staff).await,
        400,
        "invalid_query",
        "colour",
    )
    .await;
    assert_error(
        app.get("/api/nothing-here", &staff).await,
        404,
        "not_found",
        "endpoint",
    )
    .await;
    let missing = uuid::Uuid::new_v4();
    assert_error(
        app.get(&format!("/api/communications/{missing}/status"), &staff)
            .await,
        404,
        "not_found",
        &missing.to_string(),
    )
    .await;
}
