//! Accepting a communication: the one sequence every send takes, whatever its channel.
//!
//! ```text
//! begin:   claim the Idempotency-Key, if any (a repeat gets the first answer)
//! compose: the text as given, or rendered from a template (recorded with its version)
//! files:   the attachments, the customer's own and not failed
//! record:  the communication row and its job (the outbox) in one statement (its
//!          insert opens the conversation and keeps its latest message: a trigger),
//!          the contacts it teaches us, the answer stored with the key; commit; wake
//!          the relay
//! ```
//!
//! The transaction opens at the first step that needs it; a plain in-app send (no key,
//! template or files) is the one statement alone: one round trip instead of four.
//!
//! Routes validate what is particular to their channel and describe the communication
//! as a [`NewCommunication`] with its [`Channel`]; the channel decides the job kind and
//! the contacts, so a new channel (or `project_id`, or anything every send carries)
//! plugs in here once.

use std::collections::BTreeMap;

use axum::{
    Json,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use commcenter_shared::{
    contact::{self, ContactKind, Mailbox, PhoneNumber},
    crews,
    domain::{CommunicationType, CustomerId, Direction, Role, Visibility},
    jobs::{NewJob, payloads},
    store::{self, FileRecord},
    templates::{self, RenderError},
};

use crate::{
    auth::Caller,
    error::{ApiError, ApiResult},
    idempotency::IdempotencyKey,
    records,
    state::AppState,
};

/// The 202 a send answers: the communication's record and its job.
pub type AcceptedResponse = (StatusCode, Json<Value>);

/// What every send may take instead of `message`: a template and its variables. (Each
/// request names the two fields itself: serde cannot flatten them into a request that
/// refuses unknown fields.)
#[derive(Debug, Clone, Default)]
pub struct TemplateChoice {
    pub template_id: Option<Uuid>,
    pub variables: Option<BTreeMap<String, Value>>,
}

impl TemplateChoice {
    pub fn of(template_id: Option<Uuid>, variables: &Option<BTreeMap<String, Value>>) -> Self {
        Self {
            template_id,
            variables: variables.clone(),
        }
    }
}

/// The text of a communication, as given or rendered.
#[derive(Debug, Clone, Default)]
pub struct Composed {
    pub message: String,
    /// Email: the template's subject, rendered (a given subject wins).
    pub subject: Option<String>,
    /// The template and version it was rendered from.
    pub template: Option<(Uuid, i32)>,
}

/// Where an email goes in a thread: the Gmail thread and the Message-IDs it answers.
#[derive(Debug, Clone, Default)]
pub struct EmailThread<'a> {
    pub provider_thread_id: Option<&'a str>,
    pub in_reply_to: Option<&'a str>,
    pub references: Option<&'a str>,
}

/// What each channel carries beyond the text, and so which job carries it out.
#[derive(Debug, Clone)]
pub enum Channel<'a> {
    /// Delivered in the app (`message.deliver`).
    InApp,
    /// To a phone through RingCentral (`sms.send`), from our number.
    Sms {
        to: &'a PhoneNumber,
        from: &'a PhoneNumber,
    },
    /// To mailboxes through Gmail (`email.send`), from our sender.
    Email {
        recipients: &'a [Mailbox],
        from: &'a Mailbox,
        thread: EmailThread<'a>,
    },
    /// A call that happened, logged with RingCentral (`call.log`).
    Phone {
        phone: &'a PhoneNumber,
        /// Our number, when one is set: a call can be logged without it.
        local: Option<&'a str>,
        duration_seconds: i32,
        occurred_at: DateTime<Utc>,
    },
}

impl Channel<'_> {
    fn communication_type(&self) -> CommunicationType {
        match self {
            Self::InApp => CommunicationType::InApp,
            Self::Sms { .. } => CommunicationType::Sms,
            Self::Email { .. } => CommunicationType::Email,
            Self::Phone { .. } => CommunicationType::Phone,
        }
    }

    fn job(&self, communication_id: Uuid) -> NewJob {
        match self {
            Self::InApp => NewJob::of(&payloads::DeliverMessage { communication_id }),
            Self::Sms { .. } => NewJob::of(&payloads::SendSms { communication_id }),
            Self::Email { .. } => NewJob::of(&payloads::SendEmail { communication_id }),
            Self::Phone { .. } => NewJob::of(&payloads::LogCall { communication_id }),
        }
    }

    /// The addresses this communication teaches us belong to its customer.
    fn contacts(&self) -> Vec<(ContactKind, &str)> {
        match self {
            Self::InApp => Vec::new(),
            Self::Sms { to, .. } => vec![(ContactKind::Phone, to.as_str())],
            Self::Email { recipients, .. } => recipients
                .iter()
                .map(|r| (ContactKind::Email, r.address.as_str()))
                .collect(),
            Self::Phone { phone, .. } => vec![(ContactKind::Phone, phone.as_str())],
        }
    }
}

