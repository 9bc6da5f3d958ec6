//! The fake RingCentral: OAuth (JWT and refresh grants), SMS and MMS, the message store,
//! the call log and webhook subscriptions, with rate-limit groups and scripted faults.
//!
//! Layout: `auth` (token endpoint, bearer check), `rate_limit` (groups and windows),
//! `messages` (send, message store, status changes), `call_log`, `subscriptions`
//! (handshake and notifications), `listing` (date windows and paging of lists),
//! `control` (the `/_fake/` API).

mod auth;
mod call_log;
mod control;
mod listing;
mod messages;
mod rate_limit;
mod subscriptions;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::faults::{Endpoint, Fault, FaultPlan};
use crate::server::{Connection, Observer, Recorded, Server, lock};

pub use rate_limit::{RateGroup, RateLimit, RateLimits};

/// The account and extension every record of this fake belongs to (`~` in paths).
pub const ACCOUNT_ID: u64 = 400_100_100_100;
pub const EXTENSION_ID: u64 = 400_200_200_200;

/// errorCode of a 400 for a `to` number listed in `no_sms_numbers` (check: not confirmed
/// in RingCentral's documentation).
pub const NOT_SMS_CAPABLE: &str = "MSG-246";

/// How a test or a user configures the fake RingCentral.
#[derive(Debug, Clone)]
pub struct RingCentralConfig {
    /// The app's credentials, checked on the token endpoint's HTTP Basic header.
    pub client_id: String,
    pub client_secret: String,
    /// The one JWT assertion the JWT grant accepts.
    pub jwt: String,
    /// The E.164 number the extension owns: the only `from` the SMS endpoints accept.
    pub from_number: String,
    /// `expires_in` of issued access tokens.
    pub access_token_ttl: Duration,
    /// Requests allowed per group and window.
    pub rate_limits: RateLimits,
    /// Added to every provider answer (benchmarks).
    pub latency: Duration,
    /// Numbers that cannot receive SMS: a send to one is refused with [`NOT_SMS_CAPABLE`].
    pub no_sms_numbers: Vec<String>,
    /// Where to listen; `None` is 127.0.0.1 on a free port.
    pub addr: Option<SocketAddr>,
}

impl Default for RingCentralConfig {
    fn default() -> Self {
        Self {
            client_id: "fake-rc-client-id".to_owned(),
            client_secret: "fake-rc-client-secret".to_owned(),
            jwt: "fake-rc-jwt".to_owned(),
            from_number: "+16505550100".to_owned(),
            access_token_ttl: Duration::from_secs(3600),
            rate_limits: RateLimits::default(),
            latency: Duration::ZERO,
            no_sms_numbers: Vec::new(),
            addr: None,
        }
    }
}

/// A running fake RingCentral. Stops when dropped.
pub struct FakeRingCentral {
    state: Arc<RingCentral>,
    server: Server,
}

impl FakeRingCentral {
    pub async fn start(config: RingCentralConfig) -> anyhow::Result<Self> {
        let listener = Server::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let observer = Arc::new(Observer::new(config.latency));
        let state = Arc::new(RingCentral {
            base_url: format!("http://{addr}"),
            rate: rate_limit::RateLimiter::new(config.rate_limits.clone()),
            config,
            observer: observer.clone(),
            faults: FaultPlan::default(),
            tokens: Mutex::default(),
            store: Mutex::default(),
            calls: Mutex::default(),
            subscriptions: Mutex::default(),
            http: reqwest::Client::builder()
                .timeout(subscriptions::HANDSHAKE_TIMEOUT)
                .build()?,
            next_id: AtomicU64::new(1_000_000_001),
        });
        let server = Server::start(listener, router(state.clone()), observer)?;
        Ok(Self { state, server })
    }

    /// The base URL (`http://127.0.0.1:PORT`, no trailing slash): RingCentral's server URL.
    pub fn url(&self) -> String {
        self.state.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn config(&self) -> &RingCentralConfig {
        &self.state.config
    }

    /// The next `times` requests to `endpoint` meet `fault` (after the rate limit counts them).
    pub fn fail_next(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        self.state.faults.add(endpoint, fault, times);
    }

    /// Every access token issued so far becomes expired: the next API call gets 401.
    pub fn expire_tokens(&self) {
        lock(&self.state.tokens).expire_all();
    }

    /// The JWT and every refresh token are revoked: the token endpoint answers invalid_grant.
    pub fn revoke(&self) {
        lock(&self.state.tokens).revoke();
    }

    /// How many requests reached the token endpoint (answered or not).
    pub fn token_requests(&self) -> usize {
        lock(&self.state.tokens).requests
    }

    /// Every provider request received (not the `/_fake/` control API), in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.observer.requests()
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state.observer.set_latency(latency);
    }

    /// The message-store records of every accepted outbound SMS and MMS, oldest first, as
    /// `GET …/message-store/{id}` returns them (`id` is a JSON number, as RingCentral's).
    pub fn sent(&self) -> Vec<Value> {
        self.state.sent()
    }

    /// Moves a message to `status` (`Queued`, `Sent`, `Delivered`, `DeliveryFailed`,
    /// `SendingFailed`) and, in the background, tells message-store subscribers that a
    /// message changed. False if the id is unknown or the status is not one of those.
    pub fn set_status(&self, id: impl std::fmt::Display, status: &str) -> bool {
        messages::set_status(&self.state, &id.to_string(), status)
    }

    /// Seeds the call log. Missing `id`, `sessionId`, `uri` and `startTime` (now) are filled
    /// in; returns the record's id.
    pub fn add_call(&self, record: Value) -> String {
        call_log::add(&self.state, record)
    }

