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
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use crate::domain::{
    CommunicationStatus, CommunicationType, ConversationStatus, CustomerId, Direction, FileStatus,
    Role,
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
    /// The project it concerns: its crew's members see it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    /// The crew whose members may see it (the project's crew when it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crew_id: Option<Uuid>,
    /// Staff and the crew only, never the customer (an internal note, a dispatch).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub body: EventBody,
}

/// The one list of event types: [`EventType::ALL`] and each name come from it, and
/// [`EventBody::event_type`] maps every body to one, so the compiler keeps the list
/// complete (a test checks each name against the body's serde tag).
macro_rules! event_types {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )+) => {
        /// What kinds of event there are, as the `type` field names them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType {
            $( $(#[$doc])* $variant, )+
        }

        impl EventType {
            /// Every type, in the list's order.
            pub const ALL: &[EventType] = &[$(Self::$variant),+];

            /// The `type` field's value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $name, )+
                }
            }
        }
    };
}

event_types! {
    /// A message reached the conversation.
    MessageNew = "message.new",
    /// A communication's status moved forward (or failed).
    CommunicationStatus = "communication.status",
    /// An uploaded file finished processing.
    FileStatus = "file.status",
    /// An in-app message's text was edited.
    MessageUpdated = "message.updated",
    /// An in-app message was deleted.
    MessageDeleted = "message.deleted",
    /// A user came online or went offline.
    Presence = "presence",
    /// A crew was sent to a project.
    DispatchNew = "dispatch.new",
    /// A crew member acknowledged a dispatch.
    DispatchAcknowledged = "dispatch.acknowledged",
    /// The dispatched crew reached the site.
    ProjectArrived = "project.arrived",
    /// Staff's message to the crews near a place.
    CrewBroadcast = "crew.broadcast",
    /// Someone is typing (never stored).
    Typing = "typing",
    /// A conversation was opened, closed or archived.
    ConversationStatus = "conversation.status",
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
        status: FileStatus,
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
    /// A crew was sent to a project (to the crew's members and staff).
    #[serde(rename = "dispatch.new")]
    DispatchNew {
        dispatch_id: Uuid,
        title: String,
        address: String,
        lat: f64,
        lng: f64,
        note: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eta: Option<DateTime<Utc>>,
        dispatched_by: String,
    },
    /// A crew member acknowledged a dispatch (to staff and the crew).
    #[serde(rename = "dispatch.acknowledged")]
    DispatchAcknowledged { dispatch_id: Uuid, user_id: String },
    /// The dispatched crew reached the site: the project is `on_site`.
    #[serde(rename = "project.arrived")]
    ProjectArrived {
        dispatch_id: Uuid,
        user_id: String,
        distance_m: f64,
    },
    /// Staff's message to the crews near a place (see `POST /api/crews/broadcast`).
    #[serde(rename = "crew.broadcast")]
    CrewBroadcast {
        broadcast_id: Uuid,
        message: String,
        from: String,
        /// How far the crew's latest position was from the place named.
        distance_m: f64,
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
            project_id: None,
            crew_id: None,
            internal: false,
            at: Utc::now(),
            body,
        }
    }

    /// An event of a project, for staff and the project's crew only.
    pub fn of_project(customer_id: CustomerId, project: Uuid, crew: Uuid, body: EventBody) -> Self {
        Self {
            project_id: Some(project),
            crew_id: Some(crew),
            internal: true,
            ..Self::now(customer_id, body)
        }
    }

    /// An event for one crew (and staff), of no customer's conversation.
    pub fn of_crew(crew: Uuid, body: EventBody) -> Self {
        Self {
            seq: None,
            customer_id: None,
            project_id: None,
            crew_id: Some(crew),
            internal: true,
            at: Utc::now(),
            body,
        }
    }

    /// A user came or went; a customer's names their conversation (`customer`).
    pub fn presence(
        user_id: &str,
        role: Role,
        customer: Option<CustomerId>,
        status: PresenceStatus,
    ) -> Self {
        Self {
            seq: None,
            customer_id: customer,
            project_id: None,
            crew_id: None,
            internal: false,
            at: Utc::now(),
            body: EventBody::Presence {
                user_id: user_id.to_owned(),
                role,
                status,
            },
        }
    }

    /// May `viewer` see it? Staff and operators see everything; a customer their own
    /// conversation's events, except internal ones, and staff's presence; a crew member
    /// the events of their crew's projects.
    pub fn visible_to(&self, viewer: &Viewer) -> bool {
        match viewer.role {
            Role::Staff | Role::Operator => true,
            Role::Crew => viewer.crew.is_some() && self.crew_id == viewer.crew,
            Role::Customer if self.internal => false,
            Role::Customer => match (&self.body, &self.customer_id) {
                (EventBody::Presence { role, .. }, _) => role.sees_every_customer(),
                (_, Some(customer)) => viewer.customer.as_ref() == Some(customer),
                (_, None) => false,
            },
        }
    }
}

