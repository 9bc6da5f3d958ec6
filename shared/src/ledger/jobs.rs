//! The job ledger. Every job has a row in `jobs`, written in the same transaction as
//! the request it carries out (state `pending`: the outbox). The relay publishes it and
//! marks it `queued`; a worker runs it and records each attempt; the row ends
//! `succeeded`, `dead` or `cancelled`. RabbitMQ only carries the [`Envelope`] and holds
//! the delays; operators look here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{ConversationStatus, CustomerId, Receipt, Role, UserId};

/// The one list of job kinds: each kind's name, its payload type, what it does and,
/// for a kind that carries out a communication, the payload's field that names it.
/// [`kinds`] (a constant per kind, `kinds::ALL`, `kinds::DELIVERING`) and every [`Job`]
/// impl are made from it, and [`Job`] is sealed to it: a payload type outside the list
/// cannot be enqueued, so no kind can be left out of `kinds::ALL` (which declares the
/// queues).
macro_rules! job_kinds {
    ($( $(#[$doc:meta])* $constant:ident = $name:literal => $payload:ident
        $(delivers $field:ident)?, )+) => {
        /// The job kinds this system runs; each has its own work queue
        /// (`{prefix}.jobs.{kind}`).
        pub mod kinds {
            $( $(#[$doc])* pub const $constant: &str = $name; )+
            /// Every kind, in the registry's order.
            pub const ALL: &[&str] = &[$($constant),+];
            /// The kinds whose job carries out a communication: when one dies the
            /// communication shows `failed`, a replay moves it back to `queued`, a discard
            /// fails it.
            pub const DELIVERING: &[&str] = &[$($(job_kinds!(@name $field $constant),)?)+];
        }
        $(
            impl sealed::Registered for payloads::$payload {}
            impl Job for payloads::$payload {
                const KIND: &'static str = kinds::$constant;
                $(
                    fn delivers(&self) -> Option<Uuid> {
                        Some(self.$field)
                    }
                )?
            }
        )+
    };
    (@name $field:ident $constant:ident) => { $constant };
}

job_kinds! {
    /// Deliver an in-app message to the other party.
    MESSAGE_DELIVER = "message.deliver" => DeliverMessage delivers communication_id,
    /// Apply a delivered or read receipt to a communication.
    RECEIPT_APPLY = "receipt.apply" => ApplyReceipt,
    /// Open, close or archive a customer's conversation.
    CONVERSATION_STATUS = "conversation.status" => SetConversationStatus,
    /// Hash, sniff, deduplicate and thumbnail an uploaded file.
    FILE_PROCESS = "file.process" => ProcessFile,
    /// Delete a stored object nothing refers to any more (a deduplicated upload).
    BLOB_DELETE = "blob.delete" => DeleteBlob,
    /// Send an SMS or MMS through RingCentral.
    SMS_SEND = "sms.send" => SendSms delivers communication_id,
    /// Send an email through Gmail.
    EMAIL_SEND = "email.send" => SendEmail delivers communication_id,
    /// Finish a phone call logged by staff: match it with RingCentral's call log.
    CALL_LOG = "call.log" => LogCall delivers communication_id,
    /// Act on a notification RingCentral posted to our webhook.
    RINGCENTRAL_EVENT = "ringcentral.event" => RingCentralEvent,
    /// Pull RingCentral's call log since the last import into phone communications.
    CALL_LOG_IMPORT = "call_log.import" => ImportCallLog,
    /// One batch of an operator's bulk replay or discard (`ops::run_bulk_batch`).
    OPS_BULK = "ops.bulk" => BulkBatch,
    /// Tell a dispatched crew: `dispatch.new` to its members, an SMS to those offline.
    DISPATCH_NOTIFY = "dispatch.notify" => NotifyDispatch,
    /// Text the members who were connected but have not acknowledged in time.
    DISPATCH_REMIND = "dispatch.remind" => RemindDispatch,
    /// Read what came into the Gmail mailbox since the last sync; one `email.file` each.
    EMAIL_SYNC = "email.sync" => SyncMailbox,
    /// File one inbound email: match it to a customer, record it, announce it.
    EMAIL_FILE = "email.file" => FileEmail,
}

/// Only [`job_kinds!`] implements it: what makes the list complete.
mod sealed {
    pub trait Registered {}
}

/// The payloads of the kinds above, shared by the api that enqueues and the workers
/// that run them.
pub mod payloads {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DeliverMessage {
        pub communication_id: Uuid,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ApplyReceipt {
        pub communication_id: Uuid,
        pub receipt: Receipt,
        pub by_user: UserId,
        pub by_role: Role,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ProcessFile {
        pub file_id: Uuid,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DeleteBlob {
        pub storage_key: String,
    }

    /// `sms.send`: everything else (recipient, text, attachments) is on the
    /// communication row, written with the job.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SendSms {
        pub communication_id: Uuid,
    }

    /// `email.send`: everything else (recipients, subject, text, attachments, thread)
    /// is on the communication row, written with the job.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SendEmail {
        pub communication_id: Uuid,
    }

    /// `call.log`: the call is on the communication row.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct LogCall {
        pub communication_id: Uuid,
    }

    /// `ringcentral.event`: the webhook's envelope as RingCentral posted it
    /// (`uuid`, `event`, `subscriptionId`, `timestamp`, `body`).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RingCentralEvent {
        pub notification: Value,
    }

    /// `call_log.import`: from where the last import stopped (kept in `provider_cursors`).
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ImportCallLog {}

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SetConversationStatus {
        pub customer_id: CustomerId,
        pub status: ConversationStatus,
        pub by_user: UserId,
    }

    /// `email.sync`: from where the last sync stopped (kept in `gmail_sync`).
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SyncMailbox {}

    /// `email.file`: one message of the mailbox, by its Gmail id.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FileEmail {
        pub gmail_id: String,
    }

    /// `ops.bulk`: one batch of the bulk action (`ops_bulk_actions`).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct BulkBatch {
        pub action_id: Uuid,
    }

    /// `dispatch.notify`: the dispatch is in `dispatches`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct NotifyDispatch {
        pub dispatch_id: Uuid,
    }

    /// `dispatch.remind`: enqueued once per dispatch by the workers' sweep, when
    /// `DISPATCH_ACK_SECS` have passed.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RemindDispatch {
        pub dispatch_id: Uuid,
    }
}

