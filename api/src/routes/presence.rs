//! Presence: who has a WebSocket open on any api instance ([`crate::presence`]).
//!
//! - `GET /api/communications/online-users`: staff see everyone online; a customer sees
//!   the staff who are (support's availability), never other customers.
//! - `GET /api/communications/user/{user_id}/status`: a user's own, any user's for
//!   staff; for a customer, staff read as they are and anyone else as offline.

use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::{Value, json};

use commcenter_shared::domain::{Role, UserId};

use crate::{
    auth::Caller,
    error::{ApiError, ApiResult},
    state::AppState,
};

/// May the caller know whether someone of `role` is online?
fn may_know(caller: &Caller, role: Role) -> bool {
    match caller.role() {
        Role::Staff | Role::Operator => true,
        Role::Customer => role.sees_every_customer(),
        Role::Crew => false,
    }
}

pub async fn online_users(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    if caller.role() == Role::Crew {
        return Err(ApiError::Forbidden(
            "crew members see only what is shared with their crew".into(),
        ));
    }
    let users: Vec<Value> = state
        .presence
        .online_users()
        .await?
        .into_iter()
        .filter_map(|(user, role, customer)| {
            let role = Role::parse(&role).ok()?;
            may_know(&caller, role).then(|| match customer {
                // A customer's conversation: staff see who of them is online.
                Some(customer) => json!({ "user_id": user, "role": role, "customer_id": customer }),
                None => json!({ "user_id": user, "role": role }),
            })
        })
        .collect();
    Ok(Json(json!({ "online_users": users })))
}

pub async fn user_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = UserId::parse(&user_id).map_err(|e| ApiError::bad_request("invalid_path", e.0))?;
    // The user themselves, and staff (docs/http-api.md). A customer learns staff's
    // availability from the online users, which lists staff only.
    if !matches!(caller.role(), Role::Staff | Role::Operator) && user != caller.0.sub {
        return Err(ApiError::Forbidden(format!(
            "a {} may ask only about themselves; GET /api/communications/online-users lists the staff online",
            caller.role().as_str()
        )));
    }
    let online = state.presence.status(&user).await?.is_some();
    Ok(Json(json!({
        "user_id": user,
        "status": if online { "online" } else { "offline" },
    })))
}
