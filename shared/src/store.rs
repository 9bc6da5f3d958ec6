//! Repository functions over the domain tables, each taking an executor so callers
//! choose the transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{CommunicationStatus, CommunicationType, ConversationStatus, CustomerId};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Communication {
    pub id: Uuid,
    pub customer_id: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub communication_type: String,
    pub direction: String,
    pub sender_id: String,
    pub sender_role: String,
    pub subject: Option<String>,
    pub message: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub attachments: Value,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    /// SMS, email and calls: the other party (E.164 number or address) and our own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    /// What the provider calls it and says of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_thread_id: Option<String>,
    /// Email: our Message-ID and the ones it replies to (space-separated `references`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rfc822_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    /// Calls: how long, and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
}

impl Communication {
    pub fn status(&self) -> CommunicationStatus {
        CommunicationStatus::parse(&self.status).unwrap_or(CommunicationStatus::Failed)
    }
}

pub const COMMUNICATION_COLUMNS: &str = "id, customer_id, type, direction, sender_id, sender_role, subject, message,
    status, failure_reason, attachments, metadata, created_at, updated_at, sent_at, delivered_at, read_at,
    remote_address, local_address, provider_message_id, provider_status, provider_thread_id,
    rfc822_message_id, in_reply_to, \"references\", duration_seconds, occurred_at";

#[derive(Debug, Clone)]
pub struct NewCommunication<'a> {
    pub id: Uuid,
    pub customer_id: &'a CustomerId,
    pub communication_type: CommunicationType,
    pub direction: &'static str,
    pub sender_id: &'a str,
    pub sender_role: &'a str,
    pub subject: Option<&'a str>,
    pub message: &'a str,
    pub attachments: Value,
}

pub async fn insert_communication(
    conn: &mut PgConnection,
    c: &NewCommunication<'_>,
) -> sqlx::Result<Communication> {
    sqlx::query_as(&format!(
        "INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role, subject, message, attachments)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         RETURNING {COMMUNICATION_COLUMNS}"
    ))
    .bind(c.id)
    .bind(c.customer_id.as_str())
    .bind(c.communication_type.as_str())
    .bind(c.direction)
    .bind(c.sender_id)
    .bind(c.sender_role)
    .bind(c.subject)
    .bind(c.message)
    .bind(&c.attachments)
    .fetch_one(conn)
    .await
}

