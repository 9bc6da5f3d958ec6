//! Conversations, one per customer.
//!
//! - `GET /api/communications/conversations`: one row per conversation the caller may
//!   see, newest activity first, with its status, its latest message and the caller's
//!   `unread_count` (staff: inbound not read; a customer: outbound not read); filter
//!   `status`, keyset pages (`limit`, `cursor` → `next_cursor`).
//! - `GET|POST /api/communications/conversation/{customer_id}/status`: open, closed or
//!   archived. Changes go through the queue like any job.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use commcenter_shared::{
    domain::store::{self, ConversationListing, ConversationSummary},
    domain::{ConversationStatus, CustomerId, Direction, Role},
    ledger::jobs::{self, NewJob, payloads},
};

use crate::{
    auth::Caller,
    body::{JsonBody, QueryParams},
    error::{ApiError, ApiResult},
    paging,
    state::AppState,
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
    caller.ensure_sees(&customer)?;
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
    caller.ensure_sees(&customer)?;
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
        NewJob::of(&payload).for_customer(&customer),
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

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let bad = |message: String| ApiError::bad_request("invalid_query", message);
    let customer_id = super::communications::visible_customer(&caller, None)?;
    let status = query
        .status
        .as_deref()
        .map(ConversationStatus::parse)
        .transpose()
        .map_err(|e| bad(e.0))?;
    let limit = paging::limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let unread_direction = if caller.role() == Role::Customer {
        Direction::Outbound
    } else {
        Direction::Inbound
    };
    let mut conn = state.pool.acquire().await?;
    let mut rows = store::list_conversations(
        &mut conn,
        &ConversationListing {
            status,
            customer_id: customer_id.as_ref(),
            unread_direction,
            before,
            limit: limit + 1,
        },
    )
    .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|last| encode_cursor(last.activity_at, &last.customer_id))
    } else {
        None
    };
    Ok(Json(json!({
        "conversations": rows.iter().map(summary_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

fn summary_json(c: &ConversationSummary) -> Value {
    let deleted = c.last_deleted.unwrap_or(false);
    let last_message = c.last_id.map(|id| {
        json!({
            "id": id,
            "type": c.last_type,
            "direction": c.last_direction,
            "message": if deleted { None } else { c.last_message.as_deref() },
            "subject": if deleted { None } else { c.last_subject.as_deref() },
            "created_at": c.last_created_at,
            "deleted": deleted,
        })
    });
    json!({
        "customer_id": c.customer_id,
        "status": c.status,
        "updated_by": c.updated_by,
        "updated_at": c.updated_at,
        "created_at": c.created_at,
        "last_activity_at": c.activity_at,
        "last_message": last_message,
        "unread_count": c.unread_count,
    })
}

fn encode_cursor(at: DateTime<Utc>, customer_id: &str) -> String {
    paging::encode(&[&paging::time_part(at), customer_id])
}

fn decode_cursor(raw: &str) -> ApiResult<(DateTime<Utc>, String)> {
    let [at, customer] = paging::decode::<2>(raw).ok_or_else(paging::foreign_cursor)?;
    let at = paging::parse_time_part(&at).ok_or_else(paging::foreign_cursor)?;
    let customer = CustomerId::parse(&customer).map_err(|_| paging::foreign_cursor())?;
    Ok((at, customer.as_str().to_owned()))
}
