//! Every change of a communication's stored state, each with the event it announces,
//! in the caller's transaction: the one place that writes `communications`.
//!
//! | change | announced |
//! |---|---|
//! | sends recorded with their jobs ([`insert_sends`], via [`super::outbound`]) | when the job delivers them |
//! | an in-app message with no files, delivered by its own commit ([`insert_sends`]) | `message.new` |
//! | an inbound email, SMS or imported call filed ([`file_inbound_email`], [`file_arrival`]) | `message.new` ([`announce_arrival`], once an email's files are listed) |
//! | an in-app message with files or a logged call reached the conversation ([`deliver`]) | `message.new` |
//! | a status moved forward ([`advance`], [`fail`], [`record_accepted`]) | `communication.status` |
//! | an operator's replay or discard ([`requeue_failed`], [`fail_queued`]) | `communication.status` |
//! | a fallback cancelled because its messages were read ([`cancel_fallback`]) | `communication.status` |
//! | an edit or a delete ([`change_message`]) | `message.updated` / `message.deleted` |
//! | attachments' final sizes, provider status, fallback links | nothing (no one waits on them) |

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{CommunicationStatus, CommunicationType, CustomerId, Direction, Visibility},
    ledger::events::{self, Event, EventBody},
    ledger::jobs::NewJob,
};

use super::{COLUMNS, Communication, Composed};

/// A row as a send writes it: every column a send can set.
#[derive(Debug, Clone)]
pub(super) struct NewRow {
    pub id: Uuid,
    pub customer_id: CustomerId,
    pub communication_type: CommunicationType,
    pub direction: Direction,
    /// Who sends it: their id and role.
    pub sender: (String, String),
    pub composed: Composed,
    pub attachments: Value,
    pub metadata: Value,
    /// SMS, email, calls: the other party, and our own number or mailbox.
    pub addresses: (Option<String>, Option<String>),
    pub email: EmailIds,
    /// A call: how long, and when.
    pub call: Option<(i32, DateTime<Utc>)>,
    pub project_id: Option<Uuid>,
    pub visibility: Visibility,
}

/// An email's place among emails: our Message-ID, the Gmail thread, what it answers.
#[derive(Debug, Clone, Default)]
pub(super) struct EmailIds {
    pub message_id: Option<String>,
    pub thread_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
}

