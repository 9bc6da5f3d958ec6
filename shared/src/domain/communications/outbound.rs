//! What we send, composed one way for every sender: the api's sends (in-app, SMS,
//! email, a logged call), the fallback of unread messages, crews' notices to customers
//! and texts to crew members. A sender says who, to whom, on which [`Channel`] and what
//! ([`Composed`]: as given, or rendered from a template); [`record`] writes it with its
//! job. The channel alone decides the type, the job kind, the addresses, the contacts
//! learnt and an email's Message-ID, so a new channel plugs in here once.
//!
//! An in-app message with no files has nothing left to do once it is stored: its own
//! commit delivers it (`sent`, with its `message.new` in the same transaction), and it
//! has no job. With files, a job delivers it once they are processed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::contact::{self, ContactKind, Mailbox},
    domain::templates::{self, RenderError},
    domain::{CommunicationType, CustomerId, Direction, Role, Visibility},
    ledger::jobs::{NewJob, payloads},
};

use super::{
    Communication,
    writes::{self, EmailIds, NewRow},
};

/// The text of a communication, as given or rendered from a template.
#[derive(Debug, Clone, Default)]
pub struct Composed {
    pub message: String,
    /// Email: the subject (a template's, rendered, unless one was given).
    pub subject: Option<String>,
    /// The template and version it was rendered from.
    pub template: Option<(Uuid, i32)>,
}

impl Composed {
    /// Plain text, no template.
    pub fn text(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..Self::default()
        }
    }

    /// Renders the template (`id` at `version`: its content and subject) with the
    /// variables; every variable missing is named at once.
    pub fn render(
        (id, version): (Uuid, i32),
        content: &str,
        subject: Option<&str>,
        variables: &BTreeMap<String, Value>,
    ) -> Result<Self, RenderError> {
        let rendered = templates::render_template(content, subject, variables)?;
        Ok(Self {
            message: rendered.message,
            subject: rendered.subject,
            template: Some((id, version)),
        })
    }
}

/// Who a communication comes from: a signed-in user with their role, or the system
/// itself (`sender_role` `system`: the fallback, dispatch texts).
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub id: &'a str,
    pub role: &'a str,
}

impl<'a> Sender<'a> {
    pub fn user(id: &'a str, role: Role) -> Self {
        Self {
            id,
            role: role.as_str(),
        }
    }

    pub fn system(id: &'a str) -> Self {
        Self { id, role: "system" }
    }
}

/// Where an email goes in a thread: the Gmail thread and the Message-IDs it answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmailThread<'a> {
    pub provider_thread_id: Option<&'a str>,
    pub in_reply_to: Option<&'a str>,
    pub references: Option<&'a str>,
}

/// What each channel carries beyond the text, and so which job carries it out.
#[derive(Debug, Clone)]
pub enum Channel<'a> {
    /// Delivered in the app: by its own commit, or once its files are processed
    /// (`message.deliver`).
    InApp,
    /// To a phone through RingCentral (`sms.send`), from our number; both E.164.
    Sms { to: &'a str, from: &'a str },
    /// To mailboxes through Gmail (`email.send`), from our sender's address.
    Email {
        recipients: &'a [Mailbox],
        from: &'a str,
        thread: EmailThread<'a>,
    },
    /// A call that happened, logged with RingCentral (`call.log`).
    Phone {
        phone: &'a str,
        /// Our number, when one is set: a call can be logged without it.
        local: Option<&'a str>,
        duration_seconds: i32,
        occurred_at: DateTime<Utc>,
    },
}