/// A communication to accept.
#[derive(Debug, Clone)]
pub struct NewCommunication<'a> {
    pub customer_id: &'a CustomerId,
    /// Checked by [`Acceptance::project`].
    pub project_id: Option<Uuid>,
    /// Internal: in-app only, never from a customer ([`internal_note_refusal`]).
    pub visibility: Visibility,
    pub direction: Direction,
    pub composed: &'a Composed,
    pub attachments: &'a [FileRecord],
    pub channel: Channel<'a>,
}

/// Why this caller may not send with `visibility` on `channel`, if they may not: an
/// internal note is in-app, and written by staff or a crew, never by the customer.
pub fn internal_note_refusal(
    caller: &Caller,
    visibility: Visibility,
    channel: CommunicationType,
) -> Option<ApiError> {
    if visibility == Visibility::Public {
        return None;
    }
    if caller.role() == Role::Customer {
        return Some(ApiError::Forbidden(
            "visibility: customers cannot write internal notes".into(),
        ));
    }
    (channel != CommunicationType::InApp).then(|| {
        ApiError::Invalid(format!(
            "visibility: internal notes are in-app messages; a {} reaches the customer",
            channel.as_str()
        ))
    })
}

/// Why a template did not render, as the API says it: 422 naming every missing
/// variable, or the value that is not text.
pub fn render_error(error: RenderError) -> ApiError {
    match error {
        RenderError::Missing(names) => {
            ApiError::Invalid(format!("variables: missing {}", names.join(", ")))
        }
        other => ApiError::Invalid(other.to_string()),
    }
}

/// A send under way. Its transaction is opened only when something must be read or
/// written before the record (an Idempotency-Key, a template, files, an email's
/// thread, contacts): a plain send is one statement, committed on its own.
pub struct Acceptance {
    pool: PgPool,
    tx: Option<Transaction<'static, Postgres>>,
    key: Option<IdempotencyKey>,
}

/// What [`Acceptance::begin`] found.
pub enum Begun {
    /// The key was used before with this request: its first answer.
    Repeat(AcceptedResponse),
    New(Acceptance),
}

impl Acceptance {
    /// Opens the transaction and claims the request's `Idempotency-Key`, if it has one
    /// (hashed with `route` and the request, so it cannot be replayed elsewhere).
    pub async fn begin(
        state: &AppState,
        caller: &Caller,
        headers: &HeaderMap,
        route: &str,
        request: &impl Serialize,
    ) -> ApiResult<Begun> {
        let key = IdempotencyKey::from_headers(headers, caller.user_id(), route, request)?;
        let mut acceptance = Self {
            pool: state.pool.clone(),
            tx: None,
            key,
        };
        if let Some(key) = acceptance.key.clone() {
            let tx = acceptance.conn().await?;
            if let Some(earlier) = key.claim(tx).await? {
                if let Some(tx) = acceptance.tx.take() {
                    tx.rollback().await?;
                }
                return Ok(Begun::Repeat((earlier.status, Json(earlier.body))));
            }
        }
        Ok(Begun::New(acceptance))
    }

