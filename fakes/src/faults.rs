//! Scripted failures: what a test asks a fake to do instead of (or on top of) answering.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::server::lock;

/// The provider endpoints a fault can be aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// The OAuth token endpoint (RingCentral `/restapi/oauth/token`, Google `/token`).
    Token,
    /// RingCentral SMS and MMS; Gmail `messages.send` (simple and upload).
    Send,
    /// RingCentral `GET …/message-store` and `…/message-store/{id}`.
    MessageStore,
    /// RingCentral `GET …/call-log`.
    CallLog,
    /// RingCentral `POST /restapi/v1.0/subscription`.
    Subscription,
    /// Gmail `messages.list` (the `rfc822msgid:` lookup) and `messages.get`.
    Search,
}

/// What a fake does to a request instead of its normal answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answers exactly this: any status, any JSON body, with `Retry-After` if given.
    Status {
        status: u16,
        body: serde_json::Value,
        retry_after: Option<u64>,
    },
    /// 429 in the provider's own body shape (RingCentral CMN-301, Google rateLimitExceeded).
    RateLimited { retry_after: Option<u64> },
    /// This 5xx status with the provider's error body.
    ServerError(u16),
    /// 401 as the provider says it when the access token has expired.
    ExpiredToken,
    /// The token endpoint's permanent refusal: Google 400 `invalid_grant`, RingCentral 400
    /// `invalid_grant` with an OAU error code.
    InvalidGrant,
    /// Does the work, then holds the answer this long: a client with a shorter timeout
    /// gives up although the effect happened (the message was sent).
    Stall(Duration),
    /// Does the effect (the message is recorded as sent) and then closes the connection
    /// without any answer: the outcome is unknown to the client.
    AcceptThenDrop,
}

/// Pending faults per endpoint, applied in the order they were scripted.
#[derive(Default)]
pub(crate) struct FaultPlan(Mutex<HashMap<Endpoint, VecDeque<(Fault, usize)>>>);

impl FaultPlan {
    pub(crate) fn add(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        if times > 0 {
            lock(&self.0)
                .entry(endpoint)
                .or_default()
                .push_back((fault, times));
        }
    }

    /// The fault for this request to `endpoint`, if one is pending; uses it up.
    pub(crate) fn take(&self, endpoint: Endpoint) -> Option<Fault> {
        let mut plan = lock(&self.0);
        let queue = plan.get_mut(&endpoint)?;
        let (fault, remaining) = queue.front_mut()?;
        let fault = fault.clone();
        *remaining -= 1;
        if *remaining == 0 {
            queue.pop_front();
        }
        Some(fault)
    }
}

/// A fault as the control API (`POST /_fake/faults`) takes it, e.g.
/// `{"endpoint":"send","fault":{"kind":"server_error","status":503},"times":2}`.
#[derive(Debug, Deserialize)]
pub(crate) struct FaultRequest {
    pub(crate) endpoint: Endpoint,
    pub(crate) fault: FaultSpec,
    #[serde(default = "one")]
    pub(crate) times: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum FaultSpec {
    Status {
        status: u16,
        body: serde_json::Value,
        retry_after: Option<u64>,
    },
    RateLimited {
        retry_after: Option<u64>,
    },
    ServerError {
        status: u16,
    },
    ExpiredToken,
    InvalidGrant,
    Stall {
        millis: u64,
    },
    AcceptThenDrop,
}

impl From<FaultSpec> for Fault {
    fn from(spec: FaultSpec) -> Self {
        match spec {
            FaultSpec::Status {
                status,
                body,
                retry_after,
            } => Fault::Status {
                status,
                body,
                retry_after,
            },
            FaultSpec::RateLimited { retry_after } => Fault::RateLimited { retry_after },
            FaultSpec::ServerError { status } => Fault::ServerError(status),
            FaultSpec::ExpiredToken => Fault::ExpiredToken,
            FaultSpec::InvalidGrant => Fault::InvalidGrant,
            FaultSpec::Stall { millis } => Fault::Stall(Duration::from_millis(millis)),
            FaultSpec::AcceptThenDrop => Fault::AcceptThenDrop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_apply_in_order_and_run_out() {
        let plan = FaultPlan::default();
        plan.add(Endpoint::Send, Fault::ServerError(503), 2);
        plan.add(Endpoint::Send, Fault::AcceptThenDrop, 1);
        plan.add(Endpoint::Token, Fault::InvalidGrant, 0);
        assert_eq!(plan.take(Endpoint::Send), Some(Fault::ServerError(503)));
        assert_eq!(plan.take(Endpoint::Send), Some(Fault::ServerError(503)));
        assert_eq!(plan.take(Endpoint::Send), Some(Fault::AcceptThenDrop));
        assert_eq!(plan.take(Endpoint::Send), None);
        assert_eq!(plan.take(Endpoint::Token), None);
    }

    #[test]
    fn control_api_spelling_parses() {
        let request: FaultRequest = serde_json::from_str(
            r#"{"endpoint":"call_log","fault":{"kind":"stall","millis":1500}}"#,
        )
        .expect("parses");
        assert_eq!(request.endpoint, Endpoint::CallLog);
        assert_eq!(request.times, 1);
        assert_eq!(
            Fault::from(request.fault),
            Fault::Stall(Duration::from_millis(1500))
        );
    }
}
