//! `GET|POST /api/communications/conversation/{customer_id}/status`: a conversation is
//! open, closed or archived. Changes go through the queue like any job.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};

use commcenter_shared::{
    domain::{ConversationStatus, CustomerId},
    jobs::{self, NewJob, kinds, payloads},
    store,
};

use crate::{
    auth::Caller,
    body::JsonBody,
    error::{ApiError, ApiResult},
    startup::AppState,
};

fn customer_from_path(raw: &str) -> ApiResult<CustomerId> {
    CustomerId::parse(raw).map_err(|e| ApiError::bad_request("invalid_path", e.0))
}

pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let customer = customer_from_path(&customer_id)?;
    caller.ensure_sees(customer.as_str())?;
    let mut conn = state.pool.acquire().await?;
    let body = match store::find_conversation(&mut conn, &customer).await? {
        Some(c) => json!({
            "customer_id": c.customer_id, "status": c.status, "updated_by": c.updated_by, "updated_at": c.updated_at,
        }),
        // A conversation nobody has written to yet is open.
        None => {
            json!({ "customer_id": customer, "status": "open", "updated_by": null, "updated_at": null })
        }
    };
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetStatus {
    status: String,
}

pub async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_id): Path<String>,
    JsonBody(request): JsonBody<SetStatus>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let customer = customer_from_path(&customer_id)?;
    caller.ensure_sees(customer.as_str())?;
    caller.ensure_staff()?;
    let status = ConversationStatus::parse(&request.status).map_err(|e| ApiError::Invalid(e.0))?;
    let payload = payloads::SetConversationStatus {
        customer_id: customer.clone(),
        status,
        by_user: caller.0.sub.clone(),
    };
    let mut tx = state.pool.begin().await?;
    let job_id = jobs::enqueue(
        &mut tx,
        NewJob::new(kinds::CONVERSATION_STATUS, &payload).for_customer(&customer),
        state.settings.jobs.max_attempts,
    )
    .await?;
    tx.commit().await?;
    state.outbox.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "customer_id": customer, "requested_status": status, "job_id": job_id, "status": "queued" }),
        ),
    ))
}
