//! Bulk actions: a replay or discard of every job a filter matches, run by the workers
//! in batches (one `ops.bulk_batch` job each), with progress operators can follow.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

use crate::ledger::jobs::{self, NewJob};

use super::{
    actions::{Action, Scope, act_on_batch},
    filter::JobFilter,
};

/// The payload of an `ops.bulk` job: one batch of a bulk action.
pub use crate::ledger::jobs::payloads::BulkBatch;

/// A bulk action and its progress.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct BulkAction {
    pub id: Uuid,
    pub action: String,
    pub operator: String,
    pub reason: String,
    pub filter: Value,
    /// pending, running, done, failed
    pub state: String,
    /// Jobs eligible when the action was taken.
    pub matched: i64,
    /// Jobs acted on so far.
    pub done: i64,
    /// Matched jobs that were no longer eligible when their batch came.
    pub skipped: i64,
    /// Batches that failed (each is retried; a batch that keeps failing fails the action).
    pub errors: i64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const ACTION_COLUMNS: &str =
    "a.id, a.action, a.operator, a.reason, a.filter, a.state, a.matched, a.done,
    a.skipped, (SELECT count(*) FROM jobs j JOIN job_attempts t ON t.job_id = j.id
                WHERE j.kind = 'ops.bulk' AND j.payload->>'action_id' = a.id::text
                  AND t.outcome <> 'succeeded') AS errors,
    a.last_error, a.created_at, a.started_at, a.finished_at, a.updated_at";

/// Records a bulk action over `filter` with its audit entry and enqueues its first
/// batch, in the caller's transaction. The states it covers are the filter's
/// eligible ones ([`Action::default_states`] when the filter names none).
pub async fn start_bulk(
    conn: &mut PgConnection,
    action: Action,
    filter: &JobFilter,
    operator: &str,
    reason: &str,
    max_attempts: i32,
) -> anyhow::Result<BulkAction> {
    let id = Uuid::now_v7();
    let as_of: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *conn)
        .await?;
    let mut q = QueryBuilder::new("SELECT count(*) FROM jobs WHERE TRUE");
    filter.push_conditions(&mut q);
    let eligible: Vec<&str> = action.eligible().iter().map(|s| s.as_str()).collect();
    q.push(" AND state = ANY(").push_bind(eligible).push(")");
    let matched: i64 = q.build_query_scalar().fetch_one(&mut *conn).await?;
    let stored = serde_json::to_value(filter)?;
    sqlx::query(
        "INSERT INTO ops_actions (id, action, operator, reason, filter, matched, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(action.as_str())
    .bind(operator)
    .bind(reason)
    .bind(&stored)
    .bind(matched)
    .bind(as_of)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO ops_audit (operator, action, action_id, filter, matched, reason)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(operator)
    .bind(action.audit_name(true))
    .bind(id)
    .bind(&stored)
    .bind(matched)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    enqueue_batch(conn, id, max_attempts).await?;
    find_action(conn, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("bulk action {id} vanished"))
}

async fn enqueue_batch(
    conn: &mut PgConnection,
    action_id: Uuid,
    max_attempts: i32,
) -> sqlx::Result<Uuid> {
    jobs::enqueue(conn, NewJob::of(&BulkBatch { action_id }), max_attempts).await
}

/// Whether a bulk action has more to do after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The next batch is enqueued.
    Continues,
    Finished,
}

/// Runs one batch of a bulk action in the caller's transaction (an `ops.bulk` job's)
/// and records its progress there, so a batch and its progress commit together and
/// no transaction holds more than `batch` job rows. Enqueues the next batch as a job
/// of its own when there may be more.
pub async fn run_bulk_batch(
    conn: &mut PgConnection,
    action_id: Uuid,
    batch: i64,
    max_attempts: i32,
) -> anyhow::Result<BatchOutcome> {
    // The action's row lock orders its batches (a redelivered batch waits, then sees
    // the progress its twin made).
    let Some((action, filter, state, position, as_of)) =
        sqlx::query_as::<_, (String, Value, String, Option<Uuid>, DateTime<Utc>)>(
            "SELECT action, filter, state, position, created_at FROM ops_actions
             WHERE id = $1 FOR UPDATE",
        )
        .bind(action_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        anyhow::bail!("no bulk action {action_id}");
    };
    if matches!(state.as_str(), "done" | "failed") {
        return Ok(BatchOutcome::Finished);
    }
    let action =
        Action::parse(&action).ok_or_else(|| anyhow::anyhow!("unknown action {action:?}"))?;
    let filter: JobFilter = serde_json::from_value(filter)?;
    let (operator, reason): (String, String) =
        sqlx::query_as("SELECT operator, reason FROM ops_actions WHERE id = $1")
            .bind(action_id)
            .fetch_one(&mut *conn)
            .await?;
    let scope = Scope::Filter {
        filter: &filter,
        after: position,
        as_of,
    };
    let acted = act_on_batch(
        conn,
        action,
        &scope,
        &operator,
        &reason,
        Some(action_id),
        batch,
    )
    .await?;
    let finished = (acted.len() as i64) < batch;
    sqlx::query(
        "UPDATE ops_actions SET
             done = done + $2,
             position = COALESCE($3, position),
             state = CASE WHEN $4 THEN 'done' ELSE 'running' END,
             skipped = CASE WHEN $4 THEN GREATEST(matched - done - $2, 0) ELSE skipped END,
             started_at = COALESCE(started_at, now()),
             finished_at = CASE WHEN $4 THEN now() END,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(action_id)
    .bind(acted.len() as i64)
    .bind(acted.last().copied())
    .bind(finished)
    .execute(&mut *conn)
    .await?;
    if finished {
        return Ok(BatchOutcome::Finished);
    }
    enqueue_batch(conn, action_id, max_attempts).await?;
    Ok(BatchOutcome::Continues)
}

/// A bulk action whose batch job died: it stops, with the reason.
pub async fn fail_bulk(conn: &mut PgConnection, action_id: Uuid, reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE ops_actions SET state = 'failed', last_error = $2, finished_at = now(), updated_at = now()
         WHERE id = $1 AND state IN ('pending', 'running')",
    )
    .bind(action_id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find_action(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<BulkAction>> {
    sqlx::query_as(&format!(
        "SELECT {ACTION_COLUMNS} FROM ops_actions a WHERE a.id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Newest first, keyset-paginated by (created_at, id).
pub async fn list_actions(
    pool: &PgPool,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<BulkAction>> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {ACTION_COLUMNS} FROM ops_actions a WHERE TRUE"
    ));
    if let Some((at, id)) = before {
        q.push(" AND (a.created_at, a.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY a.created_at DESC, a.id DESC LIMIT ")
        .push_bind(limit);
    q.build_query_as().fetch_all(pool).await
}
