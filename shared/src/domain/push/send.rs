//! One push to one browser (RFC 8030 §5): the encrypted payload POSTed to the
//! subscription's endpoint with our VAPID token, `TTL`, `Urgency` and `Topic`, and the
//! push service's answer sorted into what to do next.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{StatusCode, Url, header};
use sha2::{Digest as _, Sha256};

use super::{
    BASE64URL, VapidKey,
    message::{self, BrowserKeys},
};

/// How soon the browser should be woken (RFC 8030 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Low,
    Normal,
    High,
}

impl Urgency {
    fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

/// What to push, and to which browser.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub endpoint: &'a str,
    pub keys: BrowserKeys<'a>,
    pub payload: &'a [u8],
    /// How long the push service keeps it for a browser that is away.
    pub ttl: Duration,
    pub urgency: Urgency,
    /// A later push with the same topic replaces this one if it is still waiting: one
    /// current notification per conversation on a phone.
    pub topic: Option<&'a str>,
}

/// The push service's answer, as what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 201: accepted for delivery.
    Delivered,
    /// 404 or 410: the subscription is gone; forget it.
    Gone,
    /// 413: the payload is too large for this service; send a shorter one.
    TooLarge,
    /// 429, 5xx, or no answer: try again, after `after` when the service said.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Anything else (400, 401, 403: our token or request is wrong): retrying will not
    /// help.
    Refused { reason: String },
}

/// A `Topic` for `conversation`: RFC 8030 allows 32 characters of base64url, so a hash.
pub fn topic_for(conversation: &str) -> String {
    BASE64URL.encode(Sha256::digest(conversation.as_bytes()))[..32].to_owned()
}

/// Sends one push. Encryption failures (a broken stored key) are `Refused`.
pub async fn send(
    http: &reqwest::Client,
    key: &VapidKey,
    subject: &str,
    push: &Push<'_>,
) -> Outcome {
    let url = match Url::parse(push.endpoint) {
        Ok(url) => url,
        Err(e) => {
            return Outcome::Refused {
                reason: format!("the endpoint is not a URL: {e}"),
            };
        }
    };
    let body = match message::encrypt(push.payload, push.keys) {
        Ok(body) => body,
        Err(message::EncryptError::TooLarge(_)) => return Outcome::TooLarge,
        Err(e) => {
            return Outcome::Refused {
                reason: e.to_string(),
            };
        }
    };
    let audience = url.origin().ascii_serialization();
    let now = chrono::Utc::now().timestamp();
    let mut request = http
        .post(url)
        .header(
            header::AUTHORIZATION,
            message::authorization(key, &audience, subject, now),
        )
        .header(header::CONTENT_ENCODING, "aes128gcm")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("TTL", push.ttl.as_secs().to_string())
        .header("Urgency", push.urgency.as_str())
        .body(body);
    if let Some(topic) = push.topic {
        request = request.header("Topic", topic);
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => {
            return Outcome::Retry {
                after: None,
                reason: format!("the push service did not answer: {e}"),
            };
        }
    };
    let status = answer.status();
    let after = answer
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let said = answer.text().await.unwrap_or_default();
    let reason = format!(
        "the push service answered {status}: {}",
        said.chars().take(200).collect::<String>()
    );
    match status {
        StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED => Outcome::Delivered,
        StatusCode::NOT_FOUND | StatusCode::GONE => Outcome::Gone,
        StatusCode::PAYLOAD_TOO_LARGE => Outcome::TooLarge,
        StatusCode::TOO_MANY_REQUESTS => Outcome::Retry { after, reason },
        s if s.is_server_error() => Outcome::Retry { after, reason },
        _ => Outcome::Refused { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_32_base64url_characters_of_the_conversation() {
        let topic = topic_for("cust-42");
        assert_eq!(topic.len(), 32);
        assert!(
            topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(topic, topic_for("cust-42"));
        assert_ne!(topic, topic_for("cust-43"));
    }
}
