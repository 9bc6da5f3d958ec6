//! The fake Gmail: Google's OAuth token endpoint (`POST /token`, refresh grant) and the
//! Gmail API's `messages.send` (simple and upload), `messages.list` (the `rfc822msgid:`
//! lookup) and `messages.get`, with per-minute quota units and scripted faults.
//!
//! Layout: `auth` (token endpoint, bearer check), `send` (the three ways to send and the
//! checks on the message), `inbox` (mail coming in, `getProfile`, `history.list`),
//! `lookup` (list and get), `control` (the `/_fake/` API).

mod auth;
mod control;
mod inbox;
mod lookup;
mod send;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::faults::{Endpoint, Fault, FaultPlan};
use crate::server::{Connection, Observer, Recorded, Server, lock};

/// Which answer Google gives when the per-minute quota runs out: it answers either,
/// so clients must classify by `reason`, and tests script both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaAnswer {
    /// 429 `rateLimitExceeded`.
    TooManyRequests,
    /// 403 `userRateLimitExceeded`.
    Forbidden,
}

/// How a test or a user configures the fake Gmail.
#[derive(Debug, Clone)]
pub struct GmailConfig {
    /// The OAuth client's credentials, checked on `POST /token`.
    pub client_id: String,
    pub client_secret: String,
    /// The one refresh token the token endpoint accepts (reusable, as Google's).
    pub refresh_token: String,
    /// The mailbox's address: the only `From` (and `userId` besides `me`) accepted.
    pub sender: String,
    /// `expires_in` of issued access tokens.
    pub access_token_ttl: Duration,
    /// Quota units per minute (`messages.send` costs 100, `list` and `get` 5).
    pub quota_units_per_minute: u32,
    /// The answer when the quota runs out.
    pub quota_answer: QuotaAnswer,
    /// Added to every provider answer (benchmarks).
    pub latency: Duration,
    /// Where to listen; `None` is 127.0.0.1 on a free port.
    pub addr: Option<SocketAddr>,
}

impl Default for GmailConfig {
    fn default() -> Self {
        Self {
            client_id: "fake-google-client-id.apps.googleusercontent.com".to_owned(),
            client_secret: "fake-google-client-secret".to_owned(),
            refresh_token: "fake-gmail-refresh-token".to_owned(),
            sender: "office@example.com".to_owned(),
            access_token_ttl: Duration::from_secs(3599),
            quota_units_per_minute: 100_000_000,
            quota_answer: QuotaAnswer::TooManyRequests,
            latency: Duration::ZERO,
            addr: None,
        }
    }
}

/// A message the fake accepted for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMail {
    pub id: String,
    pub thread_id: String,
    /// The RFC 5322 message exactly as received (decoded from base64url when sent simply).
    pub raw: Bytes,
    /// Without angle brackets.
    pub message_id: String,
    /// The address of `From`.
    pub from: String,
    /// The addresses of `To`.
    pub to: Vec<String>,
    pub subject: String,
    /// Without angle brackets.
    pub in_reply_to: Option<String>,
    /// Without angle brackets, in order.
    pub references: Vec<String>,
    pub attachments: Vec<SentAttachment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentAttachment {
    pub name: Option<String>,
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: usize,
}

/// A running fake Gmail. Stops when dropped.
pub struct FakeGmail {
    state: Arc<Gmail>,
    server: Server,
}

impl FakeGmail {
    pub async fn start(config: GmailConfig) -> anyhow::Result<Self> {
        let listener = Server::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let observer = Arc::new(Observer::new(config.latency));
        let state = Arc::new(Gmail {
            base_url: format!("http://{addr}"),
            quota_answer: Mutex::new(config.quota_answer),
            config,
            observer: observer.clone(),
            faults: FaultPlan::default(),
            tokens: Mutex::default(),
            quota: Mutex::new((Instant::now(), 0)),
            daily_limit_exceeded: Mutex::new(false),
            mailbox: Mutex::default(),
            history: Mutex::new((FIRST_HISTORY_ID, 0)),
        });
        let server = Server::start(listener, router(state.clone()), observer)?;
        Ok(Self { state, server })
    }