/// A job kind's payload: what the api enqueues ([`NewJob::of`]) and the kind's
/// handler receives, decoded. The type names the kind, so the two cannot disagree.
pub trait Job:
    sealed::Registered + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static
{
    /// The kind: the `kind` column and the work queue `{prefix}.jobs.{KIND}`.
    const KIND: &'static str;

    /// The communication this job carries out, for a kind that carries one out
    /// (`delivers` in the list): when the job dies, the communication fails with it.
    fn delivers(&self) -> Option<Uuid> {
        None
    }
}

/// What travels over RabbitMQ: the job's id and everything a worker needs to run it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub job_id: Uuid,
    pub kind: String,
    pub payload: Value,
}

/// A job to be written in the caller's transaction.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: &'static str,
    pub payload: Value,
    pub communication_id: Option<Uuid>,
    pub customer_id: Option<CustomerId>,
}

impl NewJob {
    /// The job `job`, of its type's kind.
    pub fn of<J: Job>(job: &J) -> Self {
        Self::untyped(J::KIND, job)
    }

    /// A job of a kind with no payload type: only for the runtime's own tests, which
    /// send it what they like. Everything else uses [`NewJob::of`].
    pub fn untyped(kind: &'static str, payload: &impl Serialize) -> Self {
        Self {
            kind,
            // Serialising plain structs to a Value cannot fail.
            payload: serde_json::to_value(payload).unwrap_or(Value::Null),
            communication_id: None,
            customer_id: None,
        }
    }

    pub fn for_communication(mut self, id: Uuid) -> Self {
        self.communication_id = Some(id);
        self
    }

    pub fn for_customer(mut self, customer: &CustomerId) -> Self {
        self.customer_id = Some(customer.clone());
        self
    }
}

/// Writes the job in the caller's transaction: it is published only once that commits.
pub async fn enqueue(
    conn: &mut PgConnection,
    job: NewJob,
    max_attempts: i32,
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, max_attempts, communication_id, customer_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(job.kind)
    .bind(&job.payload)
    .bind(max_attempts)
    .bind(job.communication_id)
    .bind(job.customer_id.as_ref().map(CustomerId::as_str))
    .execute(conn)
    .await?;
    Ok(id)
}

/// The insert of new job rows beside a send's communications, in the same statement:
/// its parameters are arrays of the columns (id, kind, payload, max attempts,
/// communication, customer), numbered from `$first`.
pub(crate) fn insert_many_statement(first: usize) -> String {
    let types = ["uuid", "text", "jsonb", "int4", "uuid", "text"];
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    format!(
        "INSERT INTO jobs (id, kind, payload, max_attempts, communication_id, customer_id)
         SELECT * FROM unnest({})",
        arrays.join(", ")
    )
}