    /// A text from `from` to the extension's number: stored as a `Received` message, then
    /// pushed to every subscription (the message-store event with its id, and the instant
    /// event with the whole message). Returns once every webhook has answered or failed.
    pub async fn inbound_sms(&self, from: &str, text: &str) -> u64 {
        messages::inbound_sms(&self.state, from, text).await
    }

    /// The active webhook subscriptions' records.
    pub fn subscriptions(&self) -> Vec<Value> {
        lock(&self.state.subscriptions)
            .iter()
            .map(|subscription| subscription.record.clone())
            .collect()
    }

    /// Stops accepting and lets in-flight requests finish.
    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

/// The state behind every handler.
struct RingCentral {
    config: RingCentralConfig,
    base_url: String,
    observer: Arc<Observer>,
    faults: FaultPlan,
    tokens: Mutex<auth::Tokens>,
    rate: rate_limit::RateLimiter,
    store: Mutex<messages::Store>,
    calls: Mutex<Vec<Value>>,
    subscriptions: Mutex<Vec<subscriptions::Subscription>>,
    http: reqwest::Client,
    next_id: AtomicU64,
}

impl RingCentral {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn extension_uri(&self) -> String {
        format!(
            "{}/restapi/v1.0/account/{ACCOUNT_ID}/extension/{EXTENSION_ID}",
            self.base_url
        )
    }

    /// Everything around an endpoint's own work: the rate-limit group counts the request
    /// and labels the answer, a scripted fault may replace the answer, the bearer token is
    /// checked (`bearer`), and `Stall` holds the answer and `AcceptThenDrop` drops the
    /// connection after the work.
    async fn serve(
        &self,
        endpoint: Endpoint,
        group: RateGroup,
        bearer: Option<&HeaderMap>,
        connection: &Connection,
        work: impl Future<Output = Response>,
    ) -> Response {
        let rate = match self.rate.take(group) {
            Ok(rate) => rate,
            Err(limited) => return limited.into_response(),
        };
        let (mut drop_after, mut stall) = (false, None);
        match self.faults.take(endpoint) {
            None => {}
            Some(Fault::Stall(duration)) => stall = Some(duration),
            Some(Fault::AcceptThenDrop) => drop_after = true,
            Some(fault) => return rate.label(fault_response(fault)),
        }
        if let Some(headers) = bearer
            && let Err(refused) = auth::check_bearer(self, headers)
        {
            return rate.label(refused);
        }
        let response = work.await;
        if let Some(duration) = stall {
            // The work is done first, so a client that gives up still leaves its effect.
            tokio::time::sleep(duration).await;
        }
        if drop_after {
            return connection.drop_unanswered().await;
        }
        rate.label(response)
    }
}

fn router(state: Arc<RingCentral>) -> Router {
    let extension = "/restapi/v1.0/account/{account}/extension/{extension}";
    Router::new()
        .route("/restapi/oauth/token", post(auth::token))
        .route(&format!("{extension}/sms"), post(messages::send_sms))
        .route(&format!("{extension}/mms"), post(messages::send_mms))
        .route(&format!("{extension}/message-store"), get(messages::list))
        .route(
            &format!("{extension}/message-store/{{id}}"),
            get(messages::get),
        )
        .route(&format!("{extension}/call-log"), get(call_log::list))
        .route(
            "/restapi/v1.0/subscription",
            post(subscriptions::create).get(subscriptions::list),
        )
        .route(
            "/restapi/v1.0/subscription/{id}",
            get(subscriptions::get).delete(subscriptions::delete),
        )
        .merge(control::router())
        .with_state(state)
}

/// RingCentral's error body: `{"errorCode","message","errors":[{"errorCode","message","parameterName"?}]}`.
fn error(status: StatusCode, code: &str, message: &str, parameter: Option<&str>) -> Response {
    let mut detail = json!({ "errorCode": code, "message": message });
    if let Some(parameter) = parameter {
        detail["parameterName"] = json!(parameter);
    }
    (
        status,
        axum::Json(json!({ "errorCode": code, "message": message, "errors": [detail] })),
    )
        .into_response()
}

/// The answer a scripted fault stands for, in RingCentral's words.
fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::Status {
            status,
            body,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            with_retry_after((status, axum::Json(body)).into_response(), retry_after)
        }
        Fault::RateLimited { retry_after } => {
            with_retry_after(rate_limit::exceeded_body(), retry_after)
        }
        // (check) CMN-201 is what RingCentral's gateway has been seen to answer with a 503.
        Fault::ServerError(status) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "CMN-201",
            "Service Temporary Unavailable",
            None,
        ),
        Fault::ExpiredToken => auth::expired_token(),
        Fault::InvalidGrant => auth::invalid_grant("OAU-211", "Token is revoked"),
        Fault::Stall(_) | Fault::AcceptThenDrop => {
            unreachable!("stalls and drops change how the normal answer is given, not what it is")
        }
    }
}

fn with_retry_after(mut response: Response, retry_after: Option<u64>) -> Response {
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
    }
    response
}

/// Whether `number` is E.164: `+`, a non-zero digit, at most 15 digits in all.
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|byte| byte.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// The query string as a map (the last value of a repeated key wins).
fn query_map(query: Option<&str>) -> HashMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::is_e164;

    #[test]
    fn e164_numbers_are_plus_and_up_to_fifteen_digits() {
        assert!(is_e164("+16505550100"));
        assert!(is_e164("+442071838750"));
        assert!(!is_e164("16505550100"));
        assert!(!is_e164("+1650555010a"));
        assert!(!is_e164("+01234"));
        assert!(!is_e164("+1234567890123456"));
    }
}
