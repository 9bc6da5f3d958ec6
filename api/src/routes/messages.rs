//! `POST /api/messages/send`: an in-app message. Recorded with its delivery job in one
//! transaction and answered 202; a worker delivers it.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use commcenter_shared::{
    domain::{CommunicationType, CustomerId, MessageText, Role},
    jobs::{self, NewJob, kinds, payloads},
    store::{self, NewCommunication},
};

use crate::{
    auth::Caller,
    body::JsonBody,
    error::{ApiError, ApiResult},
    idempotency::IdempotencyKey,
    startup::AppState,
};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    pub customer_id: CustomerId,
    pub message: String,
    #[serde(default)]
    pub attachments: Vec<Uuid>,
}

/// At most this many attachments on one message.
const MAX_ATTACHMENTS: usize = 10;

pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SendMessage>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.ensure_sees(request.customer_id.as_str())?;
    let text = MessageText::parse(&request.message).map_err(|e| ApiError::Invalid(e.0))?;
    if request.attachments.len() > MAX_ATTACHMENTS {
        return Err(ApiError::Invalid(format!(
            "attachments: at most {MAX_ATTACHMENTS} files per message"
        )));
    }
    let key = IdempotencyKey::from_headers(
        &headers,
        caller.user_id(),
        "POST /api/messages/send",
        &request,
    )?;

    let mut tx = state.pool.begin().await?;
    if let Some(key) = &key
        && let Some(earlier) = key.claim(&mut tx).await?
    {
        tx.rollback().await?;
        return Ok((earlier.status, Json(earlier.body)));
    }
    let files =
        super::files::customer_files(&mut tx, &request.customer_id, &request.attachments).await?;
    let attachments = super::files::attachments_json(&files);
    let direction = if caller.role() == Role::Customer {
        "inbound"
    } else {
        "outbound"
    };
    store::ensure_conversation(&mut tx, &request.customer_id).await?;
    let communication = store::insert_communication(
        &mut tx,
        &NewCommunication {
            id: Uuid::now_v7(),
            customer_id: &request.customer_id,
            communication_type: CommunicationType::InApp,
            direction,
            sender_id: caller.user_id(),
            sender_role: caller.role().as_str(),
            subject: None,
            message: text.as_str(),
            attachments,
        },
    )
    .await?;
    let job = NewJob::new(
        kinds::MESSAGE_DELIVER,
        &payloads::DeliverMessage {
            communication_id: communication.id,
        },
    )
    .for_communication(communication.id)
    .for_customer(&request.customer_id);
    let job_id = jobs::enqueue(&mut tx, job, state.settings.jobs.max_attempts).await?;
    let body = json!({
        "id": communication.id,
        "status": communication.status,
        "type": communication.communication_type,
        "customer_id": communication.customer_id,
        "direction": communication.direction,
        "created_at": communication.created_at,
        "job_id": job_id,
    });
    if let Some(key) = &key {
        key.store(&mut tx, StatusCode::ACCEPTED, &body).await?;
    }
    tx.commit().await?;
    state.outbox.notify_one();
    Ok((StatusCode::ACCEPTED, Json(body)))
}
