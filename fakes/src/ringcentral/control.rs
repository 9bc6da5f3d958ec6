//! The fake RingCentral's `/_fake/` control API: `GET sent`, `GET requests`,
//! `POST faults`, `POST inbound-sms`, `POST status`, `POST calls`, `POST expire-tokens`,
//! `POST revoke`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{RingCentral, messages};
use crate::control::{refused, requests_json};
use crate::faults::{Fault, FaultRequest};
use crate::server::lock;

pub(super) fn router() -> Router<Arc<RingCentral>> {
    Router::new()
        .route(
            "/_fake/sent",
            get(|State(rc): State<Arc<RingCentral>>| async move { Json(json!(rc.sent())) }),
        )
        .route(
            "/_fake/requests",
            get(|State(rc): State<Arc<RingCentral>>| async move {
                requests_json(&rc.observer.requests())
            }),
        )
        .route("/_fake/faults", post(add_fault))
        .route("/_fake/inbound-sms", post(inbound_sms))
        .route("/_fake/status", post(set_status))
        .route("/_fake/calls", post(add_call))
        .route("/_fake/expire-tokens", post(expire_tokens))
        .route("/_fake/revoke", post(revoke))
}

async fn add_fault(
    State(rc): State<Arc<RingCentral>>,
    Json(request): Json<FaultRequest>,
) -> StatusCode {
    rc.faults
        .add(request.endpoint, Fault::from(request.fault), request.times);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct InboundSms {
    from: String,
    text: String,
}

async fn inbound_sms(State(rc): State<Arc<RingCentral>>, Json(sms): Json<InboundSms>) -> Response {
    if !super::is_e164(&sms.from) {
        return refused("from must be an E.164 number");
    }
    let id = messages::inbound_sms(&rc, &sms.from, &sms.text).await;
    Json(json!({ "id": id })).into_response()
}

#[derive(Deserialize)]
struct StatusChange {
    id: Value,
    status: String,
}

async fn set_status(
    State(rc): State<Arc<RingCentral>>,
    Json(change): Json<StatusChange>,
) -> Response {
    let id = change
        .id
        .as_str()
        .map_or_else(|| change.id.to_string(), str::to_owned);
    if messages::set_status(&rc, &id, &change.status) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        refused(
            "unknown message id, or status not one of Queued, Sent, Delivered, DeliveryFailed, SendingFailed",
        )
    }
}

async fn add_call(State(rc): State<Arc<RingCentral>>, Json(record): Json<Value>) -> Json<Value> {
    Json(json!({ "id": super::call_log::add(&rc, record) }))
}

async fn expire_tokens(State(rc): State<Arc<RingCentral>>) -> StatusCode {
    lock(&rc.tokens).expire_all();
    StatusCode::NO_CONTENT
}

async fn revoke(State(rc): State<Arc<RingCentral>>) -> StatusCode {
    lock(&rc.tokens).revoke();
    StatusCode::NO_CONTENT
}
