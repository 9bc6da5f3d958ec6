//! The rescuer: a job whose broker message should long have reached a worker, but did
//! not, is put back in the outbox. Its message was lost between the broker's confirm and
//! its persistence, or a queue was purged by hand; without this the row would wait
//! `queued` or `retrying` for ever, until an operator found it.
//!
//! A job is overdue when it has been `queued` longer than the margin, or `retrying` past
//! its `next_attempt_at` by more than the margin. Rescuing it is a replay that keeps the
//! attempt count (it is not a fresh decision, only a lost message): `pending` again, a
//! new `generation`, so the relay publishes it as it publishes every job, and a copy
//! still in the broker (it was only slow) is stale when it arrives and runs nothing.
//! Rows being run are locked, and skipped. One process rescues at a time (a transaction
//! advisory lock); each rescue is in the audit as the `rescuer`'s.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// Taken (try, per transaction) by the process rescuing: "commresc".
pub const RESCUE_LOCK: i64 = 0x636f_6d6d_7265_7363;
/// Who the audit says acted.
pub const RESCUER: &str = "rescuer";

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rescued {
    /// False when another process held the lock: this pass did nothing.
    pub ran: bool,
    pub jobs: Vec<Uuid>,
}

/// Puts back in the outbox up to `limit` jobs whose broker message is overdue by more
/// than `margin`, unless another process is rescuing now.
pub async fn rescue_overdue(pool: &PgPool, margin: Duration, limit: i64) -> sqlx::Result<Rescued> {
    let mut tx = pool.begin().await?;
    let ran: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(RESCUE_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !ran {
        return Ok(Rescued::default());
    }
    let jobs = crate::ledger::jobs::put_back_overdue(&mut tx, margin, limit, RESCUER).await?;
    tx.commit().await?;
    Ok(Rescued { ran: true, jobs })
}
