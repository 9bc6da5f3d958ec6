//! The `/_fake/` control API both fakes serve beside the provider's, so a person trying
//! the system (or a script) can do with curl what tests do with the library.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::server::Recorded;

/// The request log as JSON: method, path, query, status and the body (as text when it
/// is UTF-8, else its size).
pub(crate) fn requests_json(requests: &[Recorded]) -> Json<Value> {
    let requests: Vec<Value> = requests
        .iter()
        .map(|request| {
            let body = match std::str::from_utf8(&request.body) {
                Ok(text) => json!(text),
                Err(_) => json!(format!("<{} bytes of binary>", request.body.len())),
            };
            json!({
                "method": request.method, "path": request.path, "query": request.query,
                "status": request.status, "body": body,
            })
        })
        .collect();
    Json(json!(requests))
}

/// A control request that could not be done.
pub(crate) fn refused(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}
