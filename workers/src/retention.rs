//! Retention: every so often, prune finished jobs (their attempts go with them) past
//! `JOB_RETENTION_HOURS`, idempotency keys past `IDEMPOTENCY_RETENTION_HOURS` and the
//! event log past `EVENT_RETENTION_HOURS`.
//! Dead jobs are kept until an operator replays or discards them. Several worker
//! processes may prune at once: each deletes in small batches and skips locked rows.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use commcenter_shared::ops;

/// How often a worker process prunes.
pub const INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Rows deleted per statement.
const BATCH: i64 = 1000;

pub struct Retention {
    pub pool: PgPool,
    pub jobs: Duration,
    pub idempotency_keys: Duration,
    pub events: Duration,
}

impl Retention {
    /// Prunes now, then every [`INTERVAL`], until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match ops::prune(
                &self.pool,
                self.jobs,
                self.idempotency_keys,
                self.events,
                BATCH,
            )
            .await
            {
                Ok(pruned) if pruned != ops::Pruned::default() => {
                    tracing::info!(
                        jobs = pruned.jobs,
                        idempotency_keys = pruned.idempotency_keys,
                        webhook_receipts = pruned.webhook_receipts,
                        events = pruned.events,
                        "pruned"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "pruning failed; trying again later"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(INTERVAL) => {}
            }
        }
    }
}