/// Who is looking: a WebSocket connection's role, and the conversation (a customer) or
/// the crew (a crew member) they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub role: Role,
    pub customer: Option<CustomerId>,
    pub crew: Option<Uuid>,
}

impl EventBody {
    /// Its type (the `type` field).
    pub fn event_type(&self) -> EventType {
        match self {
            Self::MessageNew { .. } => EventType::MessageNew,
            Self::CommunicationStatus { .. } => EventType::CommunicationStatus,
            Self::FileStatus { .. } => EventType::FileStatus,
            Self::MessageUpdated { .. } => EventType::MessageUpdated,
            Self::MessageDeleted { .. } => EventType::MessageDeleted,
            Self::Presence { .. } => EventType::Presence,
            Self::DispatchNew { .. } => EventType::DispatchNew,
            Self::DispatchAcknowledged { .. } => EventType::DispatchAcknowledged,
            Self::ProjectArrived { .. } => EventType::ProjectArrived,
            Self::CrewBroadcast { .. } => EventType::CrewBroadcast,
            Self::Typing { .. } => EventType::Typing,
            Self::ConversationStatus { .. } => EventType::ConversationStatus,
        }
    }

    /// The communication the event is about, if any.
    fn communication_id(&self) -> Option<Uuid> {
        match self {
            Self::MessageNew {
                communication_id, ..
            }
            | Self::CommunicationStatus {
                communication_id, ..
            }
            | Self::MessageUpdated {
                communication_id, ..
            }
            | Self::MessageDeleted {
                communication_id, ..
            } => Some(*communication_id),
            _ => None,
        }
    }
}

/// Writes the event to the outbox, in the caller's transaction. An event about a
/// communication takes who may see it from the communication itself, in the same
/// statement: its project, that project's crew now, and whether it is internal. So no
/// caller can announce an internal note to its customer, or forget the crew.
pub async fn record(conn: &mut PgConnection, event: &Event) -> sqlx::Result<()> {
    record_many(conn, std::slice::from_ref(event)).await
}

/// [`record`] of many events in one statement, in the order given (the relay
/// publishes the outbox in order).
pub async fn record_many(conn: &mut PgConnection, batch: &[Event]) -> sqlx::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let payloads = batch
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    let communications: Vec<Option<Uuid>> =
        batch.iter().map(|e| e.body.communication_id()).collect();
    sqlx::query(
        "INSERT INTO event_outbox (payload)
         SELECT e.payload || coalesce(
             (SELECT jsonb_strip_nulls(jsonb_build_object(
                         'project_id', c.project_id, 'crew_id', p.crew_id,
                         'internal', CASE WHEN c.visibility = 'internal' THEN true END))
              FROM communications c LEFT JOIN projects p ON p.id = c.project_id
              WHERE c.id = e.communication_id),
             '{}'::jsonb)
         FROM unnest($1::jsonb[], $2::uuid[]) WITH ORDINALITY AS e(payload, communication_id, n)
         ORDER BY e.n",
    )
    .bind(payloads)
    .bind(communications)
    .execute(conn)
    .await?;
    Ok(())
}

/// Events the relay puts in one message on the events exchange, at most: a message a
/// batch, not one an event, is what lets the broker and every instance's notifier keep
/// up with the sends.
pub const EVENTS_PER_MESSAGE: usize = 100;
/// And the bytes of one such message, at most (a message may carry big texts).
pub const MESSAGE_BYTES: usize = 256 * 1024;

