//! `POST /restapi/oauth/token` (JWT and single-use refresh grants, HTTP Basic client
//! credentials) and the bearer-token check every API call goes through.
//!
//! Error codes marked (check) were not confirmed in RingCentral's documentation; clients
//! should classify by status and `error`, not by them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::{EXTENSION_ID, RateGroup, RingCentral};
use crate::faults::Endpoint;
use crate::server::{Connection, lock};

const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const SCOPE: &str = "SMS ReadMessages ReadCallLog SubscriptionWebhook";

/// Issued tokens and their expiry.
#[derive(Default)]
pub(super) struct Tokens {
    access: HashMap<String, Instant>,
    refresh: HashMap<String, Instant>,
    revoked: bool,
    pub(super) requests: usize,
}

impl Tokens {
    pub(super) fn expire_all(&mut self) {
        let now = Instant::now();
        self.access.values_mut().for_each(|expires| *expires = now);
    }

    pub(super) fn revoke(&mut self) {
        self.revoked = true;
        self.refresh.clear();
    }
}

pub(super) async fn token(
    State(rc): State<Arc<RingCentral>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&rc.tokens).requests += 1;
    rc.serve(Endpoint::Token, RateGroup::Auth, None, &connection, async {
        grant(&rc, &headers, &body)
    })
    .await
}

fn grant(rc: &RingCentral, headers: &HeaderMap, body: &[u8]) -> Response {
    if !client_authenticated(rc, headers) {
        // (check) OAU-123 is listed by RingCentral as a 401 client-authentication error.
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "OAU-123",
            "Client authentication is required",
        );
    }
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            crate::server::media_type(value) == "application/x-www-form-urlencoded"
        });
    let form: Option<HashMap<String, String>> = form_encoded
        .then(|| serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).ok())
        .flatten()
        .map(|pairs| pairs.into_iter().collect());
    let Some(form) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "OAU-250",
            "Unsupported request content type",
        );
    };
    let mut tokens = lock(&rc.tokens);
    match form.get("grant_type").map(String::as_str) {
        Some(JWT_GRANT) => match form.get("assertion") {
            None => oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "OAU-251",
                "Parameter [assertion] is missing",
            ),
            Some(_) if tokens.revoked => invalid_grant("OAU-211", "Token is revoked"),
            Some(assertion) if *assertion != rc.config.jwt => {
                invalid_grant("OAU-144", "Invalid JWT token")
            }
            Some(_) => issue(rc, &mut tokens),
        },
        Some("refresh_token") => {
            let Some(refresh_token) = form.get("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "OAU-251",
                    "Parameter [refresh_token] is missing",
                );
            };
            // Single use: the token is gone whether or not it was still valid.
            match tokens.refresh.remove(refresh_token) {
                Some(expires) if expires > Instant::now() => issue(rc, &mut tokens),
                Some(_) => invalid_grant("OAU-210", "Token is expired"),
                None => invalid_grant("OAU-213", "Token not found"),
            }
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "OAU-250",
            "Unsupported grant type",
        ),
    }
}

fn client_authenticated(rc: &RingCentral, headers: &HeaderMap) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{}:{}", rc.config.client_id, rc.config.client_secret);
    decoded == expected.as_bytes()
}

fn issue(rc: &RingCentral, tokens: &mut Tokens) -> Response {
    let now = Instant::now();
    let access_token = format!("rc-at-{}", uuid::Uuid::new_v4().simple());
    let refresh_token = format!("rc-rt-{}", uuid::Uuid::new_v4().simple());
    tokens
        .access
        .insert(access_token.clone(), now + rc.config.access_token_ttl);
    tokens
        .refresh
        .insert(refresh_token.clone(), now + REFRESH_TOKEN_TTL);
    axum::Json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": rc.config.access_token_ttl.as_secs(),
        "refresh_token": refresh_token,
        "refresh_token_expires_in": REFRESH_TOKEN_TTL.as_secs(),
        "scope": SCOPE,
        "owner_id": EXTENSION_ID.to_string(),
        "endpoint_id": format!("fake-endpoint-{}", rc.next_id()),
    }))
    .into_response()
}

/// Checks `Authorization: Bearer …` against the issued, unexpired access tokens.
pub(super) fn check_bearer(rc: &RingCentral, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        // (check) the API gateway's code for a missing header.
        return Err(super::error(
            StatusCode::UNAUTHORIZED,
            "AGW-401",
            "Authorization header is not specified",
            None,
        ));
    };
    match lock(&rc.tokens).access.get(token.trim()) {
        Some(expires) if *expires > Instant::now() => Ok(()),
        Some(_) => Err(expired_token()),
        None => Err(token_invalid("OAU-149", "Access token corrupted")),
    }
}

/// 401 for an expired access token (codes: check).
pub(super) fn expired_token() -> Response {
    token_invalid("OAU-213", "Access token expired")
}

fn token_invalid(code: &str, message: &str) -> Response {
    let body = json!({
        "errorCode": "TokenInvalid",
        "message": message,
        "errors": [{ "errorCode": code, "message": message }],
    });
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

/// 400 `invalid_grant`: the JWT or refresh token will never work again.
pub(super) fn invalid_grant(code: &str, description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", code, description)
}

/// RingCentral's OAuth error body: OAuth's `error`/`error_description` beside its own `errors`.
fn oauth_error(status: StatusCode, error: &str, code: &str, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": description,
        "errors": [{ "errorCode": code, "message": description }],
    });
    (status, axum::Json(body)).into_response()
}