impl Channel<'_> {
    pub fn communication_type(&self) -> CommunicationType {
        match self {
            Self::InApp => CommunicationType::InApp,
            Self::Sms { .. } => CommunicationType::Sms,
            Self::Email { .. } => CommunicationType::Email,
            Self::Phone { .. } => CommunicationType::Phone,
        }
    }

    /// The job that carries the communication out; none for an in-app message with
    /// nothing to wait for.
    fn job(&self, communication_id: Uuid, attachments: &Value) -> Option<NewJob> {
        Some(match self {
            Self::InApp if attachments.as_array().is_none_or(Vec::is_empty) => return None,
            Self::InApp => NewJob::of(&payloads::DeliverMessage { communication_id }),
            Self::Sms { .. } => NewJob::of(&payloads::SendSms { communication_id }),
            Self::Email { .. } => NewJob::of(&payloads::SendEmail { communication_id }),
            Self::Phone { .. } => NewJob::of(&payloads::LogCall { communication_id }),
        })
    }

    /// The addresses this communication is sent to (as the row keeps them) and from.
    fn addresses(&self) -> (Option<String>, Option<&str>) {
        match self {
            Self::InApp => (None, None),
            Self::Sms { to, from } => (Some((*to).to_owned()), Some(*from)),
            // Every address, as the worker reads them for the To header.
            Self::Email {
                recipients, from, ..
            } => {
                let to: Vec<&str> = recipients.iter().map(|r| r.address.as_str()).collect();
                (Some(to.join(", ")), Some(*from))
            }
            Self::Phone { phone, local, .. } => (Some((*phone).to_owned()), *local),
        }
    }

    /// The addresses this communication teaches us belong to its customer.
    fn contacts(&self) -> Vec<(ContactKind, &str)> {
        match self {
            Self::InApp => Vec::new(),
            Self::Sms { to, .. } => vec![(ContactKind::Phone, *to)],
            Self::Email { recipients, .. } => recipients
                .iter()
                .map(|r| (ContactKind::Email, r.address.as_str()))
                .collect(),
            Self::Phone { phone, .. } => vec![(ContactKind::Phone, *phone)],
        }
    }
}

/// An email's Message-ID: deterministic, so a send whose outcome is unknown can be
/// looked up in Gmail by it.
pub fn message_id(communication_id: Uuid, from: &str) -> String {
    let domain = from.rsplit_once('@').map_or(from, |(_, domain)| domain);
    format!("<{communication_id}@{domain}>")
}

/// A communication to send.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub customer_id: &'a CustomerId,
    pub sender: Sender<'a>,
    pub direction: Direction,
    /// Internal: in-app or to a crew member, never the customer's eyes.
    pub visibility: Visibility,
    pub project_id: Option<Uuid>,
    pub composed: &'a Composed,
    /// The attachment list, as records show it ([`crate::domain::store::attachment_list`]).
    pub attachments: Value,
    /// Facts of the sender's beside the channel's (the messages a fallback carries,
    /// the crew member texted).
    pub metadata: Map<String, Value>,
    pub channel: Channel<'a>,
    /// Whether the addresses are the customer's to remember (a crew member's number
    /// is not).
    pub customer_addresses: bool,
}

/// A send composed and ready to write: its row, its job (if it needs one) and the
/// contacts it teaches. Owned, so it can wait to be written with others ([`record_many`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    row: NewRow,
    job: Option<NewJob>,
    max_attempts: i32,
    contacts: Vec<(ContactKind, String)>,
}

impl Prepared {
    /// Whether recording it writes more than the row and its job (one statement).
    pub fn teaches_contacts(&self) -> bool {
        !self.contacts.is_empty()
    }
}