    /// The send's transaction, opened on first use; also for the channel's own
    /// look-ups (an email's thread).
    pub async fn conn(&mut self) -> ApiResult<&mut PgConnection> {
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => self.pool.begin().await?,
        };
        Ok(&mut **self.tx.insert(tx))
    }

    /// The project a send names, checked: it exists and is `customer`'s, and a crew
    /// member may name only a project assigned to their crew (and must name one: it is
    /// all of a customer they may write to).
    pub async fn project(
        &mut self,
        caller: &Caller,
        customer: &CustomerId,
        project_id: Option<Uuid>,
    ) -> ApiResult<Option<Uuid>> {
        let crew_member = caller.role() == Role::Crew;
        let Some(id) = project_id else {
            if crew_member {
                return Err(ApiError::Forbidden(
                    "crew members write on a project of their crew: project_id is required".into(),
                ));
            }
            return Ok(None);
        };
        let conn = self.conn().await?;
        let project = crews::find_project(conn, id, false)
            .await?
            .filter(|p| p.customer_id == customer.as_str())
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "project_id: customer {customer} has no project {id}"
                ))
            })?;
        if crew_member {
            let crew = crews::crew_of(conn, caller.user_id()).await?;
            if crew.is_none() || project.crew_id != crew {
                return Err(ApiError::Forbidden(format!(
                    "project_id: project {id} is not assigned to your crew"
                )));
            }
        }
        Ok(Some(id))
    }

    /// The attachments named by id: the customer's own, none failed, none twice.
    pub async fn files(
        &mut self,
        customer: &CustomerId,
        ids: &[Uuid],
    ) -> ApiResult<Vec<FileRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        crate::routes::files::customer_files(self.conn().await?, customer, ids).await
    }

    /// The text as given in `message`, or rendered from the chosen template (whose type
    /// must be the channel's). Exactly one of them is needed, except that `message` may
    /// be left out when `may_be_empty` (files alone).
    pub async fn compose(
        &mut self,
        channel: CommunicationType,
        message: Option<&str>,
        choice: &TemplateChoice,
        may_be_empty: bool,
    ) -> ApiResult<Composed> {
        let Some(template_id) = choice.template_id else {
            if choice.variables.is_some() {
                return Err(ApiError::Invalid(
                    "variables: given without template_id".into(),
                ));
            }
            return match message {
                Some(text) => Ok(Composed {
                    message: text.to_owned(),
                    ..Default::default()
                }),
                None if may_be_empty => Ok(Composed::default()),
                None => Err(ApiError::Invalid(
                    "message: required (or template_id with variables)".into(),
                )),
            };
        };
        if message.is_some_and(|m| !m.is_empty()) {
            return Err(ApiError::Invalid(
                "message: give message or template_id, not both".into(),
            ));
        }
        let template = templates::find(self.conn().await?, template_id)
            .await?
            .filter(|t| t.active)
            .ok_or_else(|| {
                ApiError::Invalid(format!("template_id: no active template {template_id}"))
            })?;
        if template.template_type != channel.as_str() {
            return Err(ApiError::Invalid(format!(
                "template_id: template {template_id} is for {}, not {}",
                template.template_type,
                channel.as_str()
            )));
        }
        let variables = choice.variables.clone().unwrap_or_default();
        let rendered =
            templates::render_template(&template.content, template.subject.as_deref(), &variables)
                .map_err(render_error)?;
        Ok(Composed {
            message: rendered.message,
            subject: rendered.subject,
            template: Some((template.id, template.version)),
        })
    }

    /// Records the communication, its contacts and its job; stores the answer with the
    /// key; commits and wakes the relay. `extra` adds channel facts to the answer.
    pub async fn record(
        mut self,
        state: &AppState,
        caller: &Caller,
        c: NewCommunication<'_>,
        extra: Map<String, Value>,
    ) -> ApiResult<AcceptedResponse> {
        let id = Uuid::now_v7();
        let channel = &c.channel;
        let (remote, local, metadata) = match channel {
            Channel::InApp => (None, None, json!({})),
            Channel::Sms { to, from } => {
                (Some(to.as_str().to_owned()), Some(from.as_str()), json!({}))
            }
            // Every address, as the worker reads them for the To header; the names too.
            Channel::Email {
                recipients, from, ..
            } => (
                Some(
                    recipients
                        .iter()
                        .map(|r| r.address.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                Some(from.address.as_str()),
                json!({ "to": recipients }),
            ),
            Channel::Phone { phone, local, .. } => {
                (Some(phone.as_str().to_owned()), *local, json!({}))
            }
        };
        // Deterministic, so a send whose outcome is unknown can be looked up in Gmail.
        let (email, rfc822_message_id) = match channel {
            Channel::Email { thread, from, .. } => (
                Some(thread),
                Some(format!("<{id}@{}>", from.address.domain())),
            ),
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
        let job = channel
            .job(id)
            .for_communication(id)
            .for_customer(c.customer_id);
        let contacts = channel.contacts();
        // Nothing else to read or write: one statement, committed on its own.
        let alone = self.tx.is_none() && contacts.is_empty();
        let mut own_conn: Option<sqlx::pool::PoolConnection<Postgres>> = None;
        let conn: &mut PgConnection = if alone {
            own_conn.insert(self.pool.acquire().await?)
        } else {
            self.conn().await?
        };
        let (communication, job_id) = store::insert_communication(
            conn,
            &store::NewCommunication {
                id,
                customer_id: c.customer_id,
                communication_type: channel.communication_type(),
                direction: c.direction,
                sender_id: caller.user_id(),
                sender_role: caller.role().as_str(),
                subject: c.composed.subject.as_deref(),
                message: &c.composed.message,
                attachments: crate::routes::files::attachments_json(c.attachments),
                metadata,
                remote_address: remote.as_deref(),
                local_address: local,
                rfc822_message_id: rfc822_message_id.as_deref(),
                provider_thread_id: email.and_then(|e| e.provider_thread_id),
                in_reply_to: email.and_then(|e| e.in_reply_to),
                references: email.and_then(|e| e.references),
                duration_seconds: call.map(|(seconds, _)| seconds),
                occurred_at: call.map(|(_, at)| at),
                template_id: c.composed.template.map(|(id, _)| id),
                template_version: c.composed.template.map(|(_, version)| version),
                project_id: c.project_id,
                visibility: c.visibility,
            },
            job,
            state.settings.jobs.max_attempts,
        )
        .await?;
        for (kind, address) in contacts {
            contact::remember(conn, kind, address, c.customer_id).await?;
        }
        let mut body = records::communication_json(&communication);
        if let Value::Object(fields) = &mut body {
            fields.insert("job_id".into(), json!(job_id));
            fields.extend(extra);
        }
        if let Some(key) = self.key.take() {
            key.store(self.conn().await?, StatusCode::ACCEPTED, &body)
                .await?;
        }
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
        }
        state.outbox.notify_one();
        Ok((StatusCode::ACCEPTED, Json(body)))
    }
}
