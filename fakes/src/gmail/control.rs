//! The fake Gmail's `/_fake/` control API: `GET sent`, `GET requests`, `POST faults`,
//! `POST daily-limit` (`{"exceeded": bool}`), `POST expire-tokens`, `POST revoke`,
//! `POST inbox` (an RFC 5322 message as the body arrives in the inbox: `{"id"}`),
//! `POST expire-history`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Gmail;
use crate::control::requests_json;
use crate::faults::{Fault, FaultRequest};
use crate::server::lock;

pub(super) fn router() -> Router<Arc<Gmail>> {
    Router::new()
        .route("/_fake/sent", get(sent))
        .route(
            "/_fake/requests",
            get(|State(gmail): State<Arc<Gmail>>| async move {
                requests_json(&gmail.observer.requests())
            }),
        )
        .route("/_fake/faults", post(add_fault))
        .route("/_fake/daily-limit", post(daily_limit))
        .route("/_fake/expire-tokens", post(expire_tokens))
        .route("/_fake/revoke", post(revoke))
        .route("/_fake/inbox", post(receive))
        .route(
            "/_fake/expire-history",
            post(|State(gmail): State<Arc<Gmail>>| async move {
                gmail.expire_history();
                StatusCode::NO_CONTENT
            }),
        )
}

async fn receive(
    State(gmail): State<Arc<Gmail>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, (StatusCode, &'static str)> {
    gmail
        .receive(&body)
        .map(|id| Json(json!({ "id": id })))
        .ok_or((
            StatusCode::BAD_REQUEST,
            "the body is not an RFC 5322 message",
        ))
}

async fn sent(State(gmail): State<Arc<Gmail>>) -> Json<Value> {
    let sent: Vec<Value> = lock(&gmail.mailbox)
        .iter()
        .filter(|stored| stored.label == "SENT")
        .map(|stored| {
            let mail = &stored.mail;
            json!({
                "id": mail.id, "threadId": mail.thread_id, "messageId": mail.message_id, "from": mail.from,
                "to": mail.to, "subject": mail.subject, "inReplyTo": mail.in_reply_to, "references": mail.references,
                "size": mail.raw.len(),
                "attachments": mail.attachments.iter()
                    .map(|file| json!({ "name": file.name, "contentType": file.content_type, "size": file.size }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!(sent))
}

async fn add_fault(
    State(gmail): State<Arc<Gmail>>,
    Json(request): Json<FaultRequest>,
) -> StatusCode {
    gmail
        .faults
        .add(request.endpoint, Fault::from(request.fault), request.times);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct DailyLimit {
    exceeded: bool,
}

async fn daily_limit(State(gmail): State<Arc<Gmail>>, Json(limit): Json<DailyLimit>) -> StatusCode {
    *lock(&gmail.daily_limit_exceeded) = limit.exceeded;
    StatusCode::NO_CONTENT
}

async fn expire_tokens(State(gmail): State<Arc<Gmail>>) -> StatusCode {
    lock(&gmail.tokens).expire_all();
    StatusCode::NO_CONTENT
}

async fn revoke(State(gmail): State<Arc<Gmail>>) -> StatusCode {
    lock(&gmail.tokens).revoked = true;
    StatusCode::NO_CONTENT
}
