//! The operators' view of the job ledger, shared by the api (`/api/ops/`), the workers
//! (bulk actions) and the CLI: filters, listings and counts, one job in full, replays
//! and discards (one job, or a filter in batches), their audit, and queue health from
//! the ledger's side. (Pruning is the workers' `retention`.)
//!
//! A replay puts the job back in the outbox (`pending`): the relay publishes it, so a
//! broker outage only delays it. It keeps the job's id and payload (so the providers'
//! own idempotency holds: nothing already sent is sent again) and its attempt rows;
//! `attempt_base` makes the retry policy count afresh, and `generation` makes copies
//! published before the replay stale. What it clears on the row (the last error) is
//! kept in the audit entry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{
    domain::{CommunicationStatus, CustomerId},
    events::{self, Event, EventBody},
    jobs::{self, ErrorClass, JobState, NewJob, kinds},
};

/// Kinds whose job carries out a communication: when such a job dies the
/// communication shows `failed`, a replay moves it back to `queued`, a discard fails it.
pub const SENDING_KINDS: &[&str] = &[
    kinds::MESSAGE_DELIVER,
    kinds::SMS_SEND,
    kinds::EMAIL_SEND,
    kinds::CALL_LOG,
];

/// Which jobs an operator means. Every field narrows; lists match any of their values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<JobState>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_classes: Vec<ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication_id: Option<Uuid>,
    /// Created before this time (`older_than`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<DateTime<Utc>>,
    /// Created after this time (`newer_than`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
}

/// A filter parameter that does not parse, named so the operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    pub field: String,
    pub message: String,
}

impl FilterError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// The parameter names [`JobFilter::parse`] takes.
pub const FILTER_FIELDS: &[&str] = &[
    "state",
    "kind",
    "error_class",
    "customer_id",
    "communication_id",
    "older_than",
    "newer_than",
];

impl JobFilter {
    /// Builds a filter from `name=value` pairs (a query string, or a JSON object of
    /// strings). Lists are comma-separated or repeated. Ages are durations (`90s`,
    /// `15m`, `2h`, `7d`) back from `now`, or RFC 3339 times. Unknown names are errors.
    pub fn parse<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: DateTime<Utc>,
    ) -> Result<Self, FilterError> {
        let mut filter = Self::default();
        for (name, raw) in params {
            let values = || raw.split(',').map(str::trim).filter(|v| !v.is_empty());
            match name {
                "state" => {
                    for value in values() {
                        let state = JobState::parse(value).ok_or_else(|| {
                            FilterError::new(name, format!("unknown state {value:?} (pending, queued, running, retrying, succeeded, dead, cancelled)"))
                        })?;
                        filter.states.push(state);
                    }
                }
                "kind" => {
                    for value in values() {
                        if !kinds::ALL.contains(&value) {
                            return Err(FilterError::new(
                                name,
                                format!(
                                    "unknown job kind {value:?} (one of {})",
                                    kinds::ALL.join(", ")
                                ),
                            ));
                        }
                        filter.kinds.push(value.to_owned());
                    }
                }
                "error_class" => {
                    for value in values() {
                        let class = ErrorClass::parse(value).ok_or_else(|| {
                            FilterError::new(name, format!("unknown error class {value:?} (transient, permanent, exhausted, unparseable, delivery_limit, broker)"))
                        })?;
                        filter.error_classes.push(class);
                    }
                }
                "customer_id" => {
                    filter.customer_id =
                        Some(CustomerId::parse(raw).map_err(|e| FilterError::new(name, e.0))?);
                }
                "communication_id" => {
                    filter.communication_id = Some(Uuid::parse_str(raw).map_err(|_| {
                        FilterError::new(name, format!("must be a UUID, not {raw:?}"))
                    })?);
                }
                "older_than" => filter.created_before = Some(point_in_time(name, raw, now)?),
                "newer_than" => filter.created_after = Some(point_in_time(name, raw, now)?),
                other => {
                    return Err(FilterError::new(
                        other,
                        format!("unknown filter (one of {})", FILTER_FIELDS.join(", ")),
                    ));
                }
            }
            if raw.trim().is_empty() {
                return Err(FilterError::new(name, "must not be empty"));
            }
        }
        Ok(filter)
    }

    /// Appends ` AND …` for each condition (the query must already have a `WHERE`).
    fn push_conditions(&self, q: &mut QueryBuilder<'_, Postgres>) {
        if !self.states.is_empty() {
            let states: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            q.push(" AND state = ANY(").push_bind(states).push(")");
        }
        if !self.kinds.is_empty() {
            q.push(" AND kind = ANY(")
                .push_bind(self.kinds.clone())
                .push(")");
        }
        if !self.error_classes.is_empty() {
            let classes: Vec<&str> = self.error_classes.iter().map(|c| c.as_str()).collect();
            q.push(" AND last_error_class = ANY(")
                .push_bind(classes)
                .push(")");
        }
        if let Some(customer) = &self.customer_id {
            q.push(" AND customer_id = ")
                .push_bind(customer.as_str().to_owned());
        }
        if let Some(id) = self.communication_id {
            q.push(" AND communication_id = ").push_bind(id);
        }
        if let Some(before) = self.created_before {
            q.push(" AND created_at < ").push_bind(before);
        }
        if let Some(after) = self.created_after {
            q.push(" AND created_at > ").push_bind(after);
        }
    }
}

