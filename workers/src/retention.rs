//! Retention: every so often, prune finished jobs (their attempts go with them) past
//! `JOB_RETENTION_HOURS`, idempotency keys and webhook receipts past
//! `IDEMPOTENCY_RETENTION_HOURS`, the event log past `EVENT_RETENTION_HOURS`, and
//! crews' positions past `LOCATION_RETENTION_HOURS` (each crew's latest stays), and the
//! live chart's minutes past a week.
//! Dead jobs are kept until an operator replays or discards them. Several worker
//! processes may prune at once: each deletes in small batches and skips locked rows.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use commcenter_shared::ledger::jobs;

/// How often a worker process prunes.
pub const INTERVAL: Duration = Duration::from_secs(10 * 60);
/// How long the live chart's counts and queue depths are kept.
pub const ACTIVITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Rows deleted per statement.
const BATCH: i64 = 1000;

pub struct Retention {
    pub pool: PgPool,
    pub keep: Keep,
}

/// How long each kind of row is kept.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// Succeeded and cancelled jobs, after they finished.
    pub jobs: Duration,
    /// Idempotency keys and webhook receipts.
    pub idempotency_keys: Duration,
    pub events: Duration,
    /// Crews' reported positions, after they came in.
    pub locations: Duration,
}

impl Retention {
    /// Prunes now, then every [`INTERVAL`], until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match prune(&self.pool, &self.keep, BATCH).await {
                Ok(pruned) if pruned != Pruned::default() => {
                    tracing::info!(
                        jobs = pruned.jobs,
                        idempotency_keys = pruned.idempotency_keys,
                        webhook_receipts = pruned.webhook_receipts,
                        events = pruned.events,
                        locations = pruned.locations,
                        activity = pruned.activity,
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

/// What one round of pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub jobs: u64,
    pub idempotency_keys: u64,
    pub webhook_receipts: u64,
    /// Events older than `EVENT_RETENTION_HOURS`, past recovery.
    pub events: u64,
    pub locations: u64,
    /// Minutes of job counts and queue depths older than [`ACTIVITY`].
    pub activity: u64,
}

/// Deletes succeeded and cancelled jobs (their attempts go with them), idempotency keys
/// and webhook receipts (RingCentral's redelivery window is minutes), events and
/// crews' positions older than `keep` says, in batches of `batch` rows so no
/// transaction grows large. Dead jobs stay until an operator acts.
pub async fn prune(pool: &PgPool, keep: &Keep, batch: i64) -> sqlx::Result<Pruned> {
    let older = |sql: String, retention: Duration| async move {
        let sql = sql.as_str();
        in_batches(batch, || async move {
            let deleted = sqlx::query(sql)
                .bind(retention.as_secs_f64())
                .bind(batch)
                .execute(pool)
                .await?;
            Ok(deleted.rows_affected())
        })
        .await
    };
    Ok(Pruned {
        jobs: in_batches(batch, || jobs::delete_finished(pool, keep.jobs, batch)).await?,
        idempotency_keys: older(
            aged("idempotency_keys", "created_at"),
            keep.idempotency_keys,
        )
        .await?,
        webhook_receipts: older(
            aged("webhook_receipts", "received_at"),
            keep.idempotency_keys,
        )
        .await?,
        // In order, so recovery never finds a hole below a position it still has.
        events: older(
            "DELETE FROM event_log WHERE seq IN (
                 SELECT seq FROM event_log
                 WHERE at < now() - make_interval(secs => $1)
                 ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)"
                .to_owned(),
            keep.events,
        )
        .await?,
        // Each crew's latest position stays, however old.
        locations: older(
            "DELETE FROM crew_locations WHERE id IN (
                 SELECT l.id FROM crew_locations l
                 WHERE l.received_at < now() - make_interval(secs => $1)
                   AND l.id <> (SELECT newest.id FROM crew_locations newest
                                WHERE newest.crew_id = l.crew_id
                                ORDER BY newest.at DESC, newest.id DESC LIMIT 1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)"
                .to_owned(),
            keep.locations,
        )
        .await?,
        activity: older(aged("job_activity", "minute"), ACTIVITY).await?
            + older(aged("queue_depths", "minute"), ACTIVITY).await?,
    })
}

/// The delete of up to `$2` rows of `table` whose `at` column is older than `$1`
/// seconds (rows others hold are skipped).
fn aged(table: &str, at: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE ctid IN (
             SELECT ctid FROM {table} WHERE {at} < now() - make_interval(secs => $1)
             LIMIT $2 FOR UPDATE SKIP LOCKED)"
    )
}

/// Runs `delete_one` (which deletes up to `batch` rows) until it deletes less than a
/// batch, so no transaction grows large; returns how many rows went.
async fn in_batches<Batch: Future<Output = sqlx::Result<u64>>>(
    batch: i64,
    mut delete_one: impl FnMut() -> Batch,
) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let deleted = delete_one().await?;
        total += deleted;
        if (deleted as i64) < batch {
            return Ok(total);
        }
    }
}
