//! Reading communications and posting receipts.
//!
//! - `GET /api/communications`: newest first, filtered by `customer_id` and `type`,
//!   keyset-paginated (`limit`, `cursor` → `next_cursor`).
//! - `GET /api/communications/{id}/status`
//! - `POST /api/communications/{id}/mark-delivered` and `/mark-read`: enqueued like any
//!   job; statuses only move forward, so a late receipt changes nothing.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use commcenter_shared::{
    domain::{CommunicationType, CustomerId, Receipt, Role},
    jobs::{self, NewJob, kinds, payloads},
    store::{self, Communication, CommunicationFilter},
};

use super::parse_uuid;
use crate::{
    auth::Caller,
    body::QueryParams,
    error::{ApiError, ApiResult},
    startup::AppState,
};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    customer_id: Option<String>,
    #[serde(rename = "type")]
    communication_type: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let customer_id = match (&query.customer_id, caller.own_customer()) {
        (Some(raw), _) => {
            let customer =
                CustomerId::parse(raw).map_err(|e| ApiError::bad_request("invalid_query", e.0))?;
            caller.ensure_sees(customer.as_str())?;
            Some(customer)
        }
        // A customer who names no customer gets their own conversation.
        (None, Some(own)) => Some(own.clone()),
        (None, None) if caller.role() == Role::Crew => {
            return Err(ApiError::Forbidden(
                "crew members see only what is shared with their crew".into(),
            ));
        }
        (None, None) => None,
    };
    let communication_type = query
        .communication_type
        .as_deref()
        .map(CommunicationType::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", e.0))?;
    let limit = match &query.limit {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let before = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = CommunicationFilter {
        customer_id,
        communication_type,
        before,
        limit: limit + 1,
    };
    let mut rows = store::list_communications(&state.pool, &filter).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|last| encode_cursor(last.created_at, last.id))
    } else {
        None
    };
    Ok(Json(
        json!({ "communications": rows, "next_cursor": next_cursor }),
    ))
}

fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", created_at.timestamp_micros()))
}

fn decode_cursor(raw: &str) -> ApiResult<(DateTime<Utc>, Uuid)> {
    let invalid = || ApiError::bad_request("invalid_query", "cursor is not one this API issued");
    let decoded = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (micros, id) = text.split_once(':').ok_or_else(invalid)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| invalid())?))
}

/// Loads a communication the caller may see; anything else is a 404.
async fn visible_communication(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
) -> ApiResult<Communication> {
    let id = parse_uuid(raw_id, "id")?;
    let mut conn = state.pool.acquire().await?;
    let not_found = || ApiError::NotFound(format!("no communication {id}"));
    let communication = store::find_communication(&mut conn, id)
        .await?
        .ok_or_else(not_found)?;
    caller
        .ensure_sees(&communication.customer_id)
        .map_err(|e| match e {
            ApiError::NotFound(_) => not_found(),
            other => other,
        })?;
    Ok(communication)
}

pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = visible_communication(&state, &caller, &id).await?;
    Ok(Json(json!({
        "id": c.id,
        "customer_id": c.customer_id,
        "status": c.status,
        "failure_reason": c.failure_reason,
        "sent_at": c.sent_at,
        "delivered_at": c.delivered_at,
        "read_at": c.read_at,
        "updated_at": c.updated_at,
    })))
}

pub async fn mark_read(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    post_receipt(state, caller, id, Receipt::Read).await
}

pub async fn mark_delivered(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    post_receipt(state, caller, id, Receipt::Delivered).await
}

async fn post_receipt(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    receipt: Receipt,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let communication = visible_communication(&state, &caller, &id).await?;
    // Receipts come from the receiving party: the customer for what staff sent, staff
    // for what the customer sent.
    let receiver_is_customer = communication.direction == "outbound";
    let caller_is_customer = caller.role() == Role::Customer;
    if receiver_is_customer != caller_is_customer {
        return Err(ApiError::Forbidden(
            "only the receiving party posts receipts for a message".into(),
        ));
    }
    let payload = payloads::ApplyReceipt {
        communication_id: communication.id,
        receipt,
        by_user: caller.0.sub.clone(),
        by_role: caller.role(),
    };
    let customer = CustomerId::parse(&communication.customer_id).map_err(|e| anyhow::anyhow!(e))?;
    let job = NewJob::new(kinds::RECEIPT_APPLY, &payload)
        .for_communication(communication.id)
        .for_customer(&customer);
    let mut tx = state.pool.begin().await?;
    let job_id = jobs::enqueue(&mut tx, job, state.settings.jobs.max_attempts).await?;
    tx.commit().await?;
    state.outbox.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "communication_id": communication.id,
            "receipt": receipt,
            "job_id": job_id,
            "status": "queued",
        })),
    ))
}
