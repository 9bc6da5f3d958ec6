//! The test harness: a whole Commcenter (api, relay, notifier, workers) per test,
//! against the real PostgreSQL and RabbitMQ, isolated by a fresh database and a queue
//! prefix of its own, both removed when the test ends.
//!
//! - [`TestApp`]: spawn it, call endpoints through its methods, watch its ledger.
//! - [`TcpProxy`]: a TCP proxy in front of RabbitMQ or PostgreSQL that a test can cut
//!   and restore, to play an outage without stopping the servers other tests share.
//! - [`ScratchPostgres`]: a PostgreSQL server of the test's own, to stop for real.
//! - [`WsClient`]: a WebSocket client that reads JSON frames with a timeout.

mod app;
mod proxy;
mod scratch_postgres;
mod ws;

pub use app::{
    ApiInstance, TestApp, TestOptions, admin_database_url, broker_addr, broker_url,
    remove_database_and_topology, spawn_app, spawn_app_with,
};
pub use proxy::TcpProxy;
pub use scratch_postgres::ScratchPostgres;
pub use ws::WsClient;

/// Waits until `check` returns `Some`, polling; panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The unique part of one test's database (`cc_test_<id>`), queue prefix
/// (`cc-test-<id>`) or scratch cluster: 32 lowercase hex digits. `scripts/test.sh` sets
/// `CC_TEST_RUN` (8 of them) and every id of that run starts with it, so what a killed
/// run leaves behind is removed by that run alone, never from under another run on the
/// same machine.
pub fn unique_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    match std::env::var("CC_TEST_RUN") {
        Ok(run)
            if run.len() == 8 && run.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            format!("{run}{}", &random[8..])
        }
        _ => random,
    }
}

/// The answer's JSON body, after asserting its status (the body is in the message when
/// the status is not the one expected).
pub async fn json_of(response: reqwest::Response, status: u16) -> serde_json::Value {
    let got = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    assert_eq!(got, status, "{body}");
    body
}
