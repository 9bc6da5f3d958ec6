//! The operators' endpoints over HTTP, and what their failures mean for an exit code.

use commcenter_providers::error::error_chain;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::Exit;

/// A request that did not end in a 2xx, worded for the operator and mapped to the
/// exit code a script can act on.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Usage,
            message: message.into(),
        }
    }

    fn from_status(status: StatusCode, body: &[u8]) -> Self {
        let exit = match status.as_u16() {
            404 => Exit::NotFound,
            409 => Exit::Refused,
            401 | 403 => Exit::Unauthorized,
            400..=499 => Exit::Usage,
            _ => Exit::Unavailable,
        };
        // The API's own words when it sent its error shape; the start of the body if not.
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                if text.trim().is_empty() {
                    "no explanation given".to_owned()
                } else {
                    text.trim().to_owned()
                }
            });
        Self {
            exit,
            message: format!("{message} (HTTP {})", status.as_u16()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// One API, one operator token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base: &str, token: String) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::usage(format!(
                "--api-url must start with http:// or https://, not {base:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Failure {
                exit: Exit::Unavailable,
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self { http, base, token })
    }

    pub async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Value> {
        self.send(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e: reqwest::Error| Failure {
            exit: Exit::Unavailable,
            message: format!("cannot reach the API at {}: {}", self.base, error_chain(&e)),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(Failure::from_status(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| Failure {
            exit: Exit::Unavailable,
            message: format!("the API answered {status} with a body that is not JSON: {e}"),
        })
    }
}
