//! `/healthz`: the process answers. `/readyz`: the database and the broker are reachable
//! (as the background checks last saw them, so it answers at once).

use std::sync::atomic::Ordering;

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn alive() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// From what the background checks know: answers at once, whatever is down.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = state.health.database_up();
    let broker = state.broker_up.load(Ordering::Relaxed);
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
            "database": word(database),
            "broker": word(broker),
        })),
    )
}