/// `15m`-style ages back from `now`, or an RFC 3339 time.
fn point_in_time(field: &str, raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, FilterError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    let invalid = || {
        FilterError::new(
            field,
            format!("must be an age like 90s, 15m, 2h or 7d, or an RFC 3339 time, not {raw:?}"),
        )
    };
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = raw.split_at(split);
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(seconds)
        .and_then(chrono::Duration::try_seconds)
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(invalid)
}

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
    pub communication_type: String,
    pub direction: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub provider_message_id: Option<String>,
    pub provider_status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One audit entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub operator: String,
    pub action: String,
    pub job_id: Option<Uuid>,
    pub action_id: Option<Uuid>,
    pub filter: Option<Value>,
    pub matched: Option<i64>,
    pub reason: String,
    pub previous_state: Option<String>,
    pub previous_error: Option<String>,
    pub previous_error_class: Option<String>,
}

const AUDIT_COLUMNS: &str = "id, at, operator, action, job_id, action_id, filter, matched, reason,
    previous_state, previous_error, previous_error_class";

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

/// What an operator can do to jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Run it again from the outbox, attempts counted afresh.
    Replay,
    /// Cancel it: it will not run (again).
    Discard,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::Discard => "discard",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "replay" => Some(Self::Replay),
            "discard" => Some(Self::Discard),
            _ => None,
        }
    }

    /// The states this action applies to. A retrying job can be replayed (it runs now
    /// instead of after its delay); a pending or queued one is about to run already.
    pub fn eligible(self) -> &'static [JobState] {
        match self {
            Self::Replay => &[JobState::Dead, JobState::Cancelled, JobState::Retrying],
            Self::Discard => &[
                JobState::Pending,
                JobState::Queued,
                JobState::Retrying,
                JobState::Dead,
            ],
        }
    }

    /// What a filter with no state means for this action.
    pub fn default_states(self) -> &'static [JobState] {
        &[JobState::Dead]
    }

    /// Why this action does not apply to a job in `state`, for the operator.
    pub fn refusal(self, state: JobState) -> Option<String> {
        if self.eligible().contains(&state) {
            return None;
        }
        Some(match (self, state) {
            (Self::Replay, JobState::Succeeded) => {
                "the job already succeeded; replaying it could repeat its effect".to_owned()
            }
            (Self::Replay, JobState::Pending | JobState::Queued | JobState::Running) => {
                format!("the job is {}: it is about to run already", state.as_str())
            }
            (Self::Discard, JobState::Succeeded) => {
                "the job already succeeded; there is nothing to discard".to_owned()
            }
            (Self::Discard, JobState::Cancelled) => "the job is already discarded".to_owned(),
            (_, state) => format!("a {} job cannot be {}ed", state.as_str(), self.as_str()),
        })
    }

    fn audit_name(self, bulk: bool) -> &'static str {
        match (self, bulk) {
            (Self::Replay, false) => "replay",
            (Self::Discard, false) => "discard",
            (Self::Replay, true) => "bulk_replay",
            (Self::Discard, true) => "bulk_discard",
        }
    }
}

