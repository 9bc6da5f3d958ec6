//! RingCentral and Gmail: sends, logged calls and RingCentral's webhook.

use axum::Router;

use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
