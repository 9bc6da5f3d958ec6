//! The one error type at the HTTP boundary: an explicit status per variant and a stable
//! body, `{"error": {"code": "...", "message": "..."}}`. Internal errors are logged with
//! their cause chain and never shown.

use axum::{
    Json,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::health::{DatabaseFailed, connection_lost};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, bad query, bad path).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Well-formed, but a field's value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// It existed, and cannot be had any more (a file that failed processing).
    #[error("{0}")]
    Gone(String),
    /// Not ready yet; the answer will change (a thumbnail still being made).
    #[error("{0}")]
    StillProcessing(String),
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// Over a limit of the caller's; retrying later will work.
    #[error("{0}")]
    TooManyRequests(String),
    /// A dependency is down; retrying later will work.
    #[error("{0}")]
    Unavailable(String),
    /// PostgreSQL cannot be reached.
    #[error("the database is unreachable; try again shortly")]
    DatabaseDown,
    /// Every database connection of this instance stayed busy for the pool's acquire
    /// timeout: the instance is overloaded, the database is not down.
    #[error("the server is busy (no database connection came free in time); try again in a moment")]
    Busy,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_query`, naming the parameter: `{parameter}: {problem}`.
    pub fn invalid_query(parameter: &str, problem: impl std::fmt::Display) -> Self {
        Self::bad_request("invalid_query", format!("{parameter}: {problem}"))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Gone(_) => (StatusCode::GONE, "gone"),
            Self::StillProcessing(_) => (StatusCode::CONFLICT, "still_processing"),
            Self::RangeNotSatisfiable(_) => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            Self::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Unavailable(_) | Self::DatabaseDown => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

/// Why a database error is no fault of the request, if it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatabaseTrouble {
    /// No pooled connection came in time: the api is overloaded. (While the database
    /// is down, new connections fail at once: [`crate::health`].)
    Busy,
    /// The connection failed or the server is shutting down or refusing connections.
    Down,
}

fn database_trouble(error: &anyhow::Error) -> Option<DatabaseTrouble> {
    error
        .chain()
        .find_map(|cause| match cause.downcast_ref::<sqlx::Error>()? {
            sqlx::Error::PoolTimedOut => Some(DatabaseTrouble::Busy),
            lost if connection_lost(lost) => Some(DatabaseTrouble::Down),
            _ => None,
        })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (this, down) = match self {
            Self::Internal(error) => match database_trouble(&error) {
                Some(DatabaseTrouble::Down) => {
                    tracing::warn!(error = format!("{error:#}"), "the database is out of reach");
                    (Self::DatabaseDown, true)
                }
                Some(DatabaseTrouble::Busy) => {
                    tracing::warn!("no database connection came free in time: answered 503 busy");
                    (Self::Busy, false)
                }
                None => (Self::Internal(error), false),
            },
            other => (other, false),
        };
        let mut response = this.render();
        // A lost connection says the database is down; a busy pool says only that we
        // are.
        if down {
            response.extensions_mut().insert(DatabaseFailed);
        }
        response
    }
}

impl ApiError {
    fn render(&self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match self {
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                "something went wrong on our side; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let retry_after = match self {
            Self::StillProcessing(_)
            | Self::Unavailable(_)
            | Self::TooManyRequests(_)
            | Self::Busy => Some("1"),
            // A database outage is seldom over in a second.
            Self::DatabaseDown => Some("5"),
            _ => None,
        };
        let mut response = (
            status,
            Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(seconds),
            );
        }
        response
    }
}

/// Middleware: the router's own 405 (a path that exists, another method) has no body;
/// give it ours. (The router adds `Allow` after this runs, so the message points to it.)
pub async fn method_not_allowed_as_json(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let body = Json(json!({ "error": {
        "code": "method_not_allowed",
        "message": format!("{method} is not allowed on {path}; the Allow header lists the methods that are"),
    }}))
    .into_response();
    let (body_parts, body) = body.into_parts();
    parts.headers.extend(body_parts.headers);
    Response::from_parts(parts, body)
}

/// Middleware: headers longer in all than `HTTP_MAX_HEADER_BYTES` get our JSON 431
/// before any handler or token check sees them. (Far larger ones overflow hyper's read
/// buffer first and get its empty 431: see docs/limits.md.)
pub async fn headers_within_limit(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size <= limit {
        return next.run(request).await;
    }
    let body = Json(json!({ "error": {
        "code": "headers_too_large",
        "message": format!(
            "the request's headers are {size} bytes, more than the {limit} allowed (HTTP_MAX_HEADER_BYTES)"
        ),
    }}));
    (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, body).into_response()
}

pub type ApiResult<T> = Result<T, ApiError>;