/// The result of acting on one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acted {
    Done { previous_state: JobState },
    NotFound,
    Refused { state: JobState, reason: String },
}

/// Replays or discards one job in the caller's transaction. Waits for the job's row
/// lock, so a job being run is acted on after its attempt, as it then stands.
pub async fn act_on_job(
    conn: &mut PgConnection,
    action: Action,
    job_id: Uuid,
    operator: &str,
    reason: &str,
) -> anyhow::Result<Acted> {
    let Some(row) = jobs::lock(conn, job_id).await? else {
        return Ok(Acted::NotFound);
    };
    let state = row.state();
    if let Some(reason) = action.refusal(state) {
        return Ok(Acted::Refused { state, reason });
    }
    let scope = Scope::Job(job_id);
    act_on_batch(conn, action, &scope, operator, reason, None, 1).await?;
    Ok(Acted::Done {
        previous_state: state,
    })
}

/// Which jobs a batch looks at.
enum Scope<'a> {
    Job(Uuid),
    /// The filter's jobs after `after` (by id) not changed since `as_of`.
    Filter {
        filter: &'a JobFilter,
        after: Option<Uuid>,
        as_of: DateTime<Utc>,
    },
}

/// Acts on up to `limit` eligible jobs of `scope` in one statement: takes their row
/// locks, skipping rows someone else holds (another action, a running attempt), writes
/// their new state and an audit entry each; then moves their communications. Returns
/// the ids acted on, in id order.
async fn act_on_batch(
    conn: &mut PgConnection,
    action: Action,
    scope: &Scope<'_>,
    operator: &str,
    reason: &str,
    action_id: Option<Uuid>,
    limit: i64,
) -> anyhow::Result<Vec<Uuid>> {
    let mut q = QueryBuilder::new(
        "WITH picked AS (
             SELECT id, state AS previous_state, last_error AS previous_error,
                    last_error_class AS previous_error_class
             FROM jobs WHERE TRUE",
    );
    match scope {
        Scope::Job(id) => {
            q.push(" AND id = ").push_bind(*id);
        }
        Scope::Filter {
            filter,
            after,
            as_of,
        } => {
            filter.push_conditions(&mut q);
            q.push(" AND updated_at <= ").push_bind(*as_of);
            if let Some(after) = after {
                q.push(" AND id > ").push_bind(*after);
            }
        }
    }
    let eligible: Vec<&str> = action.eligible().iter().map(|s| s.as_str()).collect();
    q.push(" AND state = ANY(")
        .push_bind(eligible)
        .push(") ORDER BY id LIMIT ")
        .push_bind(limit)
        .push(" FOR UPDATE SKIP LOCKED), acted AS (UPDATE jobs j SET ");
    q.push(match action {
        Action::Replay => {
            "state = 'pending', attempt_base = j.attempts, generation = j.generation + 1,
             next_attempt_at = NULL, last_error = NULL, last_error_class = NULL,
             first_failed_at = NULL, last_failed_at = NULL, queued_at = NULL, finished_at = NULL,
             replayed_at = now(), updated_at = now()"
        }
        Action::Discard => {
            "state = 'cancelled', next_attempt_at = NULL, finished_at = now(), updated_at = now()"
        }
    });
    q.push(
        " FROM picked WHERE j.id = picked.id
          RETURNING j.id, j.kind, j.communication_id, picked.previous_state, picked.previous_error,
                    picked.previous_error_class),
         audited AS (INSERT INTO ops_audit (operator, action, job_id, action_id, reason,
                                            previous_state, previous_error, previous_error_class)
                     SELECT ",
    )
    .push_bind(operator.to_owned())
    .push(", ")
    .push_bind(action.as_str())
    .push(", id, ")
    .push_bind(action_id)
    .push(", ")
    .push_bind(reason.to_owned())
    .push(
        ", previous_state, previous_error, previous_error_class FROM acted)
         SELECT id, kind, communication_id FROM acted ORDER BY id",
    );
    let acted: Vec<(Uuid, String, Option<Uuid>)> = q.build_query_as().fetch_all(&mut *conn).await?;

    let communications: Vec<Uuid> = acted
        .iter()
        .filter(|(_, kind, _)| SENDING_KINDS.contains(&kind.as_str()))
        .filter_map(|(_, _, communication)| *communication)
        .collect();
    if !communications.is_empty() {
        match action {
            Action::Replay => requeue_communications(conn, &communications).await?,
            Action::Discard => {
                let why = format!("discarded by an operator: {reason}");
                fail_communications(conn, &communications, &why).await?;
            }
        }
    }
    Ok(acted.into_iter().map(|(id, ..)| id).collect())
}

