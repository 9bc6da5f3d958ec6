//! Reading communications and posting receipts.
//!
//! - `GET /api/communications`: newest first, filtered by `customer_id` and `type`,
//!   keyset-paginated (`limit`, `cursor` → `next_cursor`).
//! - `GET /api/communications/{id}/status`
//! - `POST /api/communications/{id}/mark-delivered` and `/mark-read`: enqueued like any
//!   job; statuses only move forward, so a late receipt changes nothing.
//! - `PATCH|DELETE /api/communications/{id}`: an in-app message edited by its sender,
//!   or deleted by its sender or by staff; the earlier text is kept in
//!   `communication_edits`, a deleted message is shown as a tombstone, and
//!   `message.updated` / `message.deleted` go out in the same transaction.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use commcenter_shared::{
    domain::communications::{
        self, Communication, CommunicationFilter,
        writes::{self, Change, Editor},
    },
    domain::crews,
    domain::{
        CommunicationType, CustomerId, Direction, MessageText, Receipt, Role, Visibility, is_blank,
    },
    ledger::jobs::{self, NewJob, payloads},
};

use super::parse_uuid;
use crate::{
    auth::Caller,
    body::{JsonBody, QueryParams},
    error::{ApiError, ApiResult},
    paging, records,
    state::AppState,
};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    customer_id: Option<String>,
    #[serde(rename = "type")]
    communication_type: Option<String>,
    project_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let project_id = query
        .project_id
        .as_deref()
        .map(|raw| parse_uuid(raw, "project_id"))
        .transpose()?;
    // A crew member lists a project of their crew, and sees all of it; others see the
    // project's messages within what they may see anyway.
    let customer_id = match (caller.role(), project_id) {
        (Role::Crew, None) => {
            return Err(ApiError::Forbidden(
                "crew members list the messages of a project of their crew: project_id is required"
                    .into(),
            ));
        }
        (Role::Crew, Some(project)) => {
            let mut conn = state.pool.acquire().await?;
            if !crews::member_sees_project(&mut conn, caller.user_id(), project).await? {
                return Err(ApiError::NotFound(format!(
                    "no project {project} assigned to your crew"
                )));
            }
            None
        }
        _ => visible_customer(&caller, query.customer_id.as_deref())?,
    };
    let communication_type = query
        .communication_type
        .as_deref()
        .map(CommunicationType::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", e.0))?;
    let limit = paging::limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = CommunicationFilter {
        customer_id,
        communication_type,
        project_id,
        public_only: caller.role() == Role::Customer,
        before,
        limit: limit + 1,
    };
    let mut rows = communications::list(&state.pool, &filter).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|last| encode_cursor(last.created_at, last.id))
    } else {
        None
    };
    let communications: Vec<Value> = rows.iter().map(records::communication_json).collect();
    Ok(Json(
        json!({ "communications": communications, "next_cursor": next_cursor }),
    ))
}

/// The conversation a listing is about: the one named, if the caller may see it; a
/// customer who names none gets their own; staff who name none get every one.
pub(crate) fn visible_customer(
    caller: &Caller,
    named: Option<&str>,
) -> ApiResult<Option<CustomerId>> {
    match (named, caller.own_customer()) {
        (Some(raw), _) => {
            let customer =
                CustomerId::parse(raw).map_err(|e| ApiError::bad_request("invalid_query", e.0))?;
            caller.ensure_sees(&customer)?;
            Ok(Some(customer))
        }
        (None, Some(own)) => Ok(Some(own.clone())),
        (None, None) if caller.role() == Role::Crew => Err(ApiError::Forbidden(
            "crew members see only what is shared with their crew".into(),
        )),
        (None, None) => Ok(None),
    }
}

fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    paging::encode(&[&paging::time_part(created_at), &id.to_string()])
}

fn decode_cursor(raw: &str) -> ApiResult<(DateTime<Utc>, Uuid)> {
    let [at, id] = paging::decode::<2>(raw).ok_or_else(paging::foreign_cursor)?;
    let at = paging::parse_time_part(&at).ok_or_else(paging::foreign_cursor)?;
    let id = Uuid::parse_str(&id).map_err(|_| paging::foreign_cursor())?;
    Ok((at, id))
}

/// Loads a communication the caller may see; anything else is a 404.
async fn visible_communication(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
) -> ApiResult<Communication> {
    let id = parse_uuid(raw_id, "id")?;
    let mut conn = state.pool.acquire().await?;
    let found = communications::find(&mut conn, id).await?;
    visible(&mut conn, caller, id, found).await
}

