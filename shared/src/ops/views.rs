//! What operators read: job listings, counts by state and kind, and one job in full
//! (attempts, the communication it serves, its audit).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, QueryBuilder};
use uuid::Uuid;

use crate::domain::{CommunicationStatus, CommunicationType, Direction};

use super::{
    audit::{AUDIT_COLUMNS, AuditEntry},
    filter::JobFilter,
};

/// A job as the listing shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobSummary {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    /// Every attempt ever made (numbering of the attempt rows).
    pub attempts: i32,
    /// Attempts since the last replay: what the retry policy counts.
    pub attempts_since_replay: i32,
    pub max_attempts: i32,
    /// How often the job was replayed.
    pub generation: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_class: Option<String>,
    pub communication_id: Option<Uuid>,
    pub customer_id: Option<String>,
    /// The broker dead-lettered it on its own (delivery limit, rejected, …).
    pub dead_lettered_by_broker: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub replayed_at: Option<DateTime<Utc>>,
}

const SUMMARY_COLUMNS: &str = "id, kind, state, attempts, attempts - attempt_base AS attempts_since_replay,
    max_attempts, generation, next_attempt_at, last_error, last_error_class, communication_id, customer_id,
    broker_death IS NOT NULL AS dead_lettered_by_broker, created_at, updated_at, queued_at,
    first_failed_at, last_failed_at, finished_at, replayed_at";

/// Newest first; `before` is the (created_at, id) of the last row of the previous page.
pub async fn list_jobs(
    pool: &PgPool,
    filter: &JobFilter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<JobSummary>> {
    let mut q = QueryBuilder::new(format!("SELECT {SUMMARY_COLUMNS} FROM jobs WHERE TRUE"));
    filter.push_conditions(&mut q);
    if let Some((at, id)) = before {
        q.push(" AND (created_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    q.build_query_as().fetch_all(pool).await
}

/// How many jobs the filter matches, in all and by state, kind and error class.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub total: i64,
    pub by_state: BTreeMap<String, i64>,
    pub by_kind: BTreeMap<String, i64>,
    /// Jobs with no error class (never failed) are not counted here.
    pub by_error_class: BTreeMap<String, i64>,
}

/// One row of the grouping sets: GROUPING(state), GROUPING(kind), state, kind,
/// error class, count.
type GroupCount = (
    i32,
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

pub async fn count_jobs(pool: &PgPool, filter: &JobFilter) -> sqlx::Result<Counts> {
    // One scan, three groupings: GROUPING() says which grouping a row belongs to.
    let mut q = QueryBuilder::new(
        "SELECT GROUPING(state) AS no_state, GROUPING(kind) AS no_kind, state, kind, last_error_class, count(*)
         FROM jobs WHERE TRUE",
    );
    filter.push_conditions(&mut q);
    q.push(" GROUP BY GROUPING SETS ((state), (kind), (last_error_class))");
    let rows: Vec<GroupCount> = q.build_query_as().fetch_all(pool).await?;
    let mut counts = Counts::default();
    for (no_state, no_kind, state, kind, class, n) in rows {
        match (no_state, no_kind, state, kind, class) {
            (0, _, Some(state), _, _) => {
                counts.total += n;
                counts.by_state.insert(state, n);
            }
            (_, 0, _, Some(kind), _) => {
                counts.by_kind.insert(kind, n);
            }
            (1, 1, _, _, Some(class)) => {
                counts.by_error_class.insert(class, n);
            }
            _ => {}
        }
    }
    Ok(counts)
}

/// One try of a job, as an operator reads it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptView {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub outcome: String,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub retry_in_ms: Option<i64>,
    pub worker: String,
    pub provider_status: Option<String>,
    pub provider_id: Option<String>,
    pub http_status: Option<i16>,
}

/// The communication a job serves, in short.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CommunicationView {
    pub id: Uuid,
    pub customer_id: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub communication_type: CommunicationType,
    pub direction: Direction,
    pub status: CommunicationStatus,
    pub failure_reason: Option<String>,
    pub provider_message_id: Option<String>,
    pub provider_status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A job in full: the row with its payload and the broker's dead-letter history, every
/// attempt, the communication it serves and what operators did to it.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    pub job: JobSummary,
    pub payload: Value,
    /// The broker's `x-death` entries when it dead-lettered the job on its own.
    pub broker_death: Option<Value>,
    pub attempts: Vec<AttemptView>,
    pub communication: Option<CommunicationView>,
    pub audit: Vec<AuditEntry>,
}

pub async fn find_job(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<JobDetail>> {
    let Some(job) = sqlx::query_as::<_, JobSummary>(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM jobs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let (payload, broker_death): (Value, Option<Value>) =
        sqlx::query_as("SELECT payload, broker_death FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let attempts = sqlx::query_as(
        "SELECT attempt, started_at, finished_at,
                (extract(epoch FROM finished_at - started_at) * 1000)::bigint AS duration_ms,
                outcome, error_class, error, retry_in_ms, worker, provider_status, provider_id, http_status
         FROM job_attempts WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let communication = match job.communication_id {
        Some(communication_id) => sqlx::query_as(
            "SELECT id, customer_id, type, direction, status, failure_reason, provider_message_id,
                        provider_status, created_at, updated_at
                 FROM communications WHERE id = $1",
        )
        .bind(communication_id)
        .fetch_optional(pool)
        .await?,
        None => None,
    };
    let audit = sqlx::query_as(&format!(
        "SELECT {AUDIT_COLUMNS} FROM ops_audit WHERE job_id = $1 ORDER BY at, id"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(JobDetail {
        job,
        payload,
        broker_death,
        attempts,
        communication,
        audit,
    }))
}