/// A message on the events exchange: a relay's events, in log order, as one JSON array
/// (see [`EVENTS_PER_MESSAGE`]); one event alone (typing, presence) as an object.
pub fn decode_published(body: &[u8]) -> serde_json::Result<Vec<Event>> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        return serde_json::from_slice(body).map(|event| vec![event]);
    }
    serde_json::from_slice(body).or_else(|whole| {
        // One event this process cannot read (a newer kind, say) must not cost the
        // others of its message: each on its own, the unreadable ones dropped.
        let values: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|_| whole)?;
        Ok(values
            .into_iter()
            .filter_map(|value| match serde_json::from_value(value) {
                Ok(event) => Some(event),
                Err(error) => {
                    tracing::warn!(%error, "an event that does not parse was dropped");
                    None
                }
            })
            .collect())
    })
}

/// Rows of `select` read once no relay is between numbering events and committing
/// them: the lock, taken shared, waits for a relay's batch already on the broker. One
/// round trip: the statements run as one transaction, `select` with a snapshot taken
/// after the lock is granted (read committed). A relay holds the lock at most its
/// confirm timeout; never wait on it for longer.
async fn read_settled(pool: &PgPool, select: &str) -> sqlx::Result<Vec<PgRow>> {
    sqlx::raw_sql(&format!(
        "SET LOCAL lock_timeout = '15s';
         SELECT pg_advisory_xact_lock_shared({EVENT_LOG_LOCK});
         {select}"
    ))
    .fetch_all(pool)
    .await
}

/// Of the positions `first..=last` (one published message's), those committed to the
/// log: the message reaches a notifier before its relay commits, and a relay that fails
/// to commit publishes the same events again under new positions. Told only once
/// committed, each event reaches a WebSocket once, under the position a resumed client
/// replays.
pub async fn committed_positions(pool: &PgPool, first: i64, last: i64) -> sqlx::Result<Vec<i64>> {
    let rows = read_settled(
        pool,
        &format!("SELECT seq FROM event_log WHERE seq BETWEEN {first} AND {last} ORDER BY seq"),
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|row| row.try_get::<i64, _>("seq").ok())
        .collect())
}

/// Every event committed after position `after`, at most `limit`, in order: what a
/// notifier that lost the broker may have missed.
pub async fn committed_after(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<(i64, serde_json::Value)>> {
    let rows = read_settled(
        pool,
        &format!(
            "SELECT seq, payload FROM event_log WHERE seq > {after} ORDER BY seq LIMIT {limit}"
        ),
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|row| Some((row.try_get("seq").ok()?, row.try_get("payload").ok()?)))
        .collect())
}

/// The log's head: the latest position given, every one before it committed or given
/// up (`HEAD` under the lock). Where a notifier starts.
pub async fn head(pool: &PgPool) -> sqlx::Result<i64> {
    let rows = read_settled(pool, &format!("SELECT {HEAD} AS head")).await?;
    rows.iter()
        .find_map(|row| row.try_get::<i64, _>("head").ok())
        .ok_or(sqlx::Error::RowNotFound)
}