/// The communication if the caller may see it: another customer's is as unknown as
/// one that does not exist (a 404, so ids cannot be probed).
/// A customer never sees an internal note; a crew member sees the messages of their
/// crew's projects.
async fn visible(
    conn: &mut PgConnection,
    caller: &Caller,
    id: Uuid,
    found: Option<Communication>,
) -> ApiResult<Communication> {
    let not_found = || ApiError::NotFound(format!("no communication {id}"));
    let communication = found.ok_or_else(not_found)?;
    let sees = match (caller.role(), communication.project_id) {
        (Role::Crew, Some(project)) => {
            crews::member_sees_project(conn, caller.user_id(), project).await?
        }
        (Role::Crew, None) => false,
        (Role::Customer, _) if communication.visibility == Visibility::Internal => false,
        _ => caller.ensure_sees(&communication.customer_id).is_ok(),
    };
    if sees {
        Ok(communication)
    } else {
        Err(not_found())
    }
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
        "read_by": c.read_by,
        "read": c.read_at.is_some(),
        "updated_at": c.updated_at,
        "fallback": c.fallback_id.map(|id| json!({ "channel": c.fallback_channel, "communication_id": id })),
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
    let receiver_is_customer = communication.direction == Direction::Outbound;
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
    let job = NewJob::of(&payload)
        .for_communication(communication.id)
        .for_customer(&communication.customer_id);
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    #[serde(alias = "content")]
    message: String,
}

/// Only in-app messages change after they are sent: an SMS or email has already left
/// for the customer's phone or mailbox, and a call happened.
fn ensure_changeable(c: &Communication, what: &str) -> ApiResult<()> {
    let why = match c.communication_type {
        CommunicationType::InApp => None,
        CommunicationType::Sms => Some("an SMS has already gone to the customer's phone"),
        CommunicationType::Email => Some("an email has already gone to the customer's mailbox"),
        CommunicationType::Phone => Some("a call log records what happened"),
    };
    if let Some(why) = why {
        return Err(ApiError::Conflict(format!(
            "communication {} cannot be {what}: {why}; only in-app messages can",
            c.id
        )));
    }
    if c.deleted_at.is_some() {
        return Err(ApiError::Conflict(format!(
            "communication {} was deleted",
            c.id
        )));
    }
    Ok(())
}

pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<EditMessage>,
) -> ApiResult<Json<Value>> {
    let edit = Change::Edit {
        message: &request.message,
    };
    change(&state, &caller, &id, edit).await
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    change(&state, &caller, &id, Change::Delete).await
}

/// Edits or deletes, on the row locked once: visibility, kind, permission and the new
/// text are all judged on it.
async fn change(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    change: Change<'_>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid(raw_id, "id")?;
    let mut tx = state.pool.begin().await?;
    let found = communications::lock(&mut tx, id).await?;
    let before = visible(&mut tx, caller, id, found).await?;
    let (verb, staff_may) = match change {
        Change::Edit { .. } => ("edited", false),
        Change::Delete => ("deleted", true),
    };
    if change == Change::Delete
        && before.deleted_at.is_some()
        && before.communication_type == CommunicationType::InApp
    {
        // Deleting again changes nothing: the same tombstone.
        return Ok(Json(records::communication_json(&before)));
    }
    ensure_changeable(&before, verb)?;
    let own = before.sender_id == caller.user_id();
    if !(own || (staff_may && caller.role().sees_every_customer())) {
        return Err(ApiError::Forbidden(if staff_may {
            "only its sender or staff may delete a message".into()
        } else {
            "only its sender may edit a message".into()
        }));
    }
    // Files alone need no text (nothing visible counts as none); otherwise the text must
    // have something to read.
    let text;
    let change = match change {
        Change::Edit { message } => {
            let has_files = before.attachments.as_array().is_some_and(|a| !a.is_empty());
            text = if has_files && is_blank(message) {
                String::new()
            } else {
                MessageText::parse(message)
                    .map_err(|e| ApiError::Invalid(e.0))?
                    .as_str()
                    .to_owned()
            };
            Change::Edit { message: &text }
        }
        Change::Delete => Change::Delete,
    };
    let editor = Editor {
        user_id: caller.user_id(),
        role: caller.role().as_str(),
    };
    let after = writes::change_message(&mut tx, &before, change, editor).await?;
    tx.commit().await?;
    state.outbox.notify_one();
    Ok(Json(records::communication_json(&after)))
}
