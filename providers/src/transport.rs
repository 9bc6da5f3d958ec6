//! The HTTP client both providers use, and one request's round trip read into an
//! [`Answer`] or a classified transport failure.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;

use crate::error::{ProviderError, transport_error};

/// Idle connections kept per host: enough for the workers' concurrency (≥ 500 sends a
/// second at 100 ms latency is 50 in flight, with bursts well above).
const IDLE_CONNECTIONS_PER_HOST: usize = 512;

/// A client whose calls may overlap freely, with `timeout` from connect to last byte.
/// Connecting gets a shorter limit: a host that cannot be reached fails fast, and as
/// certainly-not-sent (transient) rather than unknown. TLS is rustls on ring: reqwest
/// falls back to ring when the process installed no other rustls provider.
pub(crate) fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let connect_timeout = (timeout / 2).min(Duration::from_secs(5));
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(concat!("commcenter/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// A provider's answer, whatever its status.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON of type `T`; a 2xx whose body we cannot read is permanent (the
    /// provider's API changed under us), and says what it was.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            ProviderError::permanent(
                "unreadable_answer",
                format!(
                    "{what}: unreadable answer ({error}): {}",
                    String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
                ),
            )
        })
    }
}

/// Sends `request` and reads the whole answer. `what` names the call in errors.
pub(crate) async fn execute(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<Answer, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|error| transport_error(what, &error))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // The request was answered: losing the body now leaves the outcome unknown.
    let body = response
        .bytes()
        .await
        .map_err(|error| transport_error(what, &error))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}