/// A job's states. `pending`: in the outbox; `queued`: on the broker; `retrying`:
/// waiting in a delay tier; the last three are final until an operator acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Queued,
    Running,
    Retrying,
    Succeeded,
    Dead,
    Cancelled,
}

crate::domain::text_column!(JobState, |raw| {
    JobState::parse(raw).ok_or_else(|| crate::domain::Invalid(format!("unknown job state {raw:?}")))
});

impl JobState {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "pending" => Self::Pending,
            "queued" => Self::Queued,
            "running" => Self::Running,
            "retrying" => Self::Retrying,
            "succeeded" => Self::Succeeded,
            "dead" => Self::Dead,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled)
    }
}

/// Why an attempt failed, as recorded in the ledger and filtered on by operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Worth retrying: timeouts, connection errors, 5xx, 429.
    Transient,
    /// Will never succeed as it is: validation errors, refused recipients, revoked access.
    Permanent,
    /// Transient failures until the attempts ran out.
    Exhausted,
    /// The message on the queue was not a job this system understands.
    Unparseable,
    /// The broker gave up: redelivered past the delivery limit (a worker died or hung on it).
    DeliveryLimit,
    /// Dead-lettered by the broker for another reason (rejected, expired, over length).
    Broker,
}

impl ErrorClass {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "transient" => Self::Transient,
            "permanent" => Self::Permanent,
            "exhausted" => Self::Exhausted,
            "unparseable" => Self::Unparseable,
            "delivery_limit" => Self::DeliveryLimit,
            "broker" => Self::Broker,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Exhausted => "exhausted",
            Self::Unparseable => "unparseable",
            Self::DeliveryLimit => "delivery_limit",
            Self::Broker => "broker",
        }
    }
}

/// The ledger row, as a worker sees it when it takes the job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub payload: Value,
    pub state: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub communication_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// `attempts` when an operator last replayed the job: the retry policy counts
    /// only the attempts after it.
    pub attempt_base: i32,
    /// Replays so far; a message of an earlier generation is a stale copy.
    pub generation: i32,
}

