//! Bearer-token authentication and the tenant rules: a customer sees and acts only on
//! their own conversation; staff and operators on any; crew on what is shared with
//! their crew (nothing is shared yet, so nothing).

use axum::{extract::FromRequestParts, http::request::Parts};

use commcenter_shared::{
    domain::{CustomerId, Role},
    platform::auth::{self, Claims},
};

use crate::{error::ApiError, state::AppState};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    pub fn role(&self) -> Role {
        self.0.role
    }

    pub fn user_id(&self) -> &str {
        self.0.sub.as_str()
    }

    /// May this caller see `customer`'s conversation? Wrong tenants get a 404, the same
    /// answer as for a conversation that does not exist, so ids cannot be probed.
    pub fn ensure_sees(&self, customer: &CustomerId) -> Result<(), ApiError> {
        match self.0.role {
            Role::Staff | Role::Operator => Ok(()),
            Role::Customer
                if self
                    .0
                    .customer_id
                    .as_ref()
                    .is_some_and(|own| own == customer) =>
            {
                Ok(())
            }
            Role::Customer => Err(ApiError::NotFound(format!(
                "no conversation for customer {customer}"
            ))),
            Role::Crew => Err(ApiError::Forbidden(
                "crew members see only what is shared with their crew".into(),
            )),
        }
    }

    /// The customer whose conversation a customer caller is bound to.
    pub fn own_customer(&self) -> Option<&CustomerId> {
        match self.0.role {
            Role::Customer => self.0.customer_id.as_ref(),
            _ => None,
        }
    }

    /// Only operators see the job ledger and replay or discard jobs.
    pub fn ensure_operator(&self) -> Result<(), ApiError> {
        if self.0.role == Role::Operator {
            Ok(())
        } else {
            Err(ApiError::Forbidden("only operators may do this".into()))
        }
    }

    pub fn ensure_staff(&self) -> Result<(), ApiError> {
        if self.0.role.sees_every_customer() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("only staff may do this".into()))
        }
    }
}

pub fn verify(state: &AppState, token: &str) -> Result<Claims, ApiError> {
    auth::verify_with(
        token,
        state.settings.auth.jwt_secret.expose(),
        chrono::Utc::now().timestamp(),
        state.settings.auth.token_times,
    )
    .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

impl Caller {
    /// The caller the `Authorization: Bearer` header names, its token verified.
    pub fn from_headers(
        state: &AppState,
        headers: &axum::http::HeaderMap,
    ) -> Result<Self, ApiError> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be Bearer <token>".into())
            })?;
        verify(state, token.trim()).map(Caller)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Verified already by the rate limiter, when it ran.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        Self::from_headers(state, &parts.headers)
    }
}
