//! Repository functions over the domain tables, each taking an executor so callers
//! choose the transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{ConversationStatus, CustomerId, Direction, FileStatus};

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
    pub customer_id: CustomerId,
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
    pub status: FileStatus,
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

/// The files as a communication lists them (the shape of in-app messages').
pub fn attachment_list(files: &[FileRecord]) -> Value {
    files
        .iter()
        .map(|file| {
            serde_json::json!({
                "file_id": file.id,
                "filename": file.original_name,
                "url": crate::domain::filetype::file_url(&file.stored_name),
                "thumbnail_url": (file.file_category == "images")
                    .then(|| crate::domain::filetype::thumbnail_url(&file.stored_name)),
                "file_type": file.file_type,
                "file_size": file.file_size,
            })
        })
        .collect()
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
