//! Presence: who has a WebSocket open on this api instance. (Presence across several
//! instances needs presence events on the broker; this answers for one.)

use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::{Value, json};

use commcenter_shared::domain::UserId;

use crate::{
    auth::Caller,
    error::{ApiError, ApiResult},
    startup::AppState,
};

pub async fn online_users(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.ensure_staff()?;
    let users: Vec<Value> = state
        .hub
        .online_users()
        .into_iter()
        .map(|(user, role)| json!({ "user_id": user, "role": role }))
        .collect();
    Ok(Json(json!({ "online_users": users })))
}

pub async fn user_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = UserId::parse(&user_id).map_err(|e| ApiError::bad_request("invalid_path", e.0))?;
    if user != caller.0.sub {
        caller.ensure_staff()?;
    }
    let online = state.hub.online_users().iter().any(|(u, _)| *u == user);
    Ok(Json(
        json!({ "user_id": user, "status": if online { "online" } else { "offline" } }),
    ))
}
