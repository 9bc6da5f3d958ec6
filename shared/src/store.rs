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
}

impl Communication {
    pub fn status(&self) -> CommunicationStatus {
        CommunicationStatus::parse(&self.status).unwrap_or(CommunicationStatus::Failed)
    }
}

const COMMUNICATION_COLUMNS: &str = "id, customer_id, type, direction, sender_id, sender_role, subject, message,
    status, failure_reason, attachments, metadata, created_at, updated_at, sent_at, delivered_at, read_at";

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
