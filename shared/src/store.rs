//! Repository functions over the domain tables, each taking an executor so callers
//! choose the transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{
    CommunicationStatus, CommunicationType, ConversationStatus, CustomerId, Direction, Visibility,
};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Communication {
    pub id: Uuid,
    pub customer_id: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub communication_type: CommunicationType,
    pub direction: Direction,
    pub sender_id: String,
    pub sender_role: String,
    pub subject: Option<String>,
    pub message: String,
    pub status: CommunicationStatus,
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
    /// Who posted the read receipt.
    pub read_by: Option<String>,
    pub edited_at: Option<DateTime<Utc>>,
    /// A deleted message is kept as a tombstone: its text and files are not shown.
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<String>,
    /// Rendered from this template, at this version.
    pub template_id: Option<Uuid>,
    pub template_version: Option<i32>,
    /// The project (a job at the customer's site) it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    /// `internal`: staff and the project's crew only.
    pub visibility: Visibility,
    /// The SMS or email this unread in-app message went on in (shown as `fallback`).
    #[serde(skip)]
    pub fallback_id: Option<Uuid>,
    #[serde(skip)]
    pub fallback_channel: Option<String>,
}

pub const COMMUNICATION_COLUMNS: &str = "id, customer_id, type, direction, sender_id, sender_role, subject, message,
    status, failure_reason, attachments, metadata, created_at, updated_at, sent_at, delivered_at, read_at,
    remote_address, local_address, provider_message_id, provider_status, provider_thread_id,
    rfc822_message_id, in_reply_to, \"references\", duration_seconds, occurred_at, read_by, edited_at,
    deleted_at, deleted_by, template_id, template_version, project_id, visibility, fallback_id,
    fallback_channel";

/// A communication as the api accepts it: every column a send can set.
#[derive(Debug, Clone)]
pub struct NewCommunication<'a> {
    pub id: Uuid,
    pub customer_id: &'a CustomerId,
    pub communication_type: CommunicationType,
    pub direction: Direction,
    pub sender_id: &'a str,
    pub sender_role: &'a str,
    pub subject: Option<&'a str>,
    pub message: &'a str,
    pub attachments: Value,
    pub metadata: Value,
    /// SMS, email, calls: the other party, and our own number or mailbox.
    pub remote_address: Option<&'a str>,
    pub local_address: Option<&'a str>,
    /// Email: our Message-ID, the Gmail thread, and the ids it answers.
    pub rfc822_message_id: Option<&'a str>,
    pub provider_thread_id: Option<&'a str>,
    pub in_reply_to: Option<&'a str>,
    pub references: Option<&'a str>,
    /// Calls: how long, and when.
    pub duration_seconds: Option<i32>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub template_id: Option<Uuid>,
    pub template_version: Option<i32>,
    pub project_id: Option<Uuid>,
    pub visibility: Visibility,
}

/// Inserts the communication and the job that carries it out, in one statement (one
/// round trip, atomic on its own); answers the row and the job's id.
pub async fn insert_communication(
    conn: &mut PgConnection,
    c: &NewCommunication<'_>,
    job: crate::jobs::NewJob,
    max_attempts: i32,
) -> sqlx::Result<(Communication, Uuid)> {
    let job_id = Uuid::now_v7();
    let communication = sqlx::query_as(&format!(
        r#"WITH job AS ({})
           INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role, subject,
               message, attachments, metadata, remote_address, local_address, rfc822_message_id,
               provider_thread_id, in_reply_to, "references", duration_seconds, occurred_at,
               template_id, template_version, project_id, visibility)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                   $21, $22)
           RETURNING {COMMUNICATION_COLUMNS}"#,
        crate::jobs::insert_statement(23)
    ))
    .bind(c.id)
    .bind(c.customer_id.as_str())
    .bind(c.communication_type.as_str())
    .bind(c.direction.as_str())
    .bind(c.sender_id)
    .bind(c.sender_role)
    .bind(c.subject)
    .bind(c.message)
    .bind(&c.attachments)
    .bind(&c.metadata)
    .bind(c.remote_address)
    .bind(c.local_address)
    .bind(c.rfc822_message_id)
    .bind(c.provider_thread_id)
    .bind(c.in_reply_to)
    .bind(c.references)
    .bind(c.duration_seconds)
    .bind(c.occurred_at)
    .bind(c.template_id)
    .bind(c.template_version)
    .bind(c.project_id)
    .bind(c.visibility)
    .bind(job_id)
    .bind(job.kind)
    .bind(&job.payload)
    .bind(max_attempts)
    .bind(job.communication_id)
    .bind(job.customer_id.as_ref().map(CustomerId::as_str))
    .fetch_one(conn)
    .await?;
    Ok((communication, job_id))
}