/// A send as it is written: its row, and the job that carries it out with its
/// attempts, or none when its own commit delivers it.
pub(super) type NewSend<'a> = (&'a NewRow, Option<(&'a NewJob, i32)>);

/// Inserts sends with the jobs that carry them out: one statement for all their rows
/// and jobs (set-based, so a batch shares the statement, the round trip and the
/// commit). Its insert opens each conversation and keeps its latest message (a
/// trigger). A send without a job is delivered by this commit: written `sent`, its
/// `message.new` in the event outbox beside it. Answers each row and its job's id, in
/// the order given.
pub(super) async fn insert_sends(
    conn: &mut PgConnection,
    sends: &[NewSend<'_>],
) -> sqlx::Result<Vec<(Communication, Option<Uuid>)>> {
    static INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            r#"WITH job AS ({})
               INSERT INTO communications (id, customer_id, type, direction, sender_id,
                   sender_role, subject, message, attachments, metadata, remote_address,
                   local_address, rfc822_message_id, provider_thread_id, in_reply_to,
                   "references", duration_seconds, occurred_at, template_id,
                   template_version, project_id, visibility, status, sent_at)
               SELECT send.*, CASE WHEN send.status = 'sent' THEN now() END
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                   $5::text[], $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::jsonb[],
                   $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                   $16::text[], $17::int4[], $18::timestamptz[], $19::uuid[], $20::int4[],
                   $21::uuid[], $22::text[], $23::text[])
                   AS send(id, customer_id, type, direction, sender_id, sender_role, subject,
                       message, attachments, metadata, remote_address, local_address,
                       rfc822_message_id, provider_thread_id, in_reply_to, "references",
                       duration_seconds, occurred_at, template_id, template_version,
                       project_id, visibility, status)
               RETURNING {COLUMNS}"#,
            crate::ledger::jobs::insert_many_statement(24)
        )
    });
    let rows = || sends.iter().map(|(row, _)| *row);
    let column = |f: fn(&NewRow) -> Option<&str>| rows().map(f).collect::<Vec<_>>();
    let job_ids: Vec<Option<Uuid>> = sends
        .iter()
        .map(|(_, job)| job.map(|_| Uuid::now_v7()))
        .collect();
    let jobs: Vec<(Uuid, &NewJob, i32)> = sends
        .iter()
        .zip(&job_ids)
        .filter_map(|((_, job), id)| {
            let (job, max_attempts) = (*job)?;
            Some(((*id)?, job, max_attempts))
        })
        .collect();
    let status = |job: &Option<_>| match job {
        Some(_) => CommunicationStatus::Queued.as_str(),
        None => CommunicationStatus::Sent.as_str(),
    };
    let inserted: Vec<Communication> = sqlx::query_as(&INSERT)
        .bind(rows().map(|r| r.id).collect::<Vec<_>>())
        .bind(column(|r| Some(r.customer_id.as_str())))
        .bind(column(|r| Some(r.communication_type.as_str())))
        .bind(column(|r| Some(r.direction.as_str())))
        .bind(column(|r| Some(&r.sender.0)))
        .bind(column(|r| Some(&r.sender.1)))
        .bind(column(|r| r.composed.subject.as_deref()))
        .bind(column(|r| Some(&r.composed.message)))
        .bind(rows().map(|r| r.attachments.clone()).collect::<Vec<_>>())
        .bind(rows().map(|r| r.metadata.clone()).collect::<Vec<_>>())
        .bind(column(|r| r.addresses.0.as_deref()))
        .bind(column(|r| r.addresses.1.as_deref()))
        .bind(column(|r| r.email.message_id.as_deref()))
        .bind(column(|r| r.email.thread_id.as_deref()))
        .bind(column(|r| r.email.in_reply_to.as_deref()))
        .bind(column(|r| r.email.references.as_deref()))
        .bind(rows().map(|r| r.call.map(|c| c.0)).collect::<Vec<_>>())
        .bind(rows().map(|r| r.call.map(|c| c.1)).collect::<Vec<_>>())
        .bind(
            rows()
                .map(|r| r.composed.template.map(|t| t.0))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows()
                .map(|r| r.composed.template.map(|t| t.1))
                .collect::<Vec<_>>(),
        )
        .bind(rows().map(|r| r.project_id).collect::<Vec<_>>())
        .bind(column(|r| Some(r.visibility.as_str())))
        .bind(sends.iter().map(|(_, job)| status(job)).collect::<Vec<_>>())
        .bind(jobs.iter().map(|(id, _, _)| *id).collect::<Vec<_>>())
        .bind(jobs.iter().map(|(_, job, _)| job.kind).collect::<Vec<_>>())
        .bind(
            jobs.iter()
                .map(|(_, job, _)| job.payload.clone())
                .collect::<Vec<_>>(),
        )
        .bind(jobs.iter().map(|(_, _, max)| *max).collect::<Vec<_>>())
        .bind(
            jobs.iter()
                .map(|(_, job, _)| job.communication_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            jobs.iter()
                .map(|(_, job, _)| job.customer_id.as_ref().map(CustomerId::as_str))
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *conn)
        .await?;
    // RETURNING's order is not promised: match each row to its send by id.
    let mut by_id: std::collections::HashMap<Uuid, Communication> =
        inserted.into_iter().map(|c| (c.id, c)).collect();
    let recorded = rows()
        .zip(job_ids)
        .map(|(row, job_id)| {
            by_id
                .remove(&row.id)
                .map(|c| (c, job_id))
                .ok_or(sqlx::Error::RowNotFound)
        })
        .collect::<sqlx::Result<Vec<_>>>()?;
    let delivered: Vec<Event> = recorded
        .iter()
        .filter(|(_, job)| job.is_none())
        .map(|(c, _)| {
            Event::now(
                c.customer_id.clone(),
                message_new(c, CommunicationStatus::Sent),
            )
        })
        .collect();
    events::record_many(conn, &delivered).await?;
    Ok(recorded)
}

