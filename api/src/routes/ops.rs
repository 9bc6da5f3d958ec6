//! The operators' endpoints under `/api/ops/`: jobs, replays, discards, queue health.

use axum::Router;

use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
