//! Webhook subscriptions: creation with the `Validation-Token` handshake, and the
//! notifications the fake pushes (message-store changes, instant inbound SMS).
//!
//! The SUB-5xx codes are (check).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{ACCOUNT_ID, EXTENSION_ID, RateGroup, RingCentral, error};
use crate::faults::Endpoint;
use crate::server::{Connection, lock};

/// RingCentral gives a webhook this long to echo the validation token.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_EXPIRES_IN: u64 = 604_800;

pub(super) struct Subscription {
    pub(super) record: Value,
    id: String,
    address: String,
    verification_token: Option<String>,
    filters: Vec<String>,
}

pub(super) async fn create(
    State(rc): State<Arc<RingCentral>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let work = async {
        match subscribe(&rc, &body).await {
            Ok(record) => Json(record).into_response(),
            Err(refusal) => refusal,
        }
    };
    rc.serve(
        Endpoint::Subscription,
        RateGroup::Medium,
        Some(&headers),
        &connection,
        work,
    )
    .await
}

fn bad_request(code: &str, message: &str, parameter: Option<&str>) -> Response {
    error(StatusCode::BAD_REQUEST, code, message, parameter)
}

async fn subscribe(rc: &RingCentral, body: &[u8]) -> Result<Value, Response> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|_| bad_request("CMN-101", "Request body is not valid JSON", None))?;
    let filters: Vec<String> = request["eventFilters"]
        .as_array()
        .map(|filters| {
            filters
                .iter()
                .filter_map(|filter| filter.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if filters.is_empty() {
        return Err(bad_request(
            "CMN-100",
            "Parameter [eventFilters] is not specified",
            Some("eventFilters"),
        ));
    }
    let mode = &request["deliveryMode"];
    if mode["transportType"] != "WebHook" {
        return Err(bad_request(
            "CMN-101",
            "Parameter [deliveryMode.transportType] value is invalid",
            Some("deliveryMode.transportType"),
        ));
    }
    let address = mode["address"]
        .as_str()
        .filter(|address| address.starts_with("http://") || address.starts_with("https://"))
        .ok_or_else(|| {
            bad_request(
                "CMN-101",
                "Parameter [deliveryMode.address] value is invalid",
                Some("deliveryMode.address"),
            )
        })?;
    validate_webhook(rc, address).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let expires_in = request["expiresIn"].as_u64().unwrap_or(DEFAULT_EXPIRES_IN);
    // RingCentral's longest for a webhook: 10 years.
    if !(1..=315_360_000).contains(&expires_in) {
        return Err(bad_request(
            "CMN-101",
            "Parameter [expiresIn] value is invalid",
            Some("expiresIn"),
        ));
    }
    let now = Utc::now();
    let expanded: Vec<String> = filters.iter().map(|filter| expand(filter)).collect();
    let record = json!({
        "uri": format!("{}/restapi/v1.0/subscription/{id}", rc.base_url),
        "id": id,
        "creationTime": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "status": "Active",
        "eventFilters": expanded,
        "expirationTime": (now + chrono::Duration::seconds(i64::try_from(expires_in).unwrap_or(i64::MAX / 1000)))
            .to_rfc3339_opts(SecondsFormat::Millis, true),
        "expiresIn": expires_in,
        "deliveryMode": { "transportType": "WebHook", "address": address, "encryption": false },
    });
    lock(&rc.subscriptions).push(Subscription {
        record: record.clone(),
        id,
        address: address.to_owned(),
        verification_token: mode["verificationToken"].as_str().map(str::to_owned),
        filters: expanded,
    });
    Ok(record)
}

/// RingCentral's handshake: POST with a `Validation-Token` the webhook must echo in a
/// header of a 200 answer within 3 s.
async fn validate_webhook(rc: &RingCentral, address: &str) -> Result<(), Response> {
    let token = uuid::Uuid::new_v4().to_string();
    let answer = rc
        .http
        .post(address)
        .header("Validation-Token", &token)
        .send()
        .await
        .map_err(|_| {
            bad_request(
                "SUB-521",
                "Invalid URL or WebHook did not answer in time",
                Some("deliveryMode.address"),
            )
        })?;
    if answer.status() != reqwest::StatusCode::OK {
        return Err(bad_request(
            "SUB-522",
            "WebHook responds with incorrect HTTP status",
            Some("deliveryMode.address"),
        ));
    }
    let echoed = answer
        .headers()
        .get("validation-token")
        .and_then(|value| value.to_str().ok());
    if echoed != Some(token.as_str()) {
        return Err(bad_request(
            "SUB-523",
            "WebHook responds with incorrect validation token",
            Some("deliveryMode.address"),
        ));
    }
    Ok(())
}

/// `~` in a filter stands for the account or extension of the token's owner.
fn expand(filter: &str) -> String {
    filter
        .replacen("/account/~", &format!("/account/{ACCOUNT_ID}"), 1)
        .replacen("/extension/~", &format!("/extension/{EXTENSION_ID}"), 1)
}

fn path_of(filter: &str) -> &str {
    filter.split('?').next().unwrap_or(filter)
}

pub(super) async fn list(
    State(rc): State<Arc<RingCentral>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let records: Vec<Value> = lock(&rc.subscriptions)
            .iter()
            .map(|subscription| subscription.record.clone())
            .collect();
        Json(json!({ "records": records })).into_response()
    };
    rc.serve(
        Endpoint::Subscription,
        RateGroup::Light,
        Some(&headers),
        &connection,
        work,
    )
    .await
}

pub(super) async fn get(
    State(rc): State<Arc<RingCentral>>,
    Extension(connection): Extension<Connection>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let subscriptions = lock(&rc.subscriptions);
        match subscriptions
            .iter()
            .find(|subscription| subscription.id == id)
        {
            Some(subscription) => Json(subscription.record.clone()).into_response(),
            None => not_found(),
        }
    };
    rc.serve(
        Endpoint::Subscription,
        RateGroup::Light,
        Some(&headers),
        &connection,
        work,
    )
    .await
}