/// An email that came into the mailbox, as it is filed in a customer's conversation.
#[derive(Debug, Clone)]
pub struct InboundEmail<'a> {
    pub customer_id: &'a CustomerId,
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
/// filed before. Announce it with [`announce_arrival`] once its files are listed.
pub async fn file_inbound_email(
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
         RETURNING {COLUMNS}"
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

/// What reached us through a provider, as it is filed: an inbound SMS, or a call from
/// RingCentral's call log.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    pub customer_id: &'a CustomerId,
    pub communication_type: CommunicationType,
    pub direction: Direction,
    /// Who it is from (a customer's number, or the call log), and their role.
    pub sender: (&'a str, &'a str),
    pub message: &'a str,
    /// The other party, and our own number.
    pub addresses: (&'a str, Option<&'a str>),
    /// The provider's id (what files it once) and status, and its conversation.
    pub provider: (&'a str, &'a str, Option<&'a str>),
    /// A call: how long it lasted.
    pub duration_seconds: Option<i32>,
    /// When it happened; it was delivered then (a call) or now (`None`: an SMS).
    pub at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Files what arrived (`delivered`) and announces it; `None` when the provider told us
/// of it before (both of RingCentral's events name a message, and it retries).
pub async fn file_arrival(
    conn: &mut PgConnection,
    a: &Arrival<'_>,
) -> sqlx::Result<Option<Communication>> {
    let created: Option<Communication> = sqlx::query_as(&format!(
        "INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role,
             message, status, remote_address, local_address, provider_message_id,
             provider_status, provider_thread_id, duration_seconds, occurred_at, sent_at,
             delivered_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'delivered', $8, $9, $10, $11, $12, $13, $14, $14,
                 coalesce($15, now()))
         ON CONFLICT (type, provider_message_id) WHERE provider_message_id IS NOT NULL DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(a.customer_id)
    .bind(a.communication_type)
    .bind(a.direction)
    .bind(a.sender.0)
    .bind(a.sender.1)
    .bind(a.message)
    .bind(a.addresses.0)
    .bind(a.addresses.1)
    .bind(a.provider.0)
    .bind(a.provider.1)
    .bind(a.provider.2)
    .bind(a.duration_seconds)
    .bind(a.at)
    .bind(a.delivered_at)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(c) = &created {
        announce_arrival(conn, c).await?;
    }
    Ok(created)
}

/// `message.new` for a communication that reached the conversation as it now stands.
pub async fn announce_arrival(conn: &mut PgConnection, c: &Communication) -> sqlx::Result<()> {
    let event = Event::now(c.customer_id.clone(), message_new(c, c.status));
    events::record(conn, &event).await
}

/// `message.new` for a communication that reached the conversation with `status`.
fn message_new(c: &Communication, status: CommunicationStatus) -> EventBody {
    EventBody::MessageNew {
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

/// Moves the status forward, never back: `queued → sent → delivered → read`, and
/// `failed` from anything but `read` (a message read cannot fail). Returns the previous
/// status and the customer when it moved, `None` when the move would go backwards or
/// sideways (a late receipt). Announces nothing: its callers below do.
async fn move_status(
    conn: &mut PgConnection,
    id: Uuid,
    to: CommunicationStatus,
    reason: Option<&str>,
    by: Option<&str>,
) -> sqlx::Result<Option<(CommunicationStatus, CustomerId)>> {
    // The rank comparison lives in SQL so the check and the write are one statement.
    sqlx::query_as(
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
         RETURNING current.status, c.customer_id",
    )
    .bind(id)
    .bind(to)
    .bind(reason)
    .bind(by)
    .fetch_optional(conn)
    .await
}

/// How a status move came about: the failure's reason, or who read it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Why<'a> {
    /// With `failed`: why, in words for the conversation.
    pub reason: Option<&'a str>,
    /// With `read`: the reader (`read_by`).
    pub by: Option<&'a str>,
}

impl<'a> Why<'a> {
    pub fn failed(reason: &'a str) -> Self {
        Self {
            reason: Some(reason),
            by: None,
        }
    }
}

/// Moves the status forward ([`move_status`]) and announces `communication.status`;
/// returns the previous status when it moved.
pub async fn advance(
    conn: &mut PgConnection,
    id: Uuid,
    to: CommunicationStatus,
    why: Why<'_>,
) -> sqlx::Result<Option<CommunicationStatus>> {
    let Some((previous, customer)) = move_status(conn, id, to, why.reason, why.by).await? else {
        return Ok(None);
    };
    announce_status(conn, id, customer, to, previous, why.reason).await?;
    Ok(Some(previous))
}

/// Fails the communication with the reason and tells the conversation, unless it
/// already moved past failing (a message read cannot fail) or does not exist.
pub async fn fail(conn: &mut PgConnection, id: Uuid, reason: &str) -> sqlx::Result<()> {
    advance(conn, id, CommunicationStatus::Failed, Why::failed(reason)).await?;
    Ok(())
}

/// The communication reached the conversation (an in-app message `sent`, a logged call
/// `delivered`): its status moves to `to`, and `message.new` goes to everyone who
/// should see it. `false` when it had already (a redelivery: no second event).
pub async fn deliver(
    conn: &mut PgConnection,
    c: &Communication,
    to: CommunicationStatus,
) -> sqlx::Result<bool> {
    if move_status(conn, c.id, to, None, None).await?.is_none() {
        return Ok(false);
    }
    let event = Event::now(c.customer_id.clone(), message_new(c, to));
    events::record(conn, &event).await?;
    Ok(true)
}

/// What a provider answered when it took a send.
#[derive(Debug, Clone, Copy)]
pub struct ProviderIds<'a> {
    pub message_id: &'a str,
    pub status: &'a str,
    /// Gmail's thread, when it names one.
    pub thread_id: Option<&'a str>,
}

/// The communication went out: the provider's ids are kept, its status moves to `sent`,
/// and the conversation hears of it.
pub async fn record_accepted(
    conn: &mut PgConnection,
    id: Uuid,
    ids: ProviderIds<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE communications SET provider_message_id = $2, provider_status = $3,
                provider_thread_id = COALESCE($4, provider_thread_id)
         WHERE id = $1",
    )
    .bind(id)
    .bind(ids.message_id)
    .bind(ids.status)
    .bind(ids.thread_id)
    .execute(&mut *conn)
    .await?;
    advance(conn, id, CommunicationStatus::Sent, Why::default()).await?;
    Ok(())
}

/// The provider's own word for where a send is (RingCentral's `messageStatus`), kept
/// when `newer` says it is further along than the one stored; returns whether it was.
/// Locks the row, so two reports of one message are ordered.
pub async fn note_provider_status(
    conn: &mut PgConnection,
    id: Uuid,
    provider_status: &str,
    newer: impl Fn(Option<&str>) -> bool,
) -> sqlx::Result<bool> {
    let current: Option<String> = sqlx::query_scalar(
        "SELECT provider_status FROM communications WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    if !newer(current.as_deref()) {
        return Ok(false);
    }
    sqlx::query("UPDATE communications SET provider_status = $2 WHERE id = $1")
        .bind(id)
        .bind(provider_status)
        .execute(conn)
        .await?;
    Ok(true)
}

/// The attachment list as it now stands (files' final type and size once processed).
pub async fn set_attachments(
    conn: &mut PgConnection,
    id: Uuid,
    attachments: &Value,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE communications SET attachments = $2 WHERE id = $1")
        .bind(id)
        .bind(attachments)
        .execute(conn)
        .await?;
    Ok(())
}

/// An inbound email's files: the list, and in `metadata` those refused and why.
pub async fn set_attachments_and_metadata(
    conn: &mut PgConnection,
    id: Uuid,
    attachments: &Value,
    metadata: &Value,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE communications SET attachments = $2, metadata = $3 WHERE id = $1")
        .bind(id)
        .bind(attachments)
        .bind(metadata)
        .execute(conn)
        .await?;
    Ok(())
}

/// The unread in-app messages `carried` went on in the fallback `fallback_id`.
pub async fn link_fallback(
    conn: &mut PgConnection,
    carried: &[Uuid],
    fallback_id: Uuid,
    channel: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE communications SET fallback_id = $2, fallback_channel = $3, updated_at = now()
         WHERE id = ANY($1)",
    )
    .bind(carried)
    .bind(fallback_id)
    .bind(channel)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why a fallback was not sent.
pub const FALLBACK_READ_FIRST: &str = "not sent: every message it carried was read first";

/// A fallback whose messages were all read before it went: it fails with the reason
/// (announced, only when it was still `queued`), and the messages no longer point at
/// it. Returns whether it was cancelled now.
pub async fn cancel_fallback(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let cancelled: Option<CustomerId> = sqlx::query_scalar(
        "UPDATE communications SET status = 'failed', updated_at = now(), failure_reason = $2
         WHERE id = $1 AND status = 'queued'
         RETURNING customer_id",
    )
    .bind(id)
    .bind(FALLBACK_READ_FIRST)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE communications SET fallback_id = NULL, fallback_channel = NULL, updated_at = now()
         WHERE fallback_id = $1",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let Some(customer) = cancelled else {
        return Ok(false);
    };
    let queued = CommunicationStatus::Queued;
    let failed = CommunicationStatus::Failed;
    announce_status(
        conn,
        id,
        customer,
        failed,
        queued,
        Some(FALLBACK_READ_FIRST),
    )
    .await?;
    Ok(true)
}

/// An operator replayed these sends: each one `failed` is `queued` again (the one move
/// back the forward-only statuses allow, and only an operator makes), announced.
pub async fn requeue_failed(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<()> {
    let moved: Vec<(Uuid, CustomerId)> = sqlx::query_as(
        "UPDATE communications SET status = 'queued', failure_reason = NULL, updated_at = now()
         WHERE id = ANY($1) AND status = 'failed'
         RETURNING id, customer_id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let (queued, failed) = (CommunicationStatus::Queued, CommunicationStatus::Failed);
    for (id, customer) in moved {
        announce_status(conn, id, customer, queued, failed, None).await?;
    }
    Ok(())
}

/// An operator discarded these sends: each one not gone out yet (`queued`) fails with
/// the reason, announced.
pub async fn fail_queued(conn: &mut PgConnection, ids: &[Uuid], reason: &str) -> sqlx::Result<()> {
    let moved: Vec<(Uuid, CustomerId)> = sqlx::query_as(
        "UPDATE communications SET status = 'failed', failure_reason = $2, updated_at = now()
         WHERE id = ANY($1) AND status = 'queued'
         RETURNING id, customer_id",
    )
    .bind(ids)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    let (queued, failed) = (CommunicationStatus::Queued, CommunicationStatus::Failed);
    for (id, customer) in moved {
        announce_status(conn, id, customer, failed, queued, Some(reason)).await?;
    }
    Ok(())
}

/// `communication.status`: the one place the event is built.
async fn announce_status(
    conn: &mut PgConnection,
    communication_id: Uuid,
    customer: CustomerId,
    status: CommunicationStatus,
    previous: CommunicationStatus,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    let body = EventBody::CommunicationStatus {
        communication_id,
        status,
        previous,
        reason: reason.map(str::to_owned),
    };
    events::record(conn, &Event::now(customer, body)).await
}

/// What an edit or a delete does to an in-app message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    Edit { message: &'a str },
    Delete,
}

/// Who changes a message.
#[derive(Debug, Clone, Copy)]
pub struct Editor<'a> {
    pub user_id: &'a str,
    pub role: &'a str,
}

/// Edits or deletes the (locked) communication, keeping what it said before in
/// `communication_edits`, and announces `message.updated` or `message.deleted`;
/// returns the row as it now is.
pub async fn change_message(
    conn: &mut PgConnection,
    before: &Communication,
    change: Change<'_>,
    by: Editor<'_>,
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
    .bind(by.user_id)
    .bind(by.role)
    .execute(&mut *conn)
    .await?;
    let (message, deleting) = match change {
        Change::Edit { message } => (Some(message), false),
        Change::Delete => (None, true),
    };
    let after: Communication = sqlx::query_as(&format!(
        "UPDATE communications SET
             message = CASE WHEN $3 THEN '' ELSE coalesce($2, message) END,
             attachments = CASE WHEN $3 THEN '[]'::jsonb ELSE attachments END,
             edited_at = CASE WHEN $3 THEN edited_at ELSE now() END,
             deleted_at = CASE WHEN $3 THEN now() ELSE deleted_at END,
             deleted_by = CASE WHEN $3 THEN $4 ELSE deleted_by END,
             updated_at = now()
         WHERE id = $1
         RETURNING {COLUMNS}"
    ))
    .bind(before.id)
    .bind(message)
    .bind(deleting)
    .bind(by.user_id)
    .fetch_one(&mut *conn)
    .await?;
    let body = match change {
        Change::Edit { message } => EventBody::MessageUpdated {
            communication_id: after.id,
            message: message.to_owned(),
            edited_at: after.edited_at.unwrap_or(after.updated_at),
            edited_by: by.user_id.to_owned(),
        },
        Change::Delete => EventBody::MessageDeleted {
            communication_id: after.id,
            deleted_at: after.deleted_at.unwrap_or(after.updated_at),
            deleted_by: by.user_id.to_owned(),
        },
    };
    events::record(conn, &Event::now(after.customer_id.clone(), body)).await?;
    Ok(after)
}