/// Composes the send: its id, the row its channel describes, its job.
pub fn prepare(o: &Outbound<'_>, max_attempts: i32) -> Prepared {
    let id = Uuid::now_v7();
    let channel = &o.channel;
    let (remote, local) = channel.addresses();
    let mut metadata = o.metadata.clone();
    let (thread, rfc822_message_id) = match channel {
        Channel::Email {
            recipients,
            from,
            thread,
        } => {
            // The names too, beside the addresses the row keeps.
            metadata.insert("to".into(), json!(recipients));
            (Some(thread), Some(message_id(id, from)))
        }
        _ => (None, None),
    };
    let call = match channel {
        Channel::Phone {
            duration_seconds,
            occurred_at,
            ..
        } => Some((*duration_seconds, *occurred_at)),
        _ => None,
    };
    let owned = |s: Option<&str>| s.map(str::to_owned);
    let row = NewRow {
        id,
        customer_id: o.customer_id.clone(),
        communication_type: channel.communication_type(),
        direction: o.direction,
        sender: (o.sender.id.to_owned(), o.sender.role.to_owned()),
        composed: o.composed.clone(),
        attachments: o.attachments.clone(),
        metadata: Value::Object(metadata),
        addresses: (remote, owned(local)),
        email: EmailIds {
            message_id: rfc822_message_id,
            thread_id: owned(thread.and_then(|t| t.provider_thread_id)),
            in_reply_to: owned(thread.and_then(|t| t.in_reply_to)),
            references: owned(thread.and_then(|t| t.references)),
        },
        call,
        project_id: o.project_id,
        visibility: o.visibility,
    };
    let contacts = if o.customer_addresses {
        channel
            .contacts()
            .into_iter()
            .map(|(kind, address)| (kind, address.to_owned()))
            .collect()
    } else {
        Vec::new()
    };
    Prepared {
        job: channel
            .job(id, &o.attachments)
            .map(|job| job.for_communication(id).for_customer(o.customer_id)),
        row,
        max_attempts,
        contacts,
    }
}

/// A send as recorded: its row, and its job's id (none when its commit delivered it).
pub type Recorded = (Communication, Option<Uuid>);

/// Records the communication and its job (the outbox) in the caller's transaction, and
/// the contacts it teaches us; answers the row and the job's id.
pub async fn record(
    conn: &mut PgConnection,
    o: &Outbound<'_>,
    max_attempts: i32,
) -> sqlx::Result<Recorded> {
    record_prepared(conn, &prepare(o, max_attempts)).await
}

/// [`record`] of a send already prepared.
pub async fn record_prepared(conn: &mut PgConnection, send: &Prepared) -> sqlx::Result<Recorded> {
    let recorded = record_many(conn, std::slice::from_ref(send)).await?;
    recorded.into_iter().next().ok_or(sqlx::Error::RowNotFound)
}

/// Records many sends in the caller's transaction: their rows and jobs in one
/// statement, then the contacts they teach. Answers each in the order given.
pub async fn record_many(
    conn: &mut PgConnection,
    sends: &[Prepared],
) -> sqlx::Result<Vec<Recorded>> {
    // Written in customer order: each row's trigger locks its conversation, so two
    // batches at once take their locks in one order and cannot deadlock.
    let mut order: Vec<usize> = (0..sends.len()).collect();
    order.sort_by(|&a, &b| sends[a].row.customer_id.cmp(&sends[b].row.customer_id));
    let rows: Vec<_> = order
        .iter()
        .map(|&i| {
            let send = &sends[i];
            (
                &send.row,
                send.job.as_ref().map(|job| (job, send.max_attempts)),
            )
        })
        .collect();
    let mut recorded: Vec<Option<Recorded>> = sends.iter().map(|_| None).collect();
    for (i, written) in order.iter().zip(writes::insert_sends(conn, &rows).await?) {
        recorded[*i] = Some(written);
        remember_contacts(conn, &sends[*i]).await?;
    }
    Ok(recorded.into_iter().flatten().collect())
}

async fn remember_contacts(conn: &mut PgConnection, send: &Prepared) -> sqlx::Result<()> {
    for (kind, address) in &send.contacts {
        contact::remember(conn, *kind, address, &send.row.customer_id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_name_the_senders_domain() {
        let id = Uuid::nil();
        assert_eq!(
            message_id(id, "office@example.com"),
            format!("<{id}@example.com>")
        );
        assert_eq!(message_id(id, "example.com"), format!("<{id}@example.com>"));
    }
}
