//! Jobs that run on a clock: the RingCentral call-log import, the Gmail mailbox sync,
//! the reminders of dispatches nobody acknowledged, the fallback of unread in-app messages
//! (`reach::send_due_fallbacks`), and the rescuer of jobs whose broker message was lost
//! (`ops::rescue_overdue`).
//!
//! Each worker process ticks. An import or a sync is enqueued only when none is open (pending,
//! queued, running or retrying), checked under a transaction-scoped advisory lock, so
//! several workers never stack imports. A dispatch's reminder is enqueued once: the
//! sweep marks the dispatch taken (`ack_checked_at`) in the transaction that enqueues
//! it, skipping rows another worker holds.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use commcenter_shared::ledger::jobs::{self, Job, NewJob, payloads};

/// Runs `step` every `every` until `shutdown`, waking the relay when a step enqueued
/// something (`Ok(n)` with n > 0); a failed step is logged as `what` and tried again
/// next tick.
async fn every<F, Fut>(
    every: Duration,
    outbox: &Notify,
    shutdown: CancellationToken,
    what: &str,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<usize>>,
{
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match step().await {
            Ok(0) => {}
            Ok(_) => outbox.notify_one(),
            Err(error) => tracing::warn!(%error, "{what} failed; trying again next tick"),
        }
    }
}

/// A job of kind `J` every `every`, unless one is still open: the call-log import
/// (`CALL_LOG_IMPORT_SECS`) and the mailbox sync (`GMAIL_POLL_SECS`).
pub struct Periodic<J> {
    pub pool: PgPool,
    pub every: Duration,
    pub max_attempts: i32,
    /// The process's relay, woken when a job was enqueued.
    pub outbox: Arc<Notify>,
    pub job: J,
}

impl<J: Job> Periodic<J> {
    pub async fn run(self, shutdown: CancellationToken) {
        every(self.every, &self.outbox, shutdown, J::KIND, || async {
            enqueue_unless_open(&self.pool, &self.job, self.max_attempts)
                .await
                .map(usize::from)
        })
        .await;
    }
}

/// Enqueues `job` unless a job of its kind is already open.
pub async fn enqueue_unless_open<J: Job>(
    pool: &PgPool,
    job: &J,
    max_attempts: i32,
) -> sqlx::Result<bool> {
    let kind = J::KIND;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(kind)
        .execute(&mut *tx)
        .await?;
    let open: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs
                        WHERE kind = $1 AND state IN ('pending', 'queued', 'running', 'retrying'))",
    )
    .bind(kind)
    .fetch_one(&mut *tx)
    .await?;
    if open {
        return Ok(false);
    }
    jobs::enqueue(&mut tx, NewJob::of(job), max_attempts).await?;
    tx.commit().await?;
    Ok(true)
}

/// Enqueues `dispatch.remind` for each dispatch older than `DISPATCH_ACK_SECS` whose
/// crew has not arrived, once per dispatch.
pub struct DispatchReminders {
    pub pool: PgPool,
    pub ack_after: Duration,
    pub max_attempts: i32,
    pub outbox: Arc<Notify>,
}

impl DispatchReminders {
    /// How often to look: often enough that a reminder is at most a quarter of the
    /// wait late.
    pub fn every(&self) -> Duration {
        (self.ack_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(15))
    }

    pub async fn run(self, shutdown: CancellationToken) {
        every(
            self.every(),
            &self.outbox,
            shutdown,
            "dispatch reminders",
            || enqueue_due_reminders(&self.pool, self.ack_after, self.max_attempts),
        )
        .await;
    }
}

/// One sweep; answers how many reminders it enqueued.
pub async fn enqueue_due_reminders(
    pool: &PgPool,
    ack_after: Duration,
    max_attempts: i32,
) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let due: Vec<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE dispatches SET ack_checked_at = now()
         WHERE id IN (SELECT id FROM dispatches
                      WHERE ack_checked_at IS NULL AND arrived_at IS NULL
                        AND created_at < now() - make_interval(secs => $1)
                      ORDER BY created_at
                      LIMIT 100
                      FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(ack_after.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    for dispatch_id in &due {
        jobs::enqueue(
            &mut tx,
            NewJob::of(&payloads::RemindDispatch {
                dispatch_id: *dispatch_id,
            }),
            max_attempts,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(due.len())
}

/// Sends unread in-app messages on by each customer's fallback channel, every
/// [`Fallbacks::every`].
pub struct Fallbacks {
    pub pool: PgPool,
    pub settings: commcenter_shared::domain::reach::FallbackSettings,
    pub outbox: Arc<Notify>,
}

impl Fallbacks {
    /// Often enough that a fallback is at most a tenth of the delay late.
    pub fn every(&self) -> Duration {
        (self.settings.default_after / 10).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    pub async fn run(self, shutdown: CancellationToken) {
        every(
            self.every(),
            &self.outbox,
            shutdown,
            "the fallback sweep",
            || {
                commcenter_shared::domain::reach::send_due_fallbacks(
                    &self.pool,
                    chrono::Utc::now(),
                    &self.settings,
                )
            },
        )
        .await;
    }
}

/// What the fallback sweep needs, from the settings.
pub fn fallback_settings(
    settings: &commcenter_shared::platform::settings::Settings,
) -> commcenter_shared::domain::reach::FallbackSettings {
    commcenter_shared::domain::reach::FallbackSettings {
        default_after: settings.reach.fallback_after,
        portal_url: settings.reach.portal_url.clone(),
        sms_from: settings.ringcentral.sms_from().map(str::to_owned),
        email_from: settings.gmail.email_from().map(str::to_owned),
        max_attempts: settings.jobs.max_attempts,
    }
}

/// The rescuer (`shared::ops::rescue_overdue`): jobs whose broker message is overdue by
/// `RESCUE_AFTER_SECS` go back to the outbox, one worker process at a time.
pub struct Rescuer {
    pub pool: PgPool,
    pub after: Duration,
    pub outbox: Arc<Notify>,
    /// Where rescues are counted (`commcenter_jobs_rescued_total`).
    pub metrics: Arc<crate::metrics::JobMetrics>,
}

/// Jobs rescued per pass at most; the next pass takes the rest.
const RESCUE_BATCH: i64 = 500;

impl Rescuer {
    /// A tenth of the margin, between a second and a minute.
    pub fn every(&self) -> Duration {
        (self.after / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    pub async fn run(self, shutdown: CancellationToken) {
        every(
            self.every(),
            &self.outbox,
            shutdown,
            "the rescuer",
            || async {
                let rescued =
                    commcenter_shared::ops::rescue_overdue(&self.pool, self.after, RESCUE_BATCH)
                        .await?;
                if !rescued.jobs.is_empty() {
                    tracing::warn!(
                        jobs = rescued.jobs.len(),
                        first = %rescued.jobs[0],
                        "rescued jobs whose broker message was overdue; published again"
                    );
                    self.metrics.jobs_rescued(rescued.jobs.len() as u64);
                }
                Ok(rescued.jobs.len())
            },
        )
        .await;
    }
}