    /// The base URL (no trailing slash): both the token URL's host (`{url}/token`) and the
    /// Gmail API's (`{url}/gmail/v1/…`, `{url}/upload/gmail/v1/…`).
    pub fn url(&self) -> String {
        self.state.base_url.clone()
    }

    /// `{url}/token`.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.state.base_url)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn config(&self) -> &GmailConfig {
        &self.state.config
    }

    /// The next `times` requests to `endpoint` (`Token`, `Send` or `Search`) meet `fault`.
    pub fn fail_next(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        self.state.faults.add(endpoint, fault, times);
    }

    /// Every access token issued so far expires: the next API call gets 401 authError.
    pub fn expire_tokens(&self) {
        lock(&self.state.tokens).expire_all();
    }

    /// The refresh token is revoked: `POST /token` answers 400 invalid_grant from now on.
    pub fn revoke(&self) {
        lock(&self.state.tokens).revoked = true;
    }

    pub fn token_requests(&self) -> usize {
        lock(&self.state.tokens).requests
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.observer.requests()
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state.observer.set_latency(latency);
    }

    /// Every message accepted for sending, oldest first.
    pub fn sent(&self) -> Vec<SentMail> {
        lock(&self.state.mailbox)
            .iter()
            .filter(|stored| stored.label == "SENT")
            .map(|stored| stored.mail.clone())
            .collect()
    }

    /// `raw` (an RFC 5322 message) arrives in the inbox, threaded with the message it
    /// answers; its Gmail id, or `None` if it does not parse.
    pub fn receive(&self, raw: &[u8]) -> Option<String> {
        self.state.receive(raw)
    }

    /// Every history position given so far becomes too old: `history.list` from any of
    /// them answers 404 (Google keeps about a week).
    pub fn expire_history(&self) {
        self.state.expire_history();
    }

    /// From now on (`true`) sends answer 403 `dailyLimitExceeded`, until set back.
    pub fn mark_daily_limit(&self, exceeded: bool) {
        *lock(&self.state.daily_limit_exceeded) = exceeded;
    }

    /// Which answer the per-minute quota gives when it runs out.
    pub fn set_quota_answer(&self, answer: QuotaAnswer) {
        *lock(&self.state.quota_answer) = answer;
    }

    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

/// The state behind every handler.
struct Gmail {
    config: GmailConfig,
    base_url: String,
    observer: Arc<Observer>,
    faults: FaultPlan,
    tokens: Mutex<auth::Tokens>,
    /// The current minute's start and the units used in it.
    quota: Mutex<(Instant, u32)>,
    quota_answer: Mutex<QuotaAnswer>,
    daily_limit_exceeded: Mutex<bool>,
    mailbox: Mutex<Vec<send::Stored>>,
    /// The mailbox's history: the last position given, and the oldest start position
    /// `history.list` still answers (older: 404, as Google's after about a week).
    history: Mutex<(u64, u64)>,
}

/// Where a new mailbox's history starts.
const FIRST_HISTORY_ID: u64 = 1000;

impl Gmail {
    fn next_history_id(&self) -> u64 {
        let mut history = lock(&self.history);
        history.0 += 1;
        history.0
    }

    fn current_history_id(&self) -> u64 {
        lock(&self.history).0
    }

    fn oldest_history_id(&self) -> u64 {
        lock(&self.history).1
    }

    fn expire_history(&self) {
        let mut history = lock(&self.history);
        history.1 = history.0 + 1;
    }

