//! 503 at once while PostgreSQL is known to be down ([`Health`]), instead of waiting on
//! the pool; a request that meets a lost connection marks it down.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{error::ApiError, health::DatabaseFailed, state::AppState};

/// Only the API needs the database: the process's health, its metrics (which say
/// themselves what they could not read), the API description and the static pages
/// (the front door, the guides, the console, the portal) answer without it.
fn needs_database(path: &str) -> bool {
    path.starts_with("/api/") && path != "/api/openapi.json"
}

/// Middleware: 503 at once while the database is known to be down.
pub async fn refuse_while_down(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !state.health.database_up() && needs_database(request.uri().path()) {
        // The same answer as a request that finds the outage itself (Retry-After: 5).
        return ApiError::DatabaseDown.into_response();
    }
    let response = next.run(request).await;
    if response.extensions().get::<DatabaseFailed>().is_some() {
        state.health.database_failed();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_the_console_answer_without_the_database() {
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/openapi.json",
            "/ops",
            "/ops/app.js",
            "/",
            "/favicon.ico",
            "/docs/walkthrough.md",
            "/portal",
        ] {
            assert!(!needs_database(path), "{path}");
        }
        for path in ["/api/messages/send", "/api/communications", "/api/ws/alice"] {
            assert!(needs_database(path), "{path}");
        }
    }
}
