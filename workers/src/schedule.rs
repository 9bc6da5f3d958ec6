//! Jobs that run on a clock: the RingCentral call-log import.
//!
//! Each worker process ticks, but a job is enqueued only when none of its kind is open
//! (pending, queued, running or retrying), checked under a transaction-scoped advisory
//! lock, so several workers never stack imports.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use commcenter_shared::jobs::{self, Job, NewJob, payloads};

pub struct CallLogImports {
    pub pool: PgPool,
    pub every: Duration,
    pub max_attempts: i32,
    /// The process's relay, woken when a job was enqueued.
    pub outbox: Arc<Notify>,
}

impl CallLogImports {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match enqueue_unless_open(
                &self.pool,
                &payloads::ImportCallLog::default(),
                self.max_attempts,
            )
            .await
            {
                Ok(true) => self.outbox.notify_one(),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "could not schedule the call-log import"),
            }
        }
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
