//! `POST /api/integrations/ringcentral/webhook`: RingCentral's to call (no bearer token:
//! its verification token instead). Each notification is recorded once, by its `uuid`,
//! as a `ringcentral.event` job, and answered at once.

use axum::{
    Json,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use commcenter_shared::ledger::jobs::{self, NewJob, payloads};

use super::Refusal;
use crate::{error::ApiError, state::AppState};
use commcenter_shared::domain::text;

/// RingCentral's subscription handshake: the header to echo.
const VALIDATION_TOKEN: &str = "validation-token";
/// The token our subscription was created with, on every notification.
const VERIFICATION_TOKEN: &str = "verification-token";
/// Longer notification ids than this are not RingCentral's.
const NOTIFICATION_ID_MAX: usize = 200;

pub async fn ringcentral(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    if let Some(token) = headers.get(VALIDATION_TOKEN) {
        let mut response = StatusCode::OK.into_response();
        response
            .headers_mut()
            .insert(VALIDATION_TOKEN, token.clone());
        return Ok(response);
    }
    let expected = state.settings.ringcentral.webhook_token.expose();
    if expected.is_empty() {
        return Err(Refusal::NotConfigured(
            "RingCentral's webhook is not configured here (RINGCENTRAL_WEBHOOK_TOKEN)".into(),
        ));
    }
    let given = headers
        .get(VERIFICATION_TOKEN)
        .ok_or_else(|| ApiError::Unauthorized("missing Verification-Token header".into()))?;
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(ApiError::Forbidden("wrong Verification-Token".into()).into());
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(
                "the notification is larger than the limit (MAX_BODY_BYTES)".into(),
            )
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })?;
    let notification = notification(&body)?;
    let uuid = notification["uuid"].as_str().unwrap_or_default().to_owned();
    let event = notification["event"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // The job goes first; a repeat finds the receipt taken and rolls the job back.
    let mut tx = state.pool.begin().await?;
    let job_id = jobs::enqueue(
        &mut tx,
        NewJob::of(&payloads::RingCentralEvent { notification }),
        state.settings.jobs.max_attempts,
    )
    .await?;
    let taken = sqlx::query(
        "INSERT INTO webhook_receipts (provider, notification_id, event, job_id)
         VALUES ('ringcentral', $1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&uuid)
    .bind(&event)
    .bind(job_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if taken == 0 {
        tx.rollback().await?;
        return Ok((StatusCode::OK, Json(json!({ "status": "duplicate" }))).into_response());
    }
    tx.commit().await?;
    state.outbox.notify_one();
    Ok((
        StatusCode::OK,
        Json(json!({ "status": "accepted", "job_id": job_id })),
    )
        .into_response())
}

/// The envelope: a JSON object with a `uuid`, an `event` and a `body`. Kept whole for
/// the job (`subscriptionId`, `timestamp` and whatever RingCentral adds).
pub fn notification(raw: &[u8]) -> Result<Value, ApiError> {
    let refuse = |message: String| ApiError::bad_request("invalid_notification", message);
    let envelope: Map<String, Value> = serde_json::from_slice(raw).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the notification is not a JSON object: {e}"),
        )
    })?;
    match envelope.get("uuid").and_then(Value::as_str) {
        Some(uuid) if !uuid.trim().is_empty() && uuid.len() <= NOTIFICATION_ID_MAX => {}
        _ => {
            return Err(refuse(format!(
                "uuid: required, a string of 1 to {NOTIFICATION_ID_MAX} characters"
            )));
        }
    }
    match envelope.get("event").and_then(Value::as_str) {
        Some(event) if !event.trim().is_empty() => {}
        _ => return Err(refuse("event: required, the event filter's path".into())),
    }
    if !envelope.get("body").is_some_and(Value::is_object) {
        return Err(refuse("body: required, an object".into()));
    }
    // Kept as RingCentral sent it, but for NUL, which `jsonb` cannot hold: refusing
    // would have RingCentral send it again and again.
    let mut envelope = Value::Object(envelope);
    text::make_storable(&mut envelope);
    Ok(envelope)
}