/// The latest position the relay has given (`event_log_seq`), 0 before the first.
const HEAD: &str = "(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_log_seq)";

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
    viewer: &Viewer,
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
    let (oldest, head): (Option<i64>, i64) =
        sqlx::query_as(&format!("SELECT (SELECT min(seq) FROM event_log), {HEAD}"))
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
    // The same rule as `Event::visible_to`, in SQL.
    let events: Vec<(i64, serde_json::Value)> = match viewer.role {
        Role::Staff | Role::Operator => {
            sqlx::query_as("SELECT seq, payload FROM event_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(since)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }
        Role::Crew => match viewer.crew {
            None => Vec::new(),
            Some(crew) => {
                sqlx::query_as(
                    "SELECT seq, payload FROM event_log
                     WHERE seq > $1 AND payload ->> 'crew_id' = $2::text
                     ORDER BY seq LIMIT $3",
                )
                .bind(since)
                .bind(crew)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
            }
        },
        Role::Customer => {
            sqlx::query_as(
                "SELECT seq, payload FROM event_log
                 WHERE seq > $1
                   AND ((customer_id = $2 AND NOT coalesce((payload ->> 'internal')::boolean, false))
                        OR (customer_id IS NULL AND payload ->> 'type' = 'presence'
                            AND payload ->> 'role' IN ('staff', 'operator')))
                 ORDER BY seq LIMIT $3",
            )
            .bind(since)
            .bind(viewer.customer.as_ref().map(CustomerId::as_str))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// One body of every type (a new type must add one here, or the test fails).
    fn one_of_each() -> Vec<EventBody> {
        let id = Uuid::nil();
        let at = Utc::now();
        let text = || "x".to_owned();
        vec![
            EventBody::MessageNew {
                communication_id: id,
                communication_type: CommunicationType::InApp,
                direction: Direction::Outbound,
                sender_id: text(),
                sender_role: text(),
                user_id: text(),
                message: text(),
                content: text(),
                subject: None,
                attachments: serde_json::json!([]),
                status: CommunicationStatus::Sent,
                created_at: at,
                timestamp: at,
            },
            EventBody::CommunicationStatus {
                communication_id: id,
                status: CommunicationStatus::Sent,
                previous: CommunicationStatus::Queued,
                reason: None,
            },
            EventBody::FileStatus {
                file_id: id,
                filename: text(),
                status: FileStatus::Ready,
                reason: None,
                thumbnail_url: None,
            },
            EventBody::MessageUpdated {
                communication_id: id,
                message: text(),
                edited_at: at,
                edited_by: text(),
            },
            EventBody::MessageDeleted {
                communication_id: id,
                deleted_at: at,
                deleted_by: text(),
            },
            EventBody::Presence {
                user_id: text(),
                role: Role::Staff,
                status: PresenceStatus::Online,
            },
            EventBody::DispatchNew {
                dispatch_id: id,
                title: text(),
                address: text(),
                lat: 0.0,
                lng: 0.0,
                note: text(),
                eta: None,
                dispatched_by: text(),
            },
            EventBody::DispatchAcknowledged {
                dispatch_id: id,
                user_id: text(),
            },
            EventBody::ProjectArrived {
                dispatch_id: id,
                user_id: text(),
                distance_m: 1.0,
            },
            EventBody::CrewBroadcast {
                broadcast_id: id,
                message: text(),
                from: text(),
                distance_m: 1.0,
            },
            EventBody::Typing {
                user_id: text(),
                role: Role::Customer,
                state: None,
            },
            EventBody::ConversationStatus {
                status: ConversationStatus::Open,
                updated_by: text(),
            },
        ]
    }

    #[test]
    fn every_type_is_named_as_its_frames_say() {
        let mut seen = BTreeSet::new();
        for body in one_of_each() {
            let frame = serde_json::to_value(&body).expect("serialises");
            assert_eq!(frame["type"], body.event_type().as_str(), "{body:?}");
            seen.insert(body.event_type().as_str());
        }
        let all: BTreeSet<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(seen, all, "one body of every type in EventType::ALL");
    }

    fn typing(n: usize) -> Event {
        Event::now(
            CustomerId::parse("cust-1").unwrap(),
            EventBody::Typing {
                user_id: format!("user-{n}"),
                role: Role::Staff,
                state: None,
            },
        )
    }

    #[test]
    fn a_message_carries_one_event_or_a_batch_in_order() {
        let one = serde_json::to_vec(&typing(0)).unwrap();
        assert_eq!(decode_published(&one).unwrap().len(), 1);

        let batch: Vec<Event> = (0..3).map(typing).collect();
        let decoded = decode_published(&serde_json::to_vec(&batch).unwrap()).unwrap();
        let users: Vec<String> = decoded
            .iter()
            .map(|e| serde_json::to_value(e).unwrap()["user_id"].to_string())
            .collect();
        assert_eq!(users, ["\"user-0\"", "\"user-1\"", "\"user-2\""]);

        // One event of a kind this process does not know costs only itself.
        let mut values: Vec<serde_json::Value> = batch
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        values[1]["type"] = "from.the.future".into();
        let decoded = decode_published(&serde_json::to_vec(&values).unwrap()).unwrap();
        assert_eq!(decoded.len(), 2);
        assert!(decode_published(b"[not json").is_err());
    }
}
