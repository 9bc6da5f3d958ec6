//! Events: what the notifier pushes to WebSocket clients. Each is written to the
//! event outbox in the same transaction as the effect it announces, so a committed
//! effect is announced once, and a rolled-back one never.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{CommunicationStatus, ConversationStatus, CustomerId};

/// One frame on the WebSocket: `{"type": "...", "customer_id": "...", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The conversation the event belongs to: who may see it.
    pub customer_id: CustomerId,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventBody {
    /// A message reached the conversation (delivered by a worker).
    #[serde(rename = "message.new")]
    MessageNew {
        communication_id: Uuid,
        communication_type: String,
        sender_id: String,
        sender_role: String,
        message: String,
        status: CommunicationStatus,
        created_at: DateTime<Utc>,
    },
    /// A communication's status moved forward (or failed).
    #[serde(rename = "communication.status")]
    CommunicationStatus {
        communication_id: Uuid,
        status: CommunicationStatus,
        previous: CommunicationStatus,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
    },
    /// An uploaded file finished processing: `ready`, or `failed` with the reason.
    #[serde(rename = "file.status")]
    FileStatus {
        file_id: Uuid,
        filename: String,
        status: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        thumbnail_url: Option<String>,
    },
    /// Its sender changed an in-app message's text.
    #[serde(rename = "message.updated")]
    MessageUpdated {
        communication_id: Uuid,
        message: String,
        edited_at: DateTime<Utc>,
        edited_by: String,
    },
    /// An in-app message was deleted (by its sender, or by staff): show a tombstone.
    #[serde(rename = "message.deleted")]
    MessageDeleted {
        communication_id: Uuid,
        deleted_at: DateTime<Utc>,
        deleted_by: String,
    },
    /// Staff opened, closed or archived the conversation.
    #[serde(rename = "conversation.status")]
    ConversationStatus {
        status: ConversationStatus,
        updated_by: String,
    },
}

impl Event {
    pub fn now(customer_id: CustomerId, body: EventBody) -> Self {
        Self {
            customer_id,
            at: Utc::now(),
            body,
        }
    }
}

pub async fn record(conn: &mut PgConnection, event: &Event) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO event_outbox (payload) VALUES ($1)")
        .bind(sqlx::types::Json(event))
        .execute(conn)
        .await?;
    Ok(())
}
