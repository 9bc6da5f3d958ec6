//! `POST /api/messages/send`: an in-app message. Recorded with its delivery job in one
//! transaction ([`crate::accept`]) and answered 202; a worker delivers it.

use axum::{extract::State, http::HeaderMap};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use serde_json::{Map, Value};
use uuid::Uuid;

use commcenter_shared::domain::{
    CommunicationType, CustomerId, Direction, MessageText, Role, Visibility, is_blank,
};

use crate::{
    accept::{
        Acceptance, AcceptedResponse, Channel, NewCommunication, TemplateChoice, begin_or_repeat,
        internal_note_refusal,
    },
    auth::Caller,
    body::JsonBody,
    error::{ApiError, ApiResult},
    state::AppState,
};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    pub customer_id: CustomerId,
    /// The project (a job at the customer\'s site) it belongs to.
    #[serde(default)]
    pub project_id: Option<Uuid>,
    /// The text (the original's records called it `content` too). May be left out or
    /// empty when files are attached, or when a template is chosen.
    #[serde(default, alias = "content")]
    pub message: Option<String>,
    #[serde(default)]
    pub attachments: Vec<Uuid>,
    /// Rendered instead of `message`.
    #[serde(default)]
    pub template_id: Option<Uuid>,
    #[serde(default)]
    pub variables: Option<BTreeMap<String, Value>>,
    /// `internal`: a note for staff and the project's crew, never shown to the customer.
    #[serde(default)]
    pub visibility: Visibility,
}

/// At most this many attachments on one message.
const MAX_ATTACHMENTS: usize = 10;

pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SendMessageRequest>,
) -> ApiResult<AcceptedResponse> {
    // A crew member writes only on a project of their crew: `Acceptance::project`.
    if caller.role() != Role::Crew {
        caller.ensure_sees(&request.customer_id)?;
    }
    if let Some(refusal) =
        internal_note_refusal(&caller, request.visibility, CommunicationType::InApp)
    {
        return Err(refusal);
    }
    if request.attachments.len() > MAX_ATTACHMENTS {
        return Err(ApiError::Invalid(format!(
            "attachments: at most {MAX_ATTACHMENTS} files per message"
        )));
    }
    let mut acceptance = begin_or_repeat!(Acceptance::begin(
        &state,
        &caller,
        &headers,
        "POST /api/messages/send",
        &request
    ));
    let project_id = acceptance
        .project(&caller, &request.customer_id, request.project_id)
        .await?;
    let has_files = !request.attachments.is_empty();
    let mut composed = acceptance
        .compose(
            CommunicationType::InApp,
            request.message.as_deref(),
            &TemplateChoice::of(request.template_id, &request.variables),
            has_files,
        )
        .await?;
    // Files alone need no text (nothing visible counts as none); otherwise the text
    // must have something to read.
    if has_files && is_blank(&composed.message) {
        composed.message.clear();
    } else {
        MessageText::parse(&composed.message).map_err(|e| {
            ApiError::Invalid(if has_files {
                format!("{e} (it may be left empty when files are attached)")
            } else {
                e.0
            })
        })?;
    }
    let files = acceptance
        .files(&request.customer_id, &request.attachments)
        .await?;
    let direction = if caller.role() == Role::Customer {
        Direction::Inbound
    } else {
        Direction::Outbound
    };
    acceptance
        .record(
            &state,
            &caller,
            NewCommunication {
                visibility: request.visibility,
                direction,
                ..NewCommunication::outbound(
                    &request.customer_id,
                    project_id,
                    &composed,
                    &files,
                    Channel::InApp,
                )
            },
            Map::new(),
        )
        .await
}
