//! Communications: every message, email, SMS and call of a customer's conversation.
//! The one owner of the `communications` table's rows.
//!
//! - this module: the row ([`Communication`]) and its reads (find, lock, list);
//! - [`outbound`]: composing what we send, for every sender (the api's sends, the
//!   fallback of unread messages, crews' notices and texts): the channel names the job
//!   kind, the addresses, the contacts learnt and the Message-ID;
//! - [`writes`]: every change of a row's stored state (created, status, delivery,
//!   provider ids, attachments, fallback, edit, delete), each with the event it
//!   announces, in the caller's transaction. Nothing else writes `communications`.

pub mod outbound;
pub mod writes;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{CommunicationStatus, CommunicationType, CustomerId, Direction, Visibility};

pub use outbound::{Channel, Composed, EmailThread, Outbound, Sender};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Communication {
    pub id: Uuid,
    pub customer_id: CustomerId,
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

impl Communication {
    /// The files it carries, by id, in the order the sender gave them.
    pub fn attachment_ids(&self) -> Vec<Uuid> {
        self.attachments
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|a| a["file_id"].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub const COLUMNS: &str = "id, customer_id, type, direction, sender_id, sender_role, subject, message,
    status, failure_reason, attachments, metadata, created_at, updated_at, sent_at, delivered_at, read_at,
    remote_address, local_address, provider_message_id, provider_status, provider_thread_id,
    rfc822_message_id, in_reply_to, \"references\", duration_seconds, occurred_at, read_by, edited_at,
    deleted_at, deleted_by, template_id, template_version, project_id, visibility, fallback_id,
    fallback_channel";

/// The communication `id`, as it stands.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Communication>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM communications WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Locks the communication's row for the rest of the transaction.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Communication>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM communications WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
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
pub async fn list(pool: &PgPool, f: &CommunicationFilter) -> sqlx::Result<Vec<Communication>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM communications
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