/// An email that came into the mailbox, as it is filed in a customer's conversation.
#[derive(Debug, Clone)]
pub struct InboundEmail<'a> {
    pub customer_id: &'a str,
    pub gmail_id: &'a str,
    pub thread_id: &'a str,
    /// With angle brackets, as `rfc822_message_id` keeps them.
    pub message_id: Option<&'a str>,
    pub sender: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    pub in_reply_to: Option<&'a str>,
    /// Space-separated.
    pub references: Option<&'a str>,
    pub received_at: DateTime<Utc>,
    /// Our mailbox: the local address.
    pub mailbox: &'a str,
}

/// Files an inbound email (`delivered`: it is here); `None` if this Gmail message was
/// filed before.
pub async fn insert_inbound_email(
    conn: &mut PgConnection,
    e: &InboundEmail<'_>,
) -> sqlx::Result<Option<Communication>> {
    sqlx::query_as(&format!(
        "INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role,
             subject, message, status, remote_address, local_address,
             provider_message_id, provider_thread_id, rfc822_message_id, in_reply_to,
             \"references\", occurred_at, sent_at, delivered_at)
         VALUES ($1, $2, 'email', 'inbound', $3, 'customer', $4, $5, 'delivered', $3, $6,
                 $7, $8, $9, $10, $11, $12, $12, now())
         ON CONFLICT (type, provider_message_id) WHERE provider_message_id IS NOT NULL DO NOTHING
         RETURNING {COMMUNICATION_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(e.customer_id)
    .bind(e.sender)
    .bind(e.subject)
    .bind(e.text)
    .bind(e.mailbox)
    .bind(e.gmail_id)
    .bind(e.thread_id)
    .bind(e.message_id)
    .bind(e.in_reply_to)
    .bind(e.references)
    .bind(e.received_at)
    .fetch_optional(conn)
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
    advance_status_by(conn, id, to, reason, None).await
}

/// [`advance_status`], naming who moved it: a read receipt keeps its reader (`read_by`).
pub async fn advance_status_by(
    conn: &mut PgConnection,
    id: Uuid,
    to: CommunicationStatus,
    reason: Option<&str>,
    by: Option<&str>,
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
             read_at = CASE WHEN $2 = 'read' THEN COALESCE(c.read_at, now()) ELSE c.read_at END,
             read_by = CASE WHEN $2 = 'read' THEN COALESCE(c.read_by, $4) ELSE c.read_by END
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
    .bind(by)
    .fetch_optional(conn)
    .await?;
    Ok(previous.and_then(|p| CommunicationStatus::parse(&p).ok()))
}

#[derive(Debug, Clone, Default)]
pub struct CommunicationFilter {
    pub customer_id: Option<CustomerId>,
    pub communication_type: Option<CommunicationType>,
    pub project_id: Option<Uuid>,
    /// Leave out internal notes (a customer's listing).
    pub public_only: bool,
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
           AND ($6::uuid IS NULL OR project_id = $6)
           AND (NOT $7 OR visibility = 'public')
         ORDER BY created_at DESC, id DESC
         LIMIT $5"
    ))
    .bind(f.customer_id.as_ref().map(CustomerId::as_str))
    .bind(f.communication_type.map(CommunicationType::as_str))
    .bind(f.before.map(|b| b.0))
    .bind(f.before.map(|b| b.1).unwrap_or_default())
    .bind(f.limit)
    .bind(f.project_id)
    .bind(f.public_only)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Conversation {
    pub customer_id: String,
    pub status: ConversationStatus,
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

/// What an edit or a delete did to an in-app message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    Edit { message: &'a str },
    Delete,
}

/// Edits or deletes the (locked) communication, keeping what it said before in
/// `communication_edits`; returns the row as it now is.
pub async fn change_message(
    conn: &mut PgConnection,
    before: &Communication,
    change: Change<'_>,
    by_user: &str,
    by_role: &str,
) -> sqlx::Result<Communication> {
    let action = match change {
        Change::Edit { .. } => "edit",
        Change::Delete => "delete",
    };
    sqlx::query(
        "INSERT INTO communication_edits (communication_id, action, previous_message, previous_attachments, by_user, by_role)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(before.id)
    .bind(action)
    .bind(&before.message)
    .bind(&before.attachments)
    .bind(by_user)
    .bind(by_role)
    .execute(&mut *conn)
    .await?;
    let (message, deleting) = match change {
        Change::Edit { message } => (Some(message), false),
        Change::Delete => (None, true),
    };
    sqlx::query_as(&format!(
        "UPDATE communications SET
             message = CASE WHEN $3 THEN '' ELSE coalesce($2, message) END,
             attachments = CASE WHEN $3 THEN '[]'::jsonb ELSE attachments END,
             edited_at = CASE WHEN $3 THEN edited_at ELSE now() END,
             deleted_at = CASE WHEN $3 THEN now() ELSE deleted_at END,
             deleted_by = CASE WHEN $3 THEN $4 ELSE deleted_by END,
             updated_at = now()
         WHERE id = $1
         RETURNING {COMMUNICATION_COLUMNS}"
    ))
    .bind(before.id)
    .bind(message)
    .bind(deleting)
    .bind(by_user)
    .fetch_one(conn)
    .await
}

/// Locks the communication's row for the rest of the transaction.
pub async fn lock_communication(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<Communication>> {
    sqlx::query_as(&format!(
        "SELECT {COMMUNICATION_COLUMNS} FROM communications WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// One row of the conversation list: the conversation, its latest message and what
/// the caller has not read.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationSummary {
    pub customer_id: String,
    pub status: String,
    pub updated_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The latest message's time, or the conversation's creation: the sort key.
    pub activity_at: DateTime<Utc>,
    pub last_id: Option<Uuid>,
    pub last_type: Option<String>,
    pub last_direction: Option<String>,
    pub last_message: Option<String>,
    pub last_subject: Option<String>,
    pub last_created_at: Option<DateTime<Utc>>,
    pub last_deleted: Option<bool>,
    pub unread_count: i64,
}

#[derive(Debug, Clone)]
pub struct ConversationListing<'a> {
    pub status: Option<ConversationStatus>,
    pub customer_id: Option<&'a CustomerId>,
    /// Unread are the messages that went this way and are not read: inbound for
    /// staff, outbound for a customer.
    pub unread_direction: Direction,
    /// Strictly older activity than this (activity_at, customer_id): the cursor.
    pub before: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

/// Newest activity first, keyset-paginated; the order is the `conversations_activity`
/// index's, and each row's unread count is one probe of `communications_unread`.
pub async fn list_conversations(
    conn: &mut PgConnection,
    l: &ConversationListing<'_>,
) -> sqlx::Result<Vec<ConversationSummary>> {
    sqlx::query_as(
        "SELECT c.customer_id, c.status, c.updated_by, c.created_at, c.updated_at,
                coalesce(c.last_message_at, c.created_at) AS activity_at,
                m.id AS last_id, m.type AS last_type, m.direction AS last_direction,
                m.message AS last_message, m.subject AS last_subject,
                m.created_at AS last_created_at, m.deleted_at IS NOT NULL AS last_deleted,
                (SELECT count(*) FROM communications u
                 WHERE u.customer_id = c.customer_id AND u.direction = $3
                   AND u.visibility = 'public'
                   AND u.read_at IS NULL AND u.deleted_at IS NULL AND u.type <> 'phone') AS unread_count
         FROM conversations c
         LEFT JOIN communications m ON m.id = c.last_communication_id
         WHERE ($1::text IS NULL OR c.status = $1)
           AND ($2::text IS NULL OR c.customer_id = $2)
           AND ($4::timestamptz IS NULL
                OR (coalesce(c.last_message_at, c.created_at), c.customer_id) < ($4, $5))
         ORDER BY coalesce(c.last_message_at, c.created_at) DESC, c.customer_id DESC
         LIMIT $6",
    )
    .bind(l.status.map(ConversationStatus::as_str))
    .bind(l.customer_id.map(CustomerId::as_str))
    .bind(l.unread_direction.as_str())
    .bind(l.before.as_ref().map(|b| b.0))
    .bind(l.before.as_ref().map(|b| b.1.as_str()).unwrap_or_default())
    .bind(l.limit)
    .fetch_all(conn)
    .await
}

/// Is the file attached to a communication that still shows it?
pub async fn file_in_use(conn: &mut PgConnection, file: &FileRecord) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT $2::uuid IS NOT NULL OR EXISTS (
             SELECT 1 FROM communications
             WHERE customer_id = $3 AND deleted_at IS NULL
               AND attachments @> jsonb_build_array(jsonb_build_object('file_id', $1::text)))",
    )
    .bind(file.id)
    .bind(file.communication_id)
    .bind(&file.customer_id)
    .fetch_one(conn)
    .await
}

/// Deletes the file's record; when no other record shares its content, the blob's row
/// goes too. Returns the object keys no longer referred to (to delete from the store).
pub async fn delete_file(conn: &mut PgConnection, file: &FileRecord) -> sqlx::Result<Vec<String>> {
    if let Some(sha256) = &file.sha256 {
        // Held until commit: a concurrent upload of the same bytes waits, then claims anew.
        sqlx::query("SELECT 1 FROM blobs WHERE sha256 = $1 FOR UPDATE")
            .bind(sha256)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("DELETE FROM file_attachments WHERE id = $1")
        .bind(file.id)
        .execute(&mut *conn)
        .await?;
    let mut keys: Vec<String> = file.staging_key.iter().cloned().collect();
    if let Some(sha256) = &file.sha256 {
        let orphaned: Option<(String, Option<String>)> = sqlx::query_as(
            "DELETE FROM blobs WHERE sha256 = $1
                 AND NOT EXISTS (SELECT 1 FROM file_attachments WHERE sha256 = $1)
             RETURNING storage_key, thumbnail_key",
        )
        .bind(sha256)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((storage_key, thumbnail_key)) = orphaned {
            keys.push(storage_key);
            keys.extend(thumbnail_key);
        }
    }
    Ok(keys)
}