pub(super) async fn delete(
    State(rc): State<Arc<RingCentral>>,
    Extension(connection): Extension<Connection>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let mut subscriptions = lock(&rc.subscriptions);
        let before = subscriptions.len();
        subscriptions.retain(|subscription| subscription.id != id);
        if subscriptions.len() == before {
            not_found()
        } else {
            StatusCode::NO_CONTENT.into_response()
        }
    };
    rc.serve(
        Endpoint::Subscription,
        RateGroup::Medium,
        Some(&headers),
        &connection,
        work,
    )
    .await
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "CMN-102",
        "Resource for parameter [subscriptionId] is not found",
        Some("subscriptionId"),
    )
}

/// The message-store event (ids and counts only) to subscribers of `…/message-store`.
pub(super) async fn notify_changed(rc: &RingCentral, id: u64, new: bool) {
    let body = json!({
        "extensionId": EXTENSION_ID,
        "lastUpdated": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "changes": [{
            "type": "SMS",
            "newCount": u32::from(new),
            "updatedCount": u32::from(!new),
            // RingCentral lists new messages only; an update says just that something changed.
            "newMessageIds": if new { vec![id] } else { Vec::new() },
        }],
    });
    notify(
        rc,
        |filter| path_of(filter).ends_with("/message-store"),
        body,
    )
    .await;
}

/// The instant event (the whole message) to subscribers of `…/message-store/instant?type=SMS`.
pub(super) async fn notify_instant(rc: &RingCentral, message: &Value) {
    notify(
        rc,
        |filter| path_of(filter).ends_with("/message-store/instant"),
        message.clone(),
    )
    .await;
}

/// POSTs the envelope to every subscription with a filter that `wants`; failures are
/// logged, as RingCentral drops what a webhook does not take.
async fn notify(rc: &RingCentral, wants: impl Fn(&str) -> bool, body: Value) {
    let targets: Vec<(String, String, Option<String>, String)> = lock(&rc.subscriptions)
        .iter()
        .filter_map(|subscription| {
            let filter = subscription.filters.iter().find(|filter| wants(filter))?;
            Some((
                subscription.id.clone(),
                subscription.address.clone(),
                subscription.verification_token.clone(),
                filter.clone(),
            ))
        })
        .collect();
    for (subscription_id, address, verification_token, event) in targets {
        let envelope = json!({
            "uuid": uuid::Uuid::new_v4().to_string(),
            "event": event,
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "subscriptionId": subscription_id,
            "ownerId": EXTENSION_ID.to_string(),
            "body": body,
        });
        let mut request = rc.http.post(&address).json(&envelope);
        if let Some(token) = verification_token {
            request = request.header("Verification-Token", token);
        }
        if let Err(error) = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
        {
            tracing::warn!(%error, %address, "fake RingCentral: webhook notification not taken");
        }
    }
}