    /// Everything around an endpoint's own work: a scripted fault may replace the answer,
    /// the bearer token is checked (API calls), the call's quota units are charged, and
    /// `Stall` holds the answer and `AcceptThenDrop` drops the
    /// connection after the work.
    async fn serve(
        &self,
        endpoint: Endpoint,
        api_call: Option<(&HeaderMap, &str, u32)>,
        connection: &Connection,
        work: impl Future<Output = Response>,
    ) -> Response {
        let (mut drop_after, mut stall) = (false, None);
        match self.faults.take(endpoint) {
            None => {}
            Some(Fault::Stall(duration)) => stall = Some(duration),
            Some(Fault::AcceptThenDrop) => drop_after = true,
            Some(fault) => return fault_response(fault),
        }
        if let Some((headers, user_id, units)) = api_call {
            if let Err(refused) = auth::check_bearer(self, headers) {
                return refused;
            }
            if user_id != "me" && user_id != self.config.sender {
                return error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!("Delegation denied for {user_id}"),
                );
            }
            if let Err(refused) = self.charge(endpoint, units) {
                return refused;
            }
        }
        let response = work.await;
        if let Some(duration) = stall {
            // The work is done first, so a client that gives up still leaves its effect.
            tokio::time::sleep(duration).await;
        }
        if drop_after {
            return connection.drop_unanswered().await;
        }
        response
    }

    fn charge(&self, endpoint: Endpoint, units: u32) -> Result<(), Response> {
        if endpoint == Endpoint::Send && *lock(&self.daily_limit_exceeded) {
            return Err(usage_limit(
                StatusCode::FORBIDDEN,
                "dailyLimitExceeded",
                "Daily Limit Exceeded",
            ));
        }
        let mut quota = lock(&self.quota);
        let now = Instant::now();
        if now.duration_since(quota.0) >= Duration::from_secs(60) {
            *quota = (now, 0);
        }
        if quota.1.saturating_add(units) > self.config.quota_units_per_minute {
            return Err(match *lock(&self.quota_answer) {
                QuotaAnswer::TooManyRequests => usage_limit(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rateLimitExceeded",
                    "Rate Limit Exceeded",
                ),
                QuotaAnswer::Forbidden => usage_limit(
                    StatusCode::FORBIDDEN,
                    "userRateLimitExceeded",
                    "User Rate Limit Exceeded",
                ),
            });
        }
        quota.1 += units;
        Ok(())
    }
}

fn router(state: Arc<Gmail>) -> Router {
    Router::new()
        .route("/token", post(auth::token))
        .route(
            "/gmail/v1/users/{user_id}/messages/send",
            post(send::simple),
        )
        .route(
            "/upload/gmail/v1/users/{user_id}/messages/send",
            post(send::upload),
        )
        .route("/gmail/v1/users/{user_id}/profile", get(inbox::profile))
        .route("/gmail/v1/users/{user_id}/history", get(inbox::history))
        .route("/gmail/v1/users/{user_id}/messages", get(lookup::list))
        .route("/gmail/v1/users/{user_id}/messages/{id}", get(lookup::get))
        .merge(control::router())
        .with_state(state)
}

/// The HTTP status's canonical gRPC name, as Google's error bodies carry it.
fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        413 => "OUT_OF_RANGE",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// Google's error body: `{"error":{"code","message","errors":[{"message","domain","reason"}],"status"}}`.
fn google_error(status: StatusCode, domain: &str, reason: &str, message: &str) -> Response {
    let body = json!({ "error": {
        "code": status.as_u16(),
        "message": message,
        "errors": [{ "message": message, "domain": domain, "reason": reason }],
        "status": status_name(status),
    }});
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, reason: &str, message: &str) -> Response {
    google_error(status, "global", reason, message)
}

fn usage_limit(status: StatusCode, reason: &str, message: &str) -> Response {
    google_error(status, "usageLimits", reason, message)
}

fn fault_response(fault: Fault) -> Response {
    let (mut response, retry_after) = match fault {
        Fault::Status {
            status,
            body,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            ((status, axum::Json(body)).into_response(), retry_after)
        }
        Fault::RateLimited { retry_after } => (
            usage_limit(
                StatusCode::TOO_MANY_REQUESTS,
                "rateLimitExceeded",
                "Rate Limit Exceeded",
            ),
            retry_after,
        ),
        Fault::ServerError(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (
                error(
                    status,
                    "backendError",
                    "The service is currently unavailable.",
                ),
                None,
            )
        }
        Fault::ExpiredToken => (auth::unauthenticated(), None),
        Fault::InvalidGrant => (auth::invalid_grant(), None),
        Fault::Stall(_) | Fault::AcceptThenDrop => {
            unreachable!("stalls and drops change how the normal answer is given, not what it is")
        }
    };
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
    }
    response
}
