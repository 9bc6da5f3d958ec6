//! Inbound email that matched no customer (staff only):
//!
//! - `GET /api/emails/unmatched`: the ones not yet assigned, newest first.
//! - `POST /api/emails/unmatched/{id}/assign` (`customer_id`): files it in that
//!   customer's conversation (`message.new`), remembers the sender's address as theirs
//!   (their next mail matches by itself), and marks it assigned. Twice is a 409.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use commcenter_shared::{
    domain::CustomerId,
    domain::communications::writes::{self, InboundEmail},
    domain::contact::{self, ContactKind},
};

use super::parse_uuid;
use crate::{
    auth::Caller,
    body::{JsonBody, QueryParams},
    error::{ApiError, ApiResult},
    paging, records,
    state::AppState,
};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UnmatchedEmail {
    id: Uuid,
    gmail_id: String,
    thread_id: String,
    message_id: Option<String>,
    sender: String,
    subject: String,
    message: String,
    in_reply_to: Option<String>,
    #[sqlx(rename = "references")]
    references: Option<String>,
    received_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, gmail_id, thread_id, message_id, sender, subject, message,
    in_reply_to, \"references\", received_at";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<String>,
}

pub async fn unmatched(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.ensure_staff()?;
    let limit = paging::limit(query.limit.as_deref(), 50, 200)?;
    let rows: Vec<UnmatchedEmail> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM unmatched_emails WHERE assigned_to IS NULL
         ORDER BY received_at DESC, id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(json!({ "emails": rows })))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    customer_id: CustomerId,
}

pub async fn assign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<AssignRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.ensure_staff()?;
    let id = parse_uuid(&id, "id")?;
    let mut tx = state.pool.begin().await?;
    let found: Option<UnmatchedEmailWithOwner> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, assigned_to FROM unmatched_emails WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(UnmatchedEmailWithOwner { email, assigned_to }) = found else {
        return Err(ApiError::NotFound(format!("no unmatched email {id}")));
    };
    if let Some(owner) = assigned_to {
        return Err(ApiError::Conflict(format!(
            "email {id} was already assigned to customer {owner}"
        )));
    }
    let communication = writes::file_inbound_email(
        &mut tx,
        &InboundEmail {
            customer_id: &request.customer_id,
            gmail_id: &email.gmail_id,
            thread_id: &email.thread_id,
            message_id: email.message_id.as_deref(),
            sender: &email.sender,
            subject: &email.subject,
            text: &email.message,
            in_reply_to: email.in_reply_to.as_deref(),
            references: email.references.as_deref(),
            received_at: email.received_at,
            mailbox: &state.settings.gmail.sender,
        },
    )
    .await?
    .ok_or_else(|| ApiError::Conflict(format!("email {id} is already filed")))?;
    contact::remember(
        &mut tx,
        ContactKind::Email,
        &email.sender,
        &request.customer_id,
    )
    .await?;
    sqlx::query(
        "UPDATE unmatched_emails SET assigned_to = $2, assigned_by = $3, communication_id = $4
         WHERE id = $1",
    )
    .bind(id)
    .bind(request.customer_id.as_str())
    .bind(caller.user_id())
    .bind(communication.id)
    .execute(&mut *tx)
    .await?;
    writes::announce_arrival(&mut tx, &communication).await?;
    tx.commit().await?;
    state.outbox.notify_one();
    Ok((
        StatusCode::CREATED,
        Json(records::communication_json(&communication)),
    ))
}

/// The row and whom it was assigned to.
#[derive(Debug, sqlx::FromRow)]
struct UnmatchedEmailWithOwner {
    #[sqlx(flatten)]
    email: UnmatchedEmail,
    assigned_to: Option<String>,
}
