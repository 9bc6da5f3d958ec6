//! The job runtime's failure paths: transient failures retried through the delay
//! tiers, permanent ones and exhausted attempts dead with the reason, panics contained.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use commcenter_shared::ledger::jobs::{self, NewJob, payloads};
use commcenter_tests::{TestApp, TestOptions, spawn_app_with};
use commcenter_workers::{AnyHandler, Handler, JobContext, JobError, handlers};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::WAIT;

/// Fails transiently `failures` times per job, then succeeds (and writes a marker row
/// so the test can count effects).
struct Flaky {
    failures: u32,
    retry_after: Option<Duration>,
    seen: Arc<Mutex<HashMap<Uuid, u32>>>,
}

#[async_trait]
impl AnyHandler for Flaky {
    fn kind(&self) -> &'static str {
        "test.flaky"
    }

    async fn run(&self, conn: &mut PgConnection, job: &JobContext) -> Result<(), JobError> {
        let tries = {
            let mut seen = self.seen.lock().unwrap();
            let tries = seen.entry(job.id).or_default();
            *tries += 1;
            *tries
        };
        if tries <= self.failures {
            return Err(JobError::Transient {
                message: format!("flaky failure {tries}"),
                retry_after: self.retry_after,
            });
        }
        sqlx::query("INSERT INTO event_outbox (payload) VALUES ('{\"marker\": true}')")
            .execute(conn)
            .await?;
        Ok(())
    }
}

