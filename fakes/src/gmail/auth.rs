//! Google's `POST /token` (refresh grant) and the bearer check of Gmail API calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Gmail;
use crate::faults::Endpoint;
use crate::server::{Connection, lock};

const SCOPE: &str =
    "https://www.googleapis.com/auth/gmail.send https://www.googleapis.com/auth/gmail.readonly";

#[derive(Default)]
pub(super) struct Tokens {
    access: HashMap<String, Instant>,
    pub(super) revoked: bool,
    pub(super) requests: usize,
}

impl Tokens {
    pub(super) fn expire_all(&mut self) {
        let now = Instant::now();
        self.access.values_mut().for_each(|expires| *expires = now);
    }
}

pub(super) async fn token(
    State(gmail): State<Arc<Gmail>>,
    Extension(connection): Extension<Connection>,
    body: Bytes,
) -> Response {
    lock(&gmail.tokens).requests += 1;
    gmail
        .serve(Endpoint::Token, None, &connection, async {
            grant(&gmail, &body)
        })
        .await
}

fn grant(gmail: &Gmail, body: &[u8]) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid request body.",
        );
    };
    let form: HashMap<String, String> = form.into_iter().collect();
    let field = |name: &str| form.get(name).map(String::as_str);
    if field("client_id") != Some(gmail.config.client_id.as_str())
        || field("client_secret") != Some(gmail.config.client_secret.as_str())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    if field("grant_type") != Some("refresh_token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type.",
        );
    }
    let mut tokens = lock(&gmail.tokens);
    match field("refresh_token") {
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: refresh_token",
        ),
        Some(token) if tokens.revoked || token != gmail.config.refresh_token => invalid_grant(),
        Some(_) => {
            let access_token = format!("ya29.fake-{}", uuid::Uuid::new_v4().simple());
            tokens.access.insert(
                access_token.clone(),
                Instant::now() + gmail.config.access_token_ttl,
            );
            axum::Json(json!({
                "access_token": access_token,
                "expires_in": gmail.config.access_token_ttl.as_secs(),
                "scope": SCOPE,
                "token_type": "Bearer",
            }))
            .into_response()
        }
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// 400 `invalid_grant`: the refresh token was revoked or expired (permanent).
pub(super) fn invalid_grant() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "Token has been expired or revoked.",
    )
}

pub(super) fn check_bearer(gmail: &Gmail, headers: &HeaderMap) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let valid = token.is_some_and(|token| {
        lock(&gmail.tokens)
            .access
            .get(token.trim())
            .is_some_and(|expires| *expires > Instant::now())
    });
    if valid {
        Ok(())
    } else {
        Err(unauthenticated())
    }
}

/// 401 for a missing, unknown or expired access token, as Google words it.
pub(super) fn unauthenticated() -> Response {
    let message = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or \
                   other valid authentication credential.";
    let body = json!({ "error": {
        "code": 401,
        "message": message,
        "errors": [{ "message": "Invalid Credentials", "domain": "global", "reason": "authError",
                     "location": "Authorization", "locationType": "header" }],
        "status": "UNAUTHENTICATED",
    }});
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
    );
    response
}
