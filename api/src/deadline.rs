//! A request body must arrive within a total time (`HTTP_BODY_TIMEOUT_SECS`; uploads
//! `UPLOAD_BODY_TIMEOUT_SECS`), not merely keep trickling: a client sending a byte a
//! second would otherwise hold its connection and its handler for ever. Past the
//! deadline the body ends in an error, which the handler answers (400 or 408-like)
//! and the connection closes.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use futures_util::{StreamExt as _, stream};
use tokio::time::Instant;

use crate::state::AppState;

/// The error a body ends with past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTooSlow(Duration);

/// Middleware: gives the request's body its deadline.
pub async fn body_deadline(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let http = &state.settings.http;
    let limit = if request.uri().path() == "/api/communications/upload" {
        http.upload_body_timeout
    } else {
        http.body_timeout
    };
    // Nothing to wait for (most GETs).
    if axum::body::HttpBody::size_hint(request.body()).exact() == Some(0) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let deadline = Instant::now() + limit;
    let frames = body.into_data_stream();
    let timed = stream::unfold(Some(frames), move |frames| async move {
        let mut frames = frames?;
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Some(frame)) => Some((frame.map_err(axum::Error::new), Some(frames))),
            Ok(None) => None,
            Err(_) => Some((Err(axum::Error::new(BodyTooSlow(limit))), None)),
        }
    });
    next.run(Request::from_parts(parts, Body::from_stream(timed)))
        .await
}