pub async fn enqueue(app: &TestApp, kind: &'static str, payload: Value) -> String {
    let mut tx = app.pool.begin().await.unwrap();
    let id = jobs::enqueue(
        &mut tx,
        NewJob::untyped(kind, &payload),
        app.settings.jobs.max_attempts,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_transient_failures_then_success_leave_three_attempts() {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let flaky = Flaky {
        failures: 2,
        retry_after: None,
        seen: seen.clone(),
    };
    let app = spawn_app_with(TestOptions::with_handler(flaky)).await;
    let job_id = enqueue(&app, "test.flaky", json!({})).await;

    let job = app.wait_for_job_state(&job_id, "succeeded").await;
    assert_eq!(job["attempts"], 3);
    assert_eq!(
        job["last_error_class"], "transient",
        "the last failure stays on record"
    );
    let attempts = app.attempts(&job_id).await;
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["transient", "transient", "succeeded"]);
    assert_eq!(attempts[0]["error"], "flaky failure 1");
    assert_eq!(attempts[0]["error_class"], "transient");
    // The waits came from the delay tiers, growing.
    let waits: Vec<i64> = attempts[..2]
        .iter()
        .map(|a| a["retry_in_ms"].as_i64().unwrap())
        .collect();
    assert!(
        waits.iter().all(|w| [100, 200, 400, 1000].contains(w)),
        "{waits:?}"
    );
    assert_eq!(seen.lock().unwrap()[&job_id.parse::<Uuid>().unwrap()], 3);
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured() {
    let flaky = Flaky {
        failures: 1,
        retry_after: Some(Duration::from_millis(300)),
        seen: Default::default(),
    };
    let app = spawn_app_with(TestOptions::with_handler(flaky)).await;
    let job_id = enqueue(&app, "test.flaky", json!({})).await;
    app.wait_for_job_state(&job_id, "succeeded").await;
    let attempts = app.attempts(&job_id).await;
    assert_eq!(
        attempts[0]["retry_in_ms"], 400,
        "the shortest tier not shorter than Retry-After"
    );
    let first_end =
        chrono::DateTime::parse_from_rfc3339(attempts[0]["finished_at"].as_str().unwrap()).unwrap();
    let second_start =
        chrono::DateTime::parse_from_rfc3339(attempts[1]["started_at"].as_str().unwrap()).unwrap();
    assert!(
        second_start - first_end >= chrono::Duration::milliseconds(300),
        "{first_end} → {second_start}"
    );
}

/// Delivery that fails the way a provider refusal would, for in-app messages.
struct RefusingDelivery {
    error: JobError,
}

#[async_trait]
impl Handler<payloads::DeliverMessage> for RefusingDelivery {
    async fn run(
        &self,
        _conn: &mut PgConnection,
        _payload: &payloads::DeliverMessage,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        Err(self.error.clone())
    }
    async fn on_dead(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::DeliverMessage,
        job: &JobContext,
        reason: &str,
    ) -> anyhow::Result<()> {
        handlers::messages::DeliverMessageHandler
            .on_dead(conn, payload, job, reason)
            .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_failure_is_dead_at_once_and_the_message_shows_failed() {
    let refusing = RefusingDelivery {
        error: JobError::permanent("recipient refuses in-app messages"),
    };
    let app = spawn_app_with(TestOptions::with_typed(refusing)).await;
    let mut staff_ws = app.ws("staff-1", &app.staff_token()).await;
    let sent = app.send_job_ok(&app.staff_token(), "cust-1", "hello").await;
    let job_id = sent["job_id"].as_str().unwrap();

    let job = app.wait_for_job_state(job_id, "dead").await;
    assert_eq!(job["attempts"], 1, "no retry for a permanent failure");
    assert_eq!(job["last_error_class"], "permanent");
    assert_eq!(job["last_error"], "recipient refuses in-app messages");
    let id = sent["id"].as_str().unwrap();
    assert_eq!(app.communication_status(id).await, "failed");
    let status: Value = app
        .get(
            &format!("/api/communications/{id}/status"),
            &app.staff_token(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["failure_reason"],
        "recipient refuses in-app messages"
    );
    let frame = staff_ws
        .next_of_type("communication.status", WAIT)
        .await
        .expect("the sender hears of it");
    assert_eq!(frame["status"], "failed");
    assert_eq!(frame["reason"], "recipient refuses in-app messages");
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_attempts_are_dead_with_the_last_error() {
    let refusing = RefusingDelivery {
        error: JobError::transient("connection reset"),
    };
    let app = spawn_app_with(TestOptions {
        handlers: vec![commcenter_workers::job::erase(refusing)],
        max_attempts: 3,
        ..Default::default()
    })
    .await;
    let sent = app.send_job_ok(&app.staff_token(), "cust-1", "hello").await;
    let job_id = sent["job_id"].as_str().unwrap();
    let job = app.wait_for_job_state(job_id, "dead").await;
    assert_eq!(job["attempts"], 3);
    assert_eq!(job["last_error_class"], "exhausted");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("connection reset")
    );
    assert!(job["first_failed_at"].is_string() && job["last_failed_at"].is_string());
    assert_eq!(app.attempts(job_id).await.len(), 3);
    assert_eq!(
        app.communication_status(sent["id"].as_str().unwrap()).await,
        "failed"
    );
}

struct PanicsOnce {
    panicked: Arc<Mutex<bool>>,
}

#[async_trait]
impl AnyHandler for PanicsOnce {
    fn kind(&self) -> &'static str {
        "test.panics"
    }
    async fn run(&self, _conn: &mut PgConnection, _job: &JobContext) -> Result<(), JobError> {
        let first = !std::mem::replace(&mut *self.panicked.lock().unwrap(), true);
        assert!(!first, "handler bug");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_handler_fails_its_attempt_not_the_worker() {
    let panics = PanicsOnce {
        panicked: Default::default(),
    };
    let app = spawn_app_with(TestOptions::with_handler(panics)).await;
    let job_id = enqueue(&app, "test.panics", json!({})).await;
    app.wait_for_job_state(&job_id, "succeeded").await;
    let attempts = app.attempts(&job_id).await;
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("panicked: handler bug"),
        "{attempts:?}"
    );
    // The worker is still consuming.
    let sent = app
        .send_job_ok(&app.staff_token(), "cust-1", "still here")
        .await;
    app.wait_for_status(sent["id"].as_str().unwrap(), "sent")
        .await;
}

struct Hangs;

#[async_trait]
impl AnyHandler for Hangs {
    fn kind(&self) -> &'static str {
        "test.hangs"
    }
    async fn run(&self, _conn: &mut PgConnection, _job: &JobContext) -> Result<(), JobError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_handler_times_out_and_is_retried_then_dead() {
    let app = spawn_app_with(TestOptions {
        handlers: vec![std::sync::Arc::new(Hangs)],
        job_timeout: Duration::from_millis(200),
        max_attempts: 2,
        ..Default::default()
    })
    .await;
    let job_id = enqueue(&app, "test.hangs", json!({})).await;
    let job = app.wait_for_job_state(&job_id, "dead").await;
    assert_eq!(job["last_error_class"], "exhausted");
    assert!(job["last_error"].as_str().unwrap().contains("timed out"));
}
