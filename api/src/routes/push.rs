//! Web Push subscriptions (`docs/push.md`): the VAPID public key a browser subscribes
//! with, and each signed-in person's own browsers. A subscription names a URL this
//! server will POST to, so its endpoint must be on an allowed push service
//! (`PUSH_ENDPOINT_ALLOW`); anything else is a 400 naming the field.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde_json::{Value, json};

use commcenter_shared::domain::push::{self, NewSubscription, Owner};

use super::parse_uuid;
use crate::{
    auth::Caller,
    body::JsonBody,
    error::{ApiError, ApiResult},
    state::AppState,
};

/// `GET /api/push/vapid-public-key`: any signed-in role.
pub async fn vapid_public_key(State(state): State<AppState>, _caller: Caller) -> Json<Value> {
    Json(json!({ "public_key": state.vapid.public_key() }))
}

/// `POST /api/push/subscriptions`: the browser's `PushSubscription.toJSON()`. 201 when
/// new; the same endpoint again updates it (200), whoever subscribed it before.
pub async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new =
        NewSubscription::parse(&body, &state.settings.push.endpoint_allow).map_err(|refusal| {
            ApiError::bad_request(
                "invalid_subscription",
                format!("{}: {}", refusal.field, refusal.problem),
            )
        })?;
    let owner = Owner {
        user_id: caller.user_id(),
        role: caller.role(),
        customer_id: caller.0.customer_id.as_ref(),
    };
    let mut conn = state.pool.acquire().await?;
    let (subscription, created) = push::subscribe(&mut conn, owner, &new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(subscription))))
}

/// `GET /api/push/subscriptions`: the caller's own browsers.
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let mut conn = state.pool.acquire().await?;
    let subscriptions = push::list(&mut conn, caller.user_id()).await?;
    Ok(Json(json!({ "subscriptions": subscriptions })))
}

/// `DELETE /api/push/subscriptions/{id}`: one of the caller's own; anyone else's is 404,
/// as one that does not exist.
pub async fn unsubscribe(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_uuid(&id, "id")?;
    let mut conn = state.pool.acquire().await?;
    if push::unsubscribe(&mut conn, caller.user_id(), id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no push subscription {id} of yours"
        )))
    }
}
