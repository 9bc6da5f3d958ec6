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
