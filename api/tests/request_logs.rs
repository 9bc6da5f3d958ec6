//! JSON logs carry the request id: every line a request causes has the `request` span's
//! `request_id` (the caller's `x-request-id`, or a new UUID) and route template, and the
//! answer carries the same id back.

// In a test, a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex, atomic::AtomicBool};

use axum::{body::Body, http::Request};
use serde_json::Value;
use tokio::sync::Notify;
use tower::ServiceExt;
use tracing_subscriber::{fmt::MakeWriter, prelude::*};

use commcenter_api::{AppState, metrics::ApiMetrics, notifier::Hub, presence::Presence, startup};
use commcenter_shared::{
    platform::blob::BlobStore, platform::settings::Settings, platform::telemetry,
};

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Captured {
    type Writer = Self;
    fn make_writer(&'w self) -> Self {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is JSON"))
            .collect()
    }
}

/// The api's router over a state whose database is never reached (`/healthz` and
/// unknown paths need none).
fn state() -> AppState {
    let mut settings = Settings::from_env().unwrap();
    settings.storage.upload_dir =
        std::env::temp_dir().join(format!("cc-request-logs-{}", uuid::Uuid::new_v4()));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy(settings.database.url.expose())
        .unwrap();
    AppState {
        metrics: Arc::new(ApiMetrics::new(
            pool.clone(),
            settings.broker.clone(),
            startup::topology(&settings),
        )),
        presence: Arc::new(Presence::new(
            pool.clone(),
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(30),
            10,
            Arc::new(Notify::new()),
        )),
        ephemeral: tokio::sync::mpsc::channel(1).0,
        sends: commcenter_api::group_commit::GroupCommit::start(pool.clone()),
        vapid: Arc::new(
            commcenter_shared::domain::push::VapidKey::parse(
                "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE",
            )
            .unwrap(),
        ),
        health: Arc::new(commcenter_api::health::Health::new(pool.clone())),
        pool,
        hub: Arc::new(Hub::new(8)),
        blobs: Arc::new(BlobStore::from_settings(&settings.storage).unwrap()),
        outbox: Arc::new(Notify::new()),
        broker_up: Arc::new(AtomicBool::new(false)),
        limits: Arc::new(commcenter_api::limits::Limits::new(&Default::default())),
        settings: Arc::new(settings),
    }
}

/// The request span's fields on every line logged while the request ran.
fn request_spans(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter_map(|line| {
            line["spans"]
                .as_array()?
                .iter()
                .find(|span| span["name"] == "request")
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn every_line_of_a_request_carries_its_id_and_the_answer_echoes_it() {
    let captured = Captured::default();
    let _logs = tracing_subscriber::registry()
        .with(telemetry::json_layer(captured.clone()))
        .set_default();
    let state = state();
    let upload_dir = state.settings.storage.upload_dir.clone();
    let router = startup::router(state);

    let given = router
        .clone()
        .oneshot(
            Request::get("/healthz")
                .header("x-request-id", "portal-req-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(given.status(), 200);
    assert_eq!(given.headers()["x-request-id"], "portal-req-42");

    let minted = router
        .oneshot(Request::get("/no/such/thing").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(minted.status(), 404);
    let minted_id = minted.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        uuid::Uuid::parse_str(&minted_id).is_ok(),
        "a request without an id gets a UUID, not {minted_id:?}"
    );
    std::fs::remove_dir_all(upload_dir).ok();

    let lines = captured.lines();
    let spans = request_spans(&lines);
    let of = |id: &str| spans.iter().filter(|s| s["request_id"] == id).count();
    assert!(of("portal-req-42") >= 1, "{lines:#?}");
    assert!(of(&minted_id) >= 1, "{lines:#?}");
    assert_eq!(
        of("portal-req-42") + of(&minted_id),
        spans.len(),
        "{lines:#?}"
    );
    let healthz = spans
        .iter()
        .find(|s| s["request_id"] == "portal-req-42")
        .unwrap();
    assert_eq!(healthz["route"], "/healthz");
    assert_eq!(healthz["method"], "GET");
    let unknown = spans
        .iter()
        .find(|s| s["request_id"] == minted_id.as_str())
        .unwrap();
    assert_eq!(
        unknown["route"], "unmatched",
        "raw paths never become fields"
    );
    // The line's own span is the request's too (the `span` key).
    assert!(
        lines
            .iter()
            .any(|line| line["span"]["request_id"] == "portal-req-42"),
        "{lines:#?}"
    );
}
