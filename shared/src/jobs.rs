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

/// The job kinds this system runs; each has its own work queue (`{prefix}.jobs.{kind}`).
pub mod kinds {
    /// Deliver an in-app message to the other party.
    pub const MESSAGE_DELIVER: &str = "message.deliver";
    /// Apply a delivered or read receipt to a communication.
    pub const RECEIPT_APPLY: &str = "receipt.apply";
    /// Open, close or archive a customer's conversation.
    pub const CONVERSATION_STATUS: &str = "conversation.status";

    /// Hash, sniff, deduplicate and thumbnail an uploaded file.
    pub const FILE_PROCESS: &str = "file.process";
    /// Delete a stored object nothing refers to any more (a deduplicated upload).
    pub const BLOB_DELETE: &str = "blob.delete";

    /// Send an SMS or MMS through RingCentral.
    pub const SMS_SEND: &str = "sms.send";
    /// Send an email through Gmail.
    pub const EMAIL_SEND: &str = "email.send";
    /// Finish a phone call logged by staff: match it with RingCentral's call log.
    pub const CALL_LOG: &str = "call.log";
    /// Act on a notification RingCentral posted to our webhook.
    pub const RINGCENTRAL_EVENT: &str = "ringcentral.event";
    /// Pull RingCentral's call log since the last import into phone communications.
    pub const CALL_LOG_IMPORT: &str = "call_log.import";

    /// One batch of an operator's bulk replay or discard (`ops::run_bulk_batch`).
    pub const OPS_BULK: &str = "ops.bulk";

    /// Read what came into the Gmail mailbox since the last sync; one `email.file` each.
    pub const EMAIL_SYNC: &str = "email.sync";
    /// File one inbound email: match it to a customer, record it, announce it.
    pub const EMAIL_FILE: &str = "email.file";

    /// Tell a dispatched crew: `dispatch.new` to its members, an SMS to those offline.
    pub const DISPATCH_NOTIFY: &str = "dispatch.notify";
    /// Text the members who were connected but have not acknowledged in time.
    pub const DISPATCH_REMIND: &str = "dispatch.remind";

    pub const ALL: &[&str] = &[
        MESSAGE_DELIVER,
        RECEIPT_APPLY,
        CONVERSATION_STATUS,
        FILE_PROCESS,
        BLOB_DELETE,
        SMS_SEND,
        EMAIL_SEND,
        CALL_LOG,
        RINGCENTRAL_EVENT,
        CALL_LOG_IMPORT,
        OPS_BULK,
        DISPATCH_NOTIFY,
        DISPATCH_REMIND,
        EMAIL_SYNC,
        EMAIL_FILE,
    ];
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

    impl Job for DeliverMessage {
        const KIND: &'static str = kinds::MESSAGE_DELIVER;
    }
    impl Job for ApplyReceipt {
        const KIND: &'static str = kinds::RECEIPT_APPLY;
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

    impl Job for SyncMailbox {
        const KIND: &'static str = kinds::EMAIL_SYNC;
    }
    impl Job for FileEmail {
        const KIND: &'static str = kinds::EMAIL_FILE;
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

    impl Job for NotifyDispatch {
        const KIND: &'static str = kinds::DISPATCH_NOTIFY;
    }
    impl Job for RemindDispatch {
        const KIND: &'static str = kinds::DISPATCH_REMIND;
    }
    impl Job for SetConversationStatus {
        const KIND: &'static str = kinds::CONVERSATION_STATUS;
    }
    impl Job for ProcessFile {
        const KIND: &'static str = kinds::FILE_PROCESS;
    }
    impl Job for DeleteBlob {
        const KIND: &'static str = kinds::BLOB_DELETE;
    }
    impl Job for SendSms {
        const KIND: &'static str = kinds::SMS_SEND;
    }
    impl Job for SendEmail {
        const KIND: &'static str = kinds::EMAIL_SEND;
    }
    impl Job for LogCall {
        const KIND: &'static str = kinds::CALL_LOG;
    }
    impl Job for RingCentralEvent {
        const KIND: &'static str = kinds::RINGCENTRAL_EVENT;
    }
    impl Job for ImportCallLog {
        const KIND: &'static str = kinds::CALL_LOG_IMPORT;
    }
}

/// A job kind's payload: what the api enqueues ([`NewJob::of`]) and the kind's
/// handler receives, decoded. The type names the kind, so the two cannot disagree.
pub trait Job: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// The kind: the `kind` column and the work queue `{prefix}.jobs.{KIND}`.
    const KIND: &'static str;
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
    static INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_statement(1));
    let id = Uuid::now_v7();
    sqlx::query(&INSERT)
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

/// The insert of a new job row, its parameters (id, kind, payload, max attempts,
/// communication, customer) numbered from `$first`: [`enqueue`]'s, and the one a
/// send's communication insert carries in the same statement.
pub(crate) fn insert_statement(first: usize) -> String {
    let params: Vec<String> = (first..first + 6).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO jobs (id, kind, payload, max_attempts, communication_id, customer_id)
         VALUES ({})",
        params.join(", ")
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

/// Records succeeded attempts and marks their jobs succeeded, however many, in one
/// statement (one round trip): a batch's successes, or a single job's.
pub async fn record_successes(conn: &mut PgConnection, done: &[Attempt<'_>]) -> sqlx::Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Attempt<'_>) -> Option<String>| done.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Uuid> = done.iter().map(|a| a.job_id).collect();
    let attempts: Vec<i32> = done.iter().map(|a| a.attempt).collect();
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
                        $6::text[], $7::int2[])
                 AS a(id, attempt, started_at, worker, provider_status, provider_id, http_status)
            ON CONFLICT (job_id, attempt) DO NOTHING
         )
         UPDATE jobs SET state = 'succeeded', attempts = done.attempt, next_attempt_at = NULL,
                updated_at = now(), finished_at = now()
         FROM unnest($1::uuid[], $2::int4[]) AS done(id, attempt)
         WHERE jobs.id = done.id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&started)
    .bind(column(|a| Some(a.worker.to_owned())))
    .bind(column(|a| a.provider.status.clone()))
    .bind(column(|a| a.provider.id.clone()))
    .bind(&http_status)
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