/// A replayed send: its failed communication is `queued` again (the one move back
/// the forward-only statuses allow, and only an operator makes), and the
/// conversation hears of it.
async fn requeue_communications(conn: &mut PgConnection, ids: &[Uuid]) -> anyhow::Result<()> {
    let moved: Vec<(Uuid, String)> = sqlx::query_as(
        "UPDATE communications SET status = 'queued', failure_reason = NULL, updated_at = now()
         WHERE id = ANY($1) AND status = 'failed'
         RETURNING id, customer_id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    for (id, customer) in moved {
        announce(
            conn,
            id,
            &customer,
            CommunicationStatus::Queued,
            CommunicationStatus::Failed,
            None,
        )
        .await?;
    }
    Ok(())
}

/// A discarded send that had not gone out: its communication fails with the reason.
async fn fail_communications(
    conn: &mut PgConnection,
    ids: &[Uuid],
    reason: &str,
) -> anyhow::Result<()> {
    let moved: Vec<(Uuid, String)> = sqlx::query_as(
        "UPDATE communications SET status = 'failed', failure_reason = $2, updated_at = now()
         WHERE id = ANY($1) AND status = 'queued'
         RETURNING id, customer_id",
    )
    .bind(ids)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    for (id, customer) in moved {
        announce(
            conn,
            id,
            &customer,
            CommunicationStatus::Failed,
            CommunicationStatus::Queued,
            Some(reason),
        )
        .await?;
    }
    Ok(())
}

async fn announce(
    conn: &mut PgConnection,
    communication_id: Uuid,
    customer: &str,
    status: CommunicationStatus,
    previous: CommunicationStatus,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let customer = CustomerId::parse(customer).map_err(|e| anyhow::anyhow!(e.0))?;
    let event = Event::now(
        customer,
        EventBody::CommunicationStatus {
            communication_id,
            status,
            previous,
            reason: reason.map(str::to_owned),
        },
    );
    events::record(conn, &event).await?;
    Ok(())
}

/// The payload of an `ops.bulk` job: one batch of a bulk action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBatch {
    pub action_id: Uuid,
}

impl crate::jobs::Job for BulkBatch {
    const KIND: &'static str = kinds::OPS_BULK;
}

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

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub operator: Option<String>,
    /// replay, discard, bulk_replay, bulk_discard
    pub action: Option<String>,
    pub job_id: Option<Uuid>,
    pub action_id: Option<Uuid>,
}

/// The audit's action names.
pub const AUDIT_ACTIONS: &[&str] = &["replay", "discard", "bulk_replay", "bulk_discard"];

