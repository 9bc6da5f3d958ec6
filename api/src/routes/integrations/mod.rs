//! RingCentral and Gmail: sends, logged calls and RingCentral's webhook, one module
//! each.
//!
//! - [`sms`]: `POST /api/integrations/ringcentral/sms` (SMS and MMS).
//! - [`email`]: `POST /api/integrations/gmail/send`, with replies kept in their thread.
//! - [`calls`]: `POST /api/integrations/ringcentral/call-log`.
//! - [`webhook`]: `POST /api/integrations/ringcentral/webhook`, RingCentral's to call.
//!
//! The sends validate everything the provider would refuse (so a job never dies of bad
//! input), then take the one accept path ([`crate::accept`]) and answer 202; a worker
//! talks to the provider. A provider that is not configured here answers 503
//! `provider_not_configured`.

pub mod calls;
pub mod email;
pub mod sms;
pub mod webhook;

use axum::{
    Json, Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

use crate::{error::ApiError, state::AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/integrations/ringcentral/sms", post(sms::send))
        .route("/api/integrations/gmail/send", post(email::send))
        .route("/api/integrations/ringcentral/call-log", post(calls::log))
        .route(
            "/api/integrations/ringcentral/webhook",
            post(webhook::ringcentral),
        )
}

/// Why a provider endpoint refused: an ordinary API error, or a provider this
/// deployment has no credentials for (503, and no retry helps until an operator sets
/// them, hence no `Retry-After`).
#[derive(Debug)]
pub enum Refusal {
    Api(ApiError),
    NotConfigured(String),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(error: sqlx::Error) -> Self {
        Self::Api(error.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Api(error) => error.into_response(),
            Self::NotConfigured(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": { "code": "provider_not_configured", "message": message } })),
            )
                .into_response(),
        }
    }
}

type Answer = Result<(StatusCode, Json<Value>), Refusal>;

/// A value refused, named by its field.
pub(crate) fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::Invalid(format!("{field}: {why}"))
}

pub(crate) fn ringcentral_ready(state: &AppState) -> Result<(), Refusal> {
    if state.settings.ringcentral.configured() {
        Ok(())
    } else {
        Err(Refusal::NotConfigured(
            "RingCentral is not configured here (RINGCENTRAL_CLIENT_ID, RINGCENTRAL_CLIENT_SECRET, RINGCENTRAL_JWT)".into(),
        ))
    }
}
