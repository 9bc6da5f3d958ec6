//! Events: what the notifier pushes to WebSocket clients. Each is written to the
//! event outbox in the same transaction as the effect it announces, so a committed
//! effect is announced once, and a rolled-back one never. The relay gives each its
//! position (`seq`) in the event log as it publishes it, in commit order; a client
//! that reconnects with the last position it saw is sent what it missed.
//!
//! Typing indicators are the exception: never stored, published straight to the
//! events exchange by the api instance that received them, without a position.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{
        CommunicationStatus, CommunicationType, ConversationStatus, CustomerId, Direction, Role,
    },
    store::Communication,
};

/// One frame on the WebSocket: `{"type": "...", "seq": N, "customer_id": "...", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The position in the event log, given by the relay (none for typing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// The conversation the event belongs to, which decides who may see it; none for
    /// presence, which staff see whole and customers see of staff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventBody {
    /// A message reached the conversation (delivered by a worker).
    /// With the record's own fields and the original API's names for them (`content`,
    /// `user_id`, `timestamp`), and its attachments as the record lists them.
    #[serde(rename = "message.new")]
    MessageNew {
        communication_id: Uuid,
        communication_type: CommunicationType,
        direction: Direction,
        sender_id: String,
        sender_role: String,
        user_id: String,
        message: String,
        content: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        subject: Option<String>,
        #[serde(default)]
        attachments: serde_json::Value,
        status: CommunicationStatus,
        created_at: DateTime<Utc>,
        timestamp: DateTime<Utc>,
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
    /// A user's first WebSocket opened (`online`) or their last closed (`offline`), on
    /// any api instance.
    #[serde(rename = "presence")]
    Presence {
        user_id: String,
        role: Role,
        status: PresenceStatus,
    },
    /// Someone is typing in the conversation (or stopped: `state: "stop"`). Clients
    /// treat it as expired after 6 s.
    #[serde(rename = "typing")]
    Typing {
        user_id: String,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<TypingState>,
    },
    /// Staff opened, closed or archived the conversation.
    #[serde(rename = "conversation.status")]
    ConversationStatus {
        status: ConversationStatus,
        updated_by: String,
    },
}

impl EventBody {
    /// `message.new` for a communication that reached the conversation with `status`.
    pub fn message_new(c: &Communication, status: CommunicationStatus) -> Self {
        Self::MessageNew {
            communication_id: c.id,
            communication_type: c.communication_type,
            direction: c.direction,
            sender_id: c.sender_id.clone(),
            sender_role: c.sender_role.clone(),
            user_id: c.sender_id.clone(),
            message: c.message.clone(),
            content: c.message.clone(),
            subject: c.subject.clone(),
            attachments: c.attachments.clone(),
            status,
            created_at: c.created_at,
            timestamp: c.occurred_at.unwrap_or(c.created_at),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypingState {
    Start,
    Stop,
}

impl Event {
    /// An event of `customer_id`'s conversation, now.
    pub fn now(customer_id: CustomerId, body: EventBody) -> Self {
        Self {
            seq: None,
            customer_id: Some(customer_id),
            at: Utc::now(),
            body,
        }
    }

    /// A user came or went.
    pub fn presence(user_id: &str, role: Role, status: PresenceStatus) -> Self {
        Self {
            seq: None,
            customer_id: None,
            at: Utc::now(),
            body: EventBody::Presence {
                user_id: user_id.to_owned(),
                role,
                status,
            },
        }
    }

    /// May someone with `role` (and, for a customer, `own` conversation) see it?
    /// Staff and operators see everything; a customer their own conversation's events
    /// and staff's presence; crews nothing yet.
    pub fn visible_to(&self, role: Role, own: Option<&CustomerId>) -> bool {
        match role {
            Role::Staff | Role::Operator => true,
            Role::Crew => false,
            Role::Customer => match (&self.body, &self.customer_id) {
                (EventBody::Presence { role, .. }, _) => role.sees_every_customer(),
                (_, Some(customer)) => own == Some(customer),
                (_, None) => false,
            },
        }
    }
}

/// Writes the event to the outbox, in the caller's transaction.
pub async fn record(conn: &mut PgConnection, event: &Event) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO event_outbox (payload) VALUES ($1)")
        .bind(sqlx::types::Json(event))
        .execute(conn)
        .await?;
    Ok(())
}

/// A client's position in the event log, and what it may have missed since.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Every event after the position the caller may see, in order.
    pub events: Vec<(i64, serde_json::Value)>,
    /// The latest position now: where the client is once it has these.
    pub head: i64,
    /// False when the position is older than what is kept (or from another log): the
    /// client refetches instead.
    pub recovered: bool,
}

/// The advisory lock the relay holds while it gives positions and publishes: a reader
/// that takes it (shared) sees every event published before it took it committed.
pub const EVENT_LOG_LOCK: i64 = 0x636f_6d6d_6576_6e74; // "commevnt"

/// What a client at `since` (None: a new client) missed, at most `limit` events; the
/// caller subscribes to live events first, then reads this, and skips live events at or
/// below the last position read.
pub async fn replay(
    conn: &mut PgConnection,
    since: Option<i64>,
    role: Role,
    own: Option<&CustomerId>,
    limit: i64,
) -> sqlx::Result<Replay> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // A relay holds the lock at most its confirm timeout; never wait on it for longer.
    sqlx::query("SET LOCAL lock_timeout = '15s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(EVENT_LOG_LOCK)
        .execute(&mut *tx)
        .await?;
    let (oldest, head): (Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT min(seq) FROM event_log),
                (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_log_seq)",
    )
    .fetch_one(&mut *tx)
    .await?;
    let Some(since) = since else {
        tx.commit().await?;
        return Ok(Replay {
            events: Vec::new(),
            head,
            recovered: true,
        });
    };
    // Kept: every position after `since` that was ever given is still in the log.
    let kept = since <= head && oldest.map_or(since >= head, |oldest| since >= oldest - 1);
    if !kept {
        tx.commit().await?;
        return Ok(Replay {
            events: Vec::new(),
            head,
            recovered: false,
        });
    }
    let (all, customer) = match role {
        Role::Staff | Role::Operator => (true, None),
        _ => (false, own.map(CustomerId::as_str)),
    };
    let events: Vec<(i64, serde_json::Value)> = if role == Role::Crew {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT seq, payload FROM event_log
             WHERE seq > $1
               AND ($2 OR customer_id = $3
                    OR (customer_id IS NULL AND payload ->> 'type' = 'presence'
                        AND payload ->> 'role' IN ('staff', 'operator')))
             ORDER BY seq LIMIT $4",
        )
        .bind(since)
        .bind(all)
        .bind(customer)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?
    };
    tx.commit().await?;
    // More missed than one replay sends: the client refetches.
    let recovered = (events.len() as i64) < limit;
    Ok(Replay {
        events: if recovered { events } else { Vec::new() },
        head,
        recovered,
    })
}