/// Newest first, keyset-paginated by id.
pub async fn list_audit(
    pool: &PgPool,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<AuditEntry>> {
    let mut q = QueryBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM ops_audit WHERE TRUE"));
    if let Some(operator) = &filter.operator {
        q.push(" AND operator = ").push_bind(operator.clone());
    }
    if let Some(action) = &filter.action {
        q.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(job_id) = filter.job_id {
        q.push(" AND job_id = ").push_bind(job_id);
    }
    if let Some(action_id) = filter.action_id {
        q.push(" AND action_id = ").push_bind(action_id);
    }
    if let Some(before) = before {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(pool).await
}

/// The ledger's side of queue health.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerHealth {
    /// Jobs per state (every state listed, zeros included).
    pub by_state: BTreeMap<String, i64>,
    /// The outbox: jobs not yet on the broker, and how long the oldest has waited.
    pub outbox: OutboxLag,
    /// The retrying job that has been failing longest.
    pub oldest_retrying: Option<OldestRetrying>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxLag {
    pub pending: i64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Age of the oldest pending job in seconds (0 when none).
    pub lag_seconds: f64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OldestRetrying {
    pub id: Uuid,
    pub kind: String,
    pub attempts: i32,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

pub async fn ledger_health(pool: &PgPool) -> sqlx::Result<LedgerHealth> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
            .fetch_all(pool)
            .await?;
    let mut by_state: BTreeMap<String, i64> = [
        JobState::Pending,
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ]
    .iter()
    .map(|s| (s.as_str().to_owned(), 0))
    .collect();
    by_state.extend(rows);
    let oldest_pending_at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT min(created_at) FROM jobs WHERE state = 'pending'")
            .fetch_one(pool)
            .await?;
    let lag_seconds = oldest_pending_at.map_or(0.0, |at| {
        (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    let oldest_retrying = sqlx::query_as(
        "SELECT id, kind, attempts, first_failed_at, next_attempt_at, last_error FROM jobs
         WHERE state = 'retrying' ORDER BY first_failed_at NULLS LAST, created_at LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(LedgerHealth {
        outbox: OutboxLag {
            pending: by_state.get("pending").copied().unwrap_or(0),
            oldest_pending_at,
            lag_seconds,
        },
        by_state,
        oldest_retrying,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<JobFilter, FilterError> {
        let now = DateTime::parse_from_rfc3339("2026-01-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        JobFilter::parse(pairs.iter().copied(), now)
    }

    #[test]
    fn filters_parse_lists_ages_and_times() {
        let filter = parse(&[
            ("state", "dead,retrying"),
            ("kind", "message.deliver"),
            ("error_class", "permanent"),
            ("older_than", "2h"),
            ("newer_than", "2026-01-01T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(filter.states, [JobState::Dead, JobState::Retrying]);
        assert_eq!(filter.error_classes, [ErrorClass::Permanent]);
        assert_eq!(
            filter.created_before.unwrap().to_rfc3339(),
            "2026-01-10T10:00:00+00:00"
        );
        assert_eq!(
            filter.created_after.unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn bad_filters_name_their_field() {
        for (pairs, field) in [
            (vec![("state", "zombie")], "state"),
            (vec![("kind", "no.such")], "kind"),
            (vec![("error_class", "weird")], "error_class"),
            (vec![("communication_id", "nope")], "communication_id"),
            (vec![("older_than", "3 weeks")], "older_than"),
            (vec![("newer_than", "5y")], "newer_than"),
            (vec![("customer_id", "a/b")], "customer_id"),
            (vec![("colour", "red")], "colour"),
            (vec![("state", "")], "state"),
        ] {
            let error = parse(&pairs).unwrap_err();
            assert_eq!(error.field, field, "{pairs:?}: {error}");
        }
    }

    #[test]
    fn refusals_say_why() {
        assert!(
            Action::Replay
                .refusal(JobState::Succeeded)
                .unwrap()
                .contains("already succeeded")
        );
        assert_eq!(Action::Replay.refusal(JobState::Dead), None);
        assert_eq!(Action::Discard.refusal(JobState::Retrying), None);
        assert!(Action::Discard.refusal(JobState::Cancelled).is_some());
    }
}