pub async fn find_communication(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<Communication>> {
    sqlx::query_as(&format!(
        "SELECT {COMMUNICATION_COLUMNS} FROM communications WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Moves a communication's status forward, never back: `queued → sent → delivered →
/// read`, and `failed` from anything but `read` (a message read cannot fail). Returns
/// the previous status when it moved, `None` when the move would go backwards or
/// sideways (a late receipt).
pub async fn advance_status(
    conn: &mut PgConnection,
    id: Uuid,
    to: CommunicationStatus,
    reason: Option<&str>,
) -> sqlx::Result<Option<CommunicationStatus>> {
    // The rank comparison lives in SQL so the check and the write are one statement.
    let previous: Option<String> = sqlx::query_scalar(
        "WITH current AS (SELECT status FROM communications WHERE id = $1 FOR UPDATE)
         UPDATE communications c SET
             status = $2,
             failure_reason = CASE WHEN $2 = 'failed' THEN $3 ELSE NULL END,
             updated_at = now(),
             sent_at = CASE WHEN $2 IN ('sent', 'delivered', 'read') THEN COALESCE(c.sent_at, now()) ELSE c.sent_at END,
             delivered_at = CASE WHEN $2 IN ('delivered', 'read') THEN COALESCE(c.delivered_at, now()) ELSE c.delivered_at END,
             read_at = CASE WHEN $2 = 'read' THEN COALESCE(c.read_at, now()) ELSE c.read_at END
         FROM current
         WHERE c.id = $1
           AND current.status <> 'failed'
           AND array_position(ARRAY['queued','sent','delivered','read','failed'], current.status)
             < array_position(ARRAY['queued','sent','delivered','read','failed'], $2::text)
           AND NOT ($2 = 'failed' AND current.status = 'read')
         RETURNING current.status",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(reason)
    .fetch_optional(conn)
    .await?;
    Ok(previous.and_then(|p| CommunicationStatus::parse(&p).ok()))
}

#[derive(Debug, Clone, Default)]
pub struct CommunicationFilter {
    pub customer_id: Option<CustomerId>,
    pub communication_type: Option<CommunicationType>,
    /// Strictly older than this (created_at, id): the cursor of the previous page.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// Newest first, keyset-paginated on (created_at, id).
pub async fn list_communications(
    pool: &PgPool,
    f: &CommunicationFilter,
) -> sqlx::Result<Vec<Communication>> {
    sqlx::query_as(&format!(
        "SELECT {COMMUNICATION_COLUMNS} FROM communications
         WHERE ($1::text IS NULL OR customer_id = $1)
           AND ($2::text IS NULL OR type = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC
         LIMIT $5"
    ))
    .bind(f.customer_id.as_ref().map(CustomerId::as_str))
    .bind(f.communication_type.map(CommunicationType::as_str))
    .bind(f.before.map(|b| b.0))
    .bind(f.before.map(|b| b.1).unwrap_or_default())
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Conversation {
    pub customer_id: String,
    pub status: String,
    pub updated_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn find_conversation(
    conn: &mut PgConnection,
    customer: &CustomerId,
) -> sqlx::Result<Option<Conversation>> {
    sqlx::query_as(
        "SELECT customer_id, status, updated_by, created_at, updated_at FROM conversations WHERE customer_id = $1",
    )
    .bind(customer.as_str())
    .fetch_optional(conn)
    .await
}

/// Sets the conversation's status; returns whether it changed (a repeat is a no-op).
pub async fn set_conversation_status(
    conn: &mut PgConnection,
    customer: &CustomerId,
    status: ConversationStatus,
    by: &str,
) -> sqlx::Result<bool> {
    let changed = sqlx::query(
        "INSERT INTO conversations (customer_id, status, updated_by) VALUES ($1, $2, $3)
         ON CONFLICT (customer_id) DO UPDATE
             SET status = EXCLUDED.status, updated_by = EXCLUDED.updated_by, updated_at = now()
             WHERE conversations.status <> EXCLUDED.status",
    )
    .bind(customer.as_str())
    .bind(status.as_str())
    .bind(by)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Opens the conversation if it does not exist yet (the first message starts it).
pub async fn ensure_conversation(
    conn: &mut PgConnection,
    customer: &CustomerId,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO conversations (customer_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(customer.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// A file record, as the API shows it and the `file.process` job works on it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FileRecord {
    pub id: Uuid,
    pub customer_id: String,
    pub communication_id: Option<Uuid>,
    pub uploaded_by: String,
    pub original_name: String,
    pub stored_name: String,
    pub file_size: i64,
    pub file_type: String,
    pub file_category: String,
    #[serde(skip)]
    pub staging_key: Option<String>,
    pub sha256: Option<String>,
    pub status: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// From the blob, once processed.
    #[serde(skip)]
    pub storage_key: Option<String>,
    #[serde(skip)]
    pub thumbnail_key: Option<String>,
    #[serde(skip)]
    pub thumbnail_type: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
}

const FILE_SELECT: &str =
    "SELECT f.id, f.customer_id, f.communication_id, f.uploaded_by, f.original_name,
    f.stored_name, f.file_size, f.file_type, f.file_category, f.staging_key, f.sha256, f.status,
    f.failure_reason, f.created_at, f.updated_at, b.storage_key, b.thumbnail_key, b.thumbnail_type,
    b.width, b.height
    FROM file_attachments f LEFT JOIN blobs b ON b.sha256 = f.sha256";

#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub id: Uuid,
    pub customer_id: &'a CustomerId,
    pub communication_id: Option<Uuid>,
    pub uploaded_by: &'a str,
    pub original_name: &'a str,
    pub stored_name: &'a str,
    pub file_size: i64,
    pub file_type: &'a str,
    pub file_category: &'a str,
    pub staging_key: &'a str,
}

pub async fn insert_file(conn: &mut PgConnection, f: &NewFile<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO file_attachments (id, customer_id, communication_id, uploaded_by, original_name,
             stored_name, file_size, file_type, file_category, staging_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(f.id)
    .bind(f.customer_id.as_str())
    .bind(f.communication_id)
    .bind(f.uploaded_by)
    .bind(f.original_name)
    .bind(f.stored_name)
    .bind(f.file_size)
    .bind(f.file_type)
    .bind(f.file_category)
    .bind(f.staging_key)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find_file(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<FileRecord>> {
    sqlx::query_as(&format!("{FILE_SELECT} WHERE f.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The customer's files among `ids` (others' files are not returned).
pub async fn find_customer_files(
    conn: &mut PgConnection,
    customer: &CustomerId,
    ids: &[Uuid],
) -> sqlx::Result<Vec<FileRecord>> {
    sqlx::query_as(&format!(
        "{FILE_SELECT} WHERE f.id = ANY($1) AND f.customer_id = $2"
    ))
    .bind(ids)
    .bind(customer.as_str())
    .fetch_all(conn)
    .await
}

pub async fn find_file_by_stored_name(
    conn: &mut PgConnection,
    name: &str,
) -> sqlx::Result<Option<FileRecord>> {
    sqlx::query_as(&format!("{FILE_SELECT} WHERE f.stored_name = $1"))
        .bind(name)
        .fetch_optional(conn)
        .await
}

/// Locks the file's row for the rest of the transaction (the `file.process` job).
pub async fn lock_file(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<FileRecord>> {
    sqlx::query("SELECT 1 FROM file_attachments WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    find_file(conn, id).await
}

/// The stored copy of some content.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Blob {
    pub sha256: String,
    pub storage_key: String,
    pub size: i64,
    pub file_type: String,
    pub thumbnail_key: Option<String>,
    pub thumbnail_type: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
}

/// Records `candidate` as the stored copy of its content unless one exists already;
/// returns the blob that holds the content either way (dedup, race-free).
pub async fn claim_blob(conn: &mut PgConnection, candidate: &Blob) -> sqlx::Result<Blob> {
    sqlx::query(
        "INSERT INTO blobs (sha256, storage_key, size, file_type, thumbnail_key, thumbnail_type, width, height)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&candidate.sha256)
    .bind(&candidate.storage_key)
    .bind(candidate.size)
    .bind(&candidate.file_type)
    .bind(&candidate.thumbnail_key)
    .bind(&candidate.thumbnail_type)
    .bind(candidate.width)
    .bind(candidate.height)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        "SELECT sha256, storage_key, size, file_type, thumbnail_key, thumbnail_type, width, height
         FROM blobs WHERE sha256 = $1",
    )
    .bind(&candidate.sha256)
    .fetch_one(conn)
    .await
}

pub async fn find_blob(conn: &mut PgConnection, sha256: &str) -> sqlx::Result<Option<Blob>> {
    sqlx::query_as(
        "SELECT sha256, storage_key, size, file_type, thumbnail_key, thumbnail_type, width, height
         FROM blobs WHERE sha256 = $1",
    )
    .bind(sha256)
    .fetch_optional(conn)
    .await
}

/// The file now points at its content's blob and is ready.
pub async fn mark_file_ready(
    conn: &mut PgConnection,
    id: Uuid,
    sha256: &str,
    size: i64,
    file_type: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE file_attachments SET status = 'ready', sha256 = $2, file_size = $3, file_type = $4,
             staging_key = NULL, failure_reason = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(sha256)
    .bind(size)
    .bind(file_type)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_file_failed(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
) -> sqlx::Result<bool> {
    let changed = sqlx::query(
        "UPDATE file_attachments SET status = 'failed', failure_reason = $2, updated_at = now()
         WHERE id = $1 AND status = 'processing'",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed > 0)
}
