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
//! template, files or project) opens none: it is written with the plain sends beside
//! it, one statement and one commit for all ([`crate::group_commit`]).
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
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

pub use commcenter_shared::domain::communications::{Channel, Composed, EmailThread};
use commcenter_shared::{
    domain::communications::{
        Outbound, Sender,
        outbound::{self},
    },
    domain::crews,
    domain::store::{self, FileRecord},
    domain::templates::{self, RenderError},
    domain::{CommunicationType, CustomerId, Direction, FileStatus, Role, Visibility},
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

/// A communication to accept: what the route read from the request.
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

impl<'a> NewCommunication<'a> {
    /// A public, outbound communication on `channel`: a send, unless it says otherwise
    /// (an internal note, a call that came in).
    pub fn outbound(
        customer_id: &'a CustomerId,
        project_id: Option<Uuid>,
        composed: &'a Composed,
        attachments: &'a [FileRecord],
        channel: Channel<'a>,
    ) -> Self {
        Self {
            customer_id,
            project_id,
            visibility: Visibility::Public,
            direction: Direction::Outbound,
            composed,
            attachments,
            channel,
        }
    }
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

/// Begins a send ([`Acceptance::begin`]), or returns from the route with the first
/// answer when the request repeats an earlier one (its `Idempotency-Key`).
macro_rules! begin_or_repeat {
    ($begin:expr) => {
        match $begin.await? {
            $crate::accept::Begun::Repeat(answer) => return Ok(answer),
            $crate::accept::Begun::New(acceptance) => acceptance,
        }
    };
}
pub(crate) use begin_or_repeat;

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
            .filter(|p| &p.customer_id == customer)
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
        let conn = self.conn().await?;
        if let Some(twice) = ids
            .iter()
            .enumerate()
            .find_map(|(i, id)| ids[..i].contains(id).then_some(id))
        {
            return Err(ApiError::Invalid(format!(
                "attachments: file {twice} is listed twice"
            )));
        }
        let mut found = store::find_customer_files(conn, customer, ids).await?;
        ids.iter()
            .map(|id| {
                // Another customer's file is as unknown as a file that does not exist.
                let at = found.iter().position(|f| f.id == *id).ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "attachments: file {id} not found for customer {customer}"
                    ))
                })?;
                let file = found.swap_remove(at);
                if file.status == FileStatus::Failed {
                    return Err(ApiError::Invalid(format!(
                        "attachments: file {id} failed processing: {}",
                        file.failure_reason.as_deref().unwrap_or("unknown reason")
                    )));
                }
                Ok(file)
            })
            .collect()
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
        Composed::render(
            (template.id, template.version),
            &template.content,
            template.subject.as_deref(),
            &variables,
        )
        .map_err(render_error)
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
        let outbound = Outbound {
            customer_id: c.customer_id,
            sender: Sender::user(caller.user_id(), caller.role()),
            direction: c.direction,
            visibility: c.visibility,
            project_id: c.project_id,
            composed: c.composed,
            attachments: store::attachment_list(c.attachments),
            metadata: Map::new(),
            channel: c.channel,
            customer_addresses: true,
        };
        let send = outbound::prepare(&outbound, state.settings.jobs.max_attempts);
        // Nothing else to read or write in its transaction: written with the sends
        // that arrive beside it, in one commit.
        let (communication, job_id) = if self.tx.is_none() && !send.teaches_contacts() {
            state.sends.record(send).await?
        } else {
            outbound::record_prepared(self.conn().await?, &send).await?
        };
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
