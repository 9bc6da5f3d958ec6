//! `/healthz` answers while the process lives; `/readyz` only with the database and
//! the broker reachable, and says which is missing.

use commcenter_tests::{TcpProxy, TestOptions, broker_addr, spawn_app, spawn_app_with};
use serde_json::Value;

use crate::WAIT;

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_answer_without_a_token() {
    let app = spawn_app().await;
    let alive = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["broker"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_names_the_broker_when_it_is_gone_and_recovers_with_it() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let app = spawn_app_with(TestOptions {
        api_amqp_url: Some(proxy.amqp_url()),
        ..Default::default()
    })
    .await;
    proxy.cut();
    let body: Value = commcenter_tests::eventually("readiness to fail", WAIT, || async {
        let response = app.client.get(app.url("/readyz")).send().await.ok()?;
        (response.status() == 503).then_some(response.json().await.ok()?)
    })
    .await;
    assert_eq!(body["broker"], "unreachable");
    assert_eq!(body["database"], "ok");
    // Alive all the same: the process is fine, only a dependency is missing.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    proxy.restore();
    commcenter_tests::eventually("readiness to return", WAIT, || async {
        let response = app.client.get(app.url("/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_is_told_at_once_with_503_and_retry_after() {
    let postgres = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let app = spawn_app_with(TestOptions {
        api_database_proxy: Some(postgres.addr),
        acquire_timeout: std::time::Duration::from_millis(1500),
        ..Default::default()
    })
    .await;
    let staff = app.staff_token();
    assert_eq!(
        app.get("/api/communications/conversations", &staff)
            .await
            .status(),
        200
    );

    postgres.cut();
    // The first request that needs the database, however it learns of the outage
    // (the background check or its own connection), answers 503 within 2 s.
    let started = std::time::Instant::now();
    let response = app.get("/api/communications/conversations", &staff).await;
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(
        took < std::time::Duration::from_secs(2),
        "503 took {took:?}"
    );
    assert_eq!(response.headers()["retry-after"], "5");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unavailable");

    // Readiness answers from what the background check knows: at once, every time.
    let body: Value = commcenter_tests::eventually("readiness to fail", WAIT, || async {
        let started = std::time::Instant::now();
        let response = app.client.get(app.url("/readyz")).send().await.ok()?;
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        (response.status() == 503).then_some(response.json().await.ok()?)
    })
    .await;
    assert_eq!(body["database"], "unreachable");
    // Known down: a write is refused at once, and nothing half-done is left.
    let started = std::time::Instant::now();
    let send = app
        .send_message(&staff, "cust-1", "While the database is down")
        .await;
    assert_eq!(send.status(), 503);
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    postgres.restore();
    commcenter_tests::eventually("readiness to return", WAIT, || async {
        let response = app.client.get(app.url("/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let response = app.send_message(&staff, "cust-1", "Back again").await;
    assert_eq!(response.status(), 202);
    let listed: Value = app
        .get("/api/communications?customer_id=cust-1", &staff)
        .await
        .json()
        .await
        .unwrap();
    let texts: Vec<_> = listed["communications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["Back again"], "the refused send left nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_method_gets_our_json_error_and_allow() {
    let app = spawn_app().await;
    let response = app
        .client
        .delete(app.url("/api/messages/send"))
        .bearer_auth(app.staff_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("POST"), "{allow}");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "method_not_allowed");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("DELETE") && message.contains("/api/messages/send"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_headers_get_our_json_431_before_the_token_is_looked_at() {
    let app = spawn_app().await;
    // 20 KiB of headers: over the 16 KiB default, far under hyper's own buffer.
    let mut request = app
        .client
        .get(app.url("/api/communications"))
        .bearer_auth(app.staff_token());
    for i in 0..20 {
        request = request.header(format!("x-filler-{i}"), "f".repeat(1024));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 431);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "headers_too_large");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("HTTP_MAX_HEADER_BYTES"), "{message}");
    // Just under the limit is served.
    let response = app
        .client
        .get(app.url("/api/communications"))
        .bearer_auth(app.staff_token())
        .header("x-filler", "f".repeat(12 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