/// Takes the job's row lock for the rest of the transaction. A second delivery of the
/// same job waits here until the first is committed, then sees it finished.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(
        "SELECT id, kind, payload, state, attempts, max_attempts, communication_id, created_at,
                attempt_base, generation
         FROM jobs WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Takes the row locks of a batch of jobs in one statement, in id order (so two
/// batches that share jobs wait for each other rather than deadlock). Missing ids are
/// simply absent from the answer.
pub async fn lock_many(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(
        "SELECT id, kind, payload, state, attempts, max_attempts, communication_id, created_at,
                attempt_base, generation
         FROM jobs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// One row per try, keyed by (job, attempt): a retried commit cannot write it twice.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub job_id: Uuid,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub outcome: &'static str,
    pub error_class: Option<ErrorClass>,
    pub error: Option<&'a str>,
    pub retry_in_ms: Option<i64>,
    pub worker: &'a str,
    /// What the provider said, when the attempt called one.
    pub provider: ProviderReport,
}

/// A provider's answer to an attempt, kept on its attempt row for operators: the
/// provider's status word, its id for what we sent, and the HTTP status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderReport {
    pub status: Option<String>,
    pub id: Option<String>,
    pub http_status: Option<u16>,
}

pub async fn record_attempt(conn: &mut PgConnection, a: &Attempt<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO job_attempts (job_id, attempt, started_at, finished_at, outcome, error_class, error, retry_in_ms, worker,
                                   provider_status, provider_id, http_status)
         VALUES ($1, $2, $3, clock_timestamp(), $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (job_id, attempt) DO NOTHING",
    )
    .bind(a.job_id)
    .bind(a.attempt)
    .bind(a.started_at)
    .bind(a.outcome)
    .bind(a.error_class.map(ErrorClass::as_str))
    .bind(a.error)
    .bind(a.retry_in_ms)
    .bind(a.worker)
    .bind(a.provider.status.as_deref())
    .bind(a.provider.id.as_deref())
    .bind(a.provider.http_status.map(|s| s as i16))
    .execute(conn)
    .await?;
    Ok(())
}

/// The outcome of a first attempt that succeeded finding nothing to do (a poll of an
/// idle mailbox or call log): [`record_successes`] marks its job succeeded and `idle`,
/// with no attempt row. Operators' views leave idle jobs out, and retention removes
/// them after [`IDLE_RETENTION`]. The row stays meanwhile, so that a second copy of the
/// job's broker message finds it finished (not an orphan).
pub const IDLE: &str = "idle";

/// How long an idle poll's row is kept: longer than any copy of its message can wait.
pub const IDLE_RETENTION: std::time::Duration = std::time::Duration::from_secs(600);

/// Records succeeded attempts and marks their jobs succeeded, however many, in one
/// statement (one round trip): a batch's successes, or a single job's. [`IDLE`] ones
/// are marked idle and get no attempt row.
pub async fn record_successes(conn: &mut PgConnection, done: &[Attempt<'_>]) -> sqlx::Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Attempt<'_>) -> Option<String>| done.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Uuid> = done.iter().map(|a| a.job_id).collect();
    let attempts: Vec<i32> = done.iter().map(|a| a.attempt).collect();
    let idle: Vec<bool> = done.iter().map(|a| a.outcome == IDLE).collect();
    let started: Vec<DateTime<Utc>> = done.iter().map(|a| a.started_at).collect();
    let http_status: Vec<Option<i16>> = done
        .iter()
        .map(|a| a.provider.http_status.map(|s| s as i16))
        .collect();
    sqlx::query(
        "WITH attempt AS (
            INSERT INTO job_attempts (job_id, attempt, started_at, finished_at, outcome, worker,
                                      provider_status, provider_id, http_status)
            SELECT id, attempt, started_at, clock_timestamp(), 'succeeded', worker,
                   provider_status, provider_id, http_status
            FROM unnest($1::uuid[], $2::int4[], $3::timestamptz[], $4::text[], $5::text[],
                        $6::text[], $7::int2[], $8::bool[])
                 AS a(id, attempt, started_at, worker, provider_status, provider_id, http_status,
                      idle)
            WHERE NOT idle
            ON CONFLICT (job_id, attempt) DO NOTHING
         )
         UPDATE jobs SET state = 'succeeded', attempts = done.attempt, next_attempt_at = NULL,
                updated_at = now(), finished_at = now(), idle = done.idle
         FROM unnest($1::uuid[], $2::int4[], $8::bool[]) AS done(id, attempt, idle)
         WHERE jobs.id = done.id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&started)
    .bind(column(|a| Some(a.worker.to_owned())))
    .bind(column(|a| a.provider.status.clone()))
    .bind(column(|a| a.provider.id.clone()))
    .bind(&http_status)
    .bind(&idle)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_retrying(
    conn: &mut PgConnection,
    id: Uuid,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'retrying', attempts = $2, next_attempt_at = $3,
                last_error = $4, last_error_class = 'transient', updated_at = now(),
                first_failed_at = COALESCE(first_failed_at, now()), last_failed_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(attempts)
    .bind(next_attempt_at)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_dead(
    conn: &mut PgConnection,
    id: Uuid,
    attempts: i32,
    class: ErrorClass,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'dead', attempts = $2, next_attempt_at = NULL,
                last_error = $4, last_error_class = $3, updated_at = now(), finished_at = now(),
                first_failed_at = COALESCE(first_failed_at, now()), last_failed_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(attempts)
    .bind(class.as_str())
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// The broker dead-lettered the job: its death history (`x-death`) is kept beside the
/// state [`mark_dead`] wrote.
pub async fn record_broker_death(
    conn: &mut PgConnection,
    id: Uuid,
    death: &Value,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE jobs SET broker_death = $2 WHERE id = $1")
        .bind(id)
        .bind(death)
        .execute(conn)
        .await?;
    Ok(())
}

/// The relay's half of the outbox: jobs the broker confirmed are `queued` (a row an
/// operator replayed meanwhile is `pending` again and keeps that state).
pub async fn mark_published(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'queued', queued_at = now(), updated_at = now()
         WHERE id = ANY($1) AND state = 'pending'",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
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

    pub fn audit_name(self, bulk: bool) -> &'static str {
        match (self, bulk) {
            (Self::Replay, false) => "replay",
            (Self::Discard, false) => "discard",
            (Self::Replay, true) => "bulk_replay",
            (Self::Discard, true) => "bulk_discard",
        }
    }
}

/// A job an action moved.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActedOn {
    pub id: Uuid,
    pub kind: String,
    pub communication_id: Option<Uuid>,
}

/// Acts on up to `limit` eligible jobs that `pick` selects (it pushes `AND …`
/// conditions over `jobs`), in one statement: takes their row locks, skipping rows
/// someone else holds (another action, a running attempt), writes their new state and
/// an audit entry each. Returns the jobs acted on, in id order.
pub async fn act(
    conn: &mut PgConnection,
    action: Action,
    pick: impl FnOnce(&mut sqlx::QueryBuilder<'_, sqlx::Postgres>),
    audit: &Audit<'_>,
    limit: i64,
) -> sqlx::Result<Vec<ActedOn>> {
    let mut q = sqlx::QueryBuilder::new(
        "WITH picked AS (
             SELECT id, state AS previous_state, last_error AS previous_error,
                    last_error_class AS previous_error_class
             FROM jobs WHERE TRUE",
    );
    pick(&mut q);
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
    .push_bind(audit.operator.to_owned())
    .push(", ")
    .push_bind(action.as_str())
    .push(", id, ")
    .push_bind(audit.action_id)
    .push(", ")
    .push_bind(audit.reason.to_owned())
    .push(
        ", previous_state, previous_error, previous_error_class FROM acted)
         SELECT id, kind, communication_id FROM acted ORDER BY id",
    );
    q.build_query_as().fetch_all(conn).await
}

/// Who acted and why, for the audit entry of each job acted on.
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    pub operator: &'a str,
    pub reason: &'a str,
    /// The bulk action this is a batch of.
    pub action_id: Option<Uuid>,
}

/// The rescuer's write: up to `limit` jobs whose broker message is overdue by more
/// than `margin` (`queued` that long, or `retrying` that long past `next_attempt_at`)
/// go back to `pending` with a new generation, keeping their attempts, each with an
/// audit entry by `rescuer` saying how overdue it was. Rows being run are locked, and
/// skipped. Returns the jobs put back, in id order.
pub async fn put_back_overdue(
    conn: &mut PgConnection,
    margin: std::time::Duration,
    limit: i64,
    rescuer: &str,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
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
    .bind(rescuer)
    .fetch_all(conn)
    .await
}

/// Retention: deletes up to `limit` succeeded or cancelled jobs that finished more
/// than `older_than` ago (idle polls: [`IDLE_RETENTION`], when shorter; their attempts
/// go with them); returns how many went. Dead jobs stay until an operator acts.
pub async fn delete_finished(
    pool: &sqlx::PgPool,
    older_than: std::time::Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM jobs WHERE id IN (
             SELECT id FROM jobs
             WHERE state IN ('succeeded', 'cancelled')
               AND finished_at < now() - make_interval(secs =>
                   CASE WHEN idle THEN least($1, $3) ELSE $1 END)
             LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .bind(IDLE_RETENTION.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}

/// Records a message the broker or a worker could not tie to a ledger row (it did not
/// parse, or names no known job) as a dead job of its own, raw payload kept, so
/// operators still find it in the one place they look.
pub async fn record_orphan(
    conn: &mut PgConnection,
    kind: &str,
    raw_payload: &[u8],
    class: ErrorClass,
    error: &str,
    broker_death: Option<&Value>,
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    let payload = storable_payload(raw_payload);
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, state, max_attempts, last_error, last_error_class,
                           broker_death, first_failed_at, last_failed_at, finished_at)
         VALUES ($1, $2, $3, 'dead', 0, $4, $5, $6, now(), now(), now())",
    )
    .bind(id)
    .bind(kind)
    .bind(payload)
    .bind(error)
    .bind(class.as_str())
    .bind(broker_death)
    .execute(conn)
    .await?;
    Ok(id)
}

/// A payload PostgreSQL can store as `jsonb`: the JSON itself when it parses, else the
/// bytes as text (NUL, which `jsonb` refuses, shown as U+FFFD) and exactly, in base64.
fn storable_payload(raw: &[u8]) -> Value {
    use base64::{Engine, engine::general_purpose::STANDARD};
    match serde_json::from_slice::<Value>(raw) {
        Ok(value) if !value.to_string().contains("\\u0000") => value,
        _ => serde_json::json!({
            "raw": String::from_utf8_lossy(raw).replace('\0', "\u{FFFD}"),
            "raw_base64": STANDARD.encode(raw),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_with_nul_are_kept_exactly_but_storably() {
        let stored = storable_payload(b"\x00not json");
        assert_eq!(stored["raw"], "\u{FFFD}not json");
        assert_eq!(stored["raw_base64"], "AG5vdCBqc29u");
        let stored = storable_payload(br#"{"a": "x\u0000y"}"#);
        assert!(stored.get("raw_base64").is_some());
        let stored = storable_payload(br#"{"a": 1}"#);
        assert_eq!(stored, serde_json::json!({"a": 1}));
    }
}
