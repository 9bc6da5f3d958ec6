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
    let jobs: Vec<Uuid> = sqlx::query_scalar(
        "WITH picked AS (
             SELECT id, state AS previous_state, last_error AS previous_error,
                    last_error_class AS previous_error_class,
                    CASE WHEN state = 'queued' THEN queued_at ELSE next_attempt_at END AS due_at
             FROM jobs
             WHERE (state = 'queued' AND queued_at < now() - make_interval(secs => $1))
                OR (state = 'retrying' AND next_attempt_at < now() - make_interval(secs => $1))
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED),
         rescued AS (
             UPDATE jobs j SET state = 'pending', generation = j.generation + 1,
                               queued_at = NULL, next_attempt_at = NULL, updated_at = now()
             FROM picked WHERE j.id = picked.id
             RETURNING j.id, picked.previous_state, picked.previous_error,
                       picked.previous_error_class, picked.due_at),
         audited AS (
             INSERT INTO ops_audit (operator, action, job_id, reason, previous_state,
                                    previous_error, previous_error_class)
             SELECT $3, 'rescue', id,
                    format('its broker message was overdue: %s since %s, %s s past the margin',
                           previous_state, to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                           round(extract(epoch FROM now() - due_at)::numeric - $1::numeric)),
                    previous_state, previous_error, previous_error_class
             FROM rescued)
         SELECT id FROM rescued ORDER BY id",
    )
    .bind(margin.as_secs_f64())
    .bind(limit)
    .bind(RESCUER)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Rescued { ran: true, jobs })
}
