//! Gmail: composing RFC 5322 messages, sending them from the connected mailbox, and
//! finding an earlier send by its Message-ID (reconciliation after an unknown outcome).

use std::{sync::Arc, time::Duration};

use crate::settings::GmailSettings;
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD},
};
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use mail_builder::{
    MessageBuilder,
    headers::{content_type::ContentType, raw::Raw},
    mime::{BodyPart, MimePart},
};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

pub use crate::mms::Attachment;
use crate::{
    error::{Failure, ProviderError, failure_for_status, next_pacific_midnight, retry_after},
    mime,
    token::{self, Token, TokenCache, TokenSource},
    transport::{self, Answer},
};

/// The largest message Gmail sends (35 MiB).
pub const MAX_MESSAGE_BYTES: usize = 36_700_160;
/// Above this a message goes by the upload endpoint rather than as JSON.
pub const SIMPLE_SEND_MAX_BYTES: usize = 5 * 1024 * 1024;

/// An email to compose.
#[derive(Debug, Clone)]
pub struct Email {
    /// From [`message_id_for`]: the same communication always gets the same one.
    pub message_id: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// The Message-ID this replies to, and the thread's earlier ones (for `References`).
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// Gmail's thread, for replies (passed to [`Gmail::send`]; not a header).
    pub thread_id: Option<String>,
}

/// What Gmail says of a message in the mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentMail {
    pub id: String,
    pub thread_id: String,
    /// `SENT` once sent.
    #[serde(default)]
    pub label_ids: Vec<String>,
}

/// The Message-ID of a communication's email: `<{communication_id}@{sender's domain}>`,
/// so that a retry can look up whether an earlier attempt went out.
pub fn message_id_for(communication_id: Uuid, sender: &str) -> String {
    let domain = sender
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim().to_ascii_lowercase());
    let domain = domain
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("<{communication_id}@{domain}>")
}

/// The Gmail client for one mailbox: one per worker process, cloned into every task.
#[derive(Clone)]
pub struct Gmail {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api_url: String,
    tokens: TokenCache<RefreshToken>,
}

impl Gmail {
    pub fn new(settings: &GmailSettings) -> anyhow::Result<Self> {
        let http = transport::client(settings.timeout)?;
        let source = RefreshToken {
            http: http.clone(),
            token_url: settings.token_url.clone(),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.expose().to_owned(),
            refresh_token: settings.refresh_token.expose().to_owned(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                api_url: settings.api_url.clone(),
                tokens: TokenCache::new(source),
            }),
        })
    }

    /// The RFC 5322 message: text alone, or multipart/mixed with the attachments; UTF-8
    /// subject (RFC 2047) and file names (RFC 2231, and RFC 2047 in `name` for older
    /// readers); In-Reply-To and References for replies. Refuses bad addresses.
    pub fn compose(&self, email: &Email) -> Result<Vec<u8>, ProviderError> {
        compose(email, chrono::Utc::now())
    }

    /// Sends a composed message, in `thread_id` for replies: as JSON up to 5 MB, by the
    /// upload endpoint above; over 35 MiB is refused before any call.
    pub async fn send(
        &self,
        raw: Bytes,
        thread_id: Option<&str>,
    ) -> Result<SentMail, ProviderError> {
        if raw.len() > MAX_MESSAGE_BYTES {
            return Err(ProviderError::permanent(
                "message_too_large",
                format!(
                    "the email has {} bytes; Gmail sends at most {MAX_MESSAGE_BYTES}",
                    raw.len()
                ),
            ));
        }
        let what = "Gmail send";
        let answer = if raw.len() <= SIMPLE_SEND_MAX_BYTES {
            let mut body = json!({ "raw": URL_SAFE.encode(&raw) });
            if let Some(thread_id) = thread_id {
                body["threadId"] = json!(thread_id);
            }
            let body = Bytes::from(body.to_string());
            let url = format!("{}/gmail/v1/users/me/messages/send", self.inner.api_url);
            self.call(what, || {
                self.inner
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?
        } else {
            let (content_type, body) = upload_body(&raw, thread_id);
            let url = format!(
                "{}/upload/gmail/v1/users/me/messages/send?uploadType=multipart",
                self.inner.api_url
            );
            self.call(what, || {
                self.inner
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, &content_type)
                    .body(body.clone())
            })
            .await?
        };
        answer.json(what)
    }

    /// The message in the mailbox with this Message-ID (with or without angle brackets),
    /// if any: asks `messages.list` with `q=rfc822msgid:`, then the message's labels.
    pub async fn find_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Option<SentMail>, ProviderError> {
        #[derive(Deserialize)]
        struct Listed {
            id: String,
        }
        #[derive(Deserialize)]
        struct List {
            #[serde(default)]
            messages: Vec<Listed>,
        }
        let what = "Gmail message search";
        let bare = message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        let messages = format!("{}/gmail/v1/users/me/messages", self.inner.api_url);
        let query = [
            ("q", format!("rfc822msgid:{bare}")),
            ("includeSpamTrash", "true".to_owned()),
        ];
        let list: List = self
            .call(what, || self.inner.http.get(&messages).query(&query))
            .await?
            .json(what)?;
        let Some(found) = list.messages.into_iter().next() else {
            return Ok(None);
        };
        let url = format!("{messages}/{}", found.id);
        let answer = self
            .call(what, || {
                self.inner.http.get(&url).query(&[("format", "minimal")])
            })
            .await?;
        answer.json(what).map(Some)
    }

    /// The mailbox's current history position (`users.getProfile`): where incremental
    /// reading starts the first time.
    pub async fn history_now(&self) -> Result<u64, ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Profile {
            history_id: String,
        }
        let what = "Gmail profile";
        let url = format!("{}/gmail/v1/users/me/profile", self.inner.api_url);
        let profile: Profile = self
            .call(what, || self.inner.http.get(&url))
            .await?
            .json(what)?;
        history_position(what, &profile.history_id)
    }

    /// The messages added to the mailbox after position `start`, oldest first, every
    /// page of `users.history.list` (`historyTypes=messageAdded`), and the position to
    /// start from next time. A start Google no longer keeps is an error with
    /// `http_status` 404: read [`Gmail::received_after`] instead.
    pub async fn added_since(&self, start: u64) -> Result<(Vec<Added>, u64), ProviderError> {
        #[derive(Deserialize)]
        struct AddedMessage {
            message: Added,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Record {
            #[serde(default)]
            messages_added: Vec<AddedMessage>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            history: Vec<Record>,
            history_id: String,
            next_page_token: Option<String>,
        }
        let what = "Gmail history";
        let url = format!("{}/gmail/v1/users/me/history", self.inner.api_url);
        let mut added = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![
                ("startHistoryId", start.to_string()),
                ("historyTypes", "messageAdded".to_owned()),
                ("maxResults", "500".to_owned()),
            ];
            if let Some(token) = &page_token {
                query.push(("pageToken", token.clone()));
            }
            let page: Page = self
                .call(what, || self.inner.http.get(&url).query(&query))
                .await?
                .json(what)?;
            added.extend(
                page.history
                    .into_iter()
                    .flat_map(|record| record.messages_added)
                    .map(|m| m.message),
            );
            match page.next_page_token {
                Some(token) => page_token = Some(token),
                None => return Ok((added, history_position(what, &page.history_id)?)),
            }
        }
    }

    /// The ids of the messages received after `after` (epoch seconds), every page of
    /// `messages.list` with `q=after:`: the fallback when the history is too old.
    pub async fn received_after(&self, after: i64) -> Result<Vec<String>, ProviderError> {
        #[derive(Deserialize)]
        struct Listed {
            id: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct List {
            #[serde(default)]
            messages: Vec<Listed>,
            next_page_token: Option<String>,
        }
        let what = "Gmail message listing";
        let url = format!("{}/gmail/v1/users/me/messages", self.inner.api_url);
        let mut ids = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![
                ("q", format!("after:{after}")),
                ("maxResults", "500".into()),
            ];
            if let Some(token) = &page_token {
                query.push(("pageToken", token.clone()));
            }
            let list: List = self
                .call(what, || self.inner.http.get(&url).query(&query))
                .await?
                .json(what)?;
            ids.extend(list.messages.into_iter().map(|m| m.id));
            match list.next_page_token {
                Some(token) => page_token = Some(token),
                None => return Ok(ids),
            }
        }
    }

    /// One message as it was received (`messages.get`, `format=raw`).
    pub async fn raw_message(&self, id: &str) -> Result<RawMessage, ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            id: String,
            thread_id: String,
            #[serde(default)]
            label_ids: Vec<String>,
            raw: String,
        }
        let what = "Gmail message";
        let url = format!("{}/gmail/v1/users/me/messages/{id}", self.inner.api_url);
        let message: Raw = self
            .call(what, || {
                self.inner.http.get(&url).query(&[("format", "raw")])
            })
            .await?
            .json(what)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(message.raw.trim_end_matches('='))
            .map_err(|e| {
                ProviderError::permanent(
                    "unreadable_answer",
                    format!("{what}: raw is not base64url: {e}"),
                )
            })?;
        Ok(RawMessage {
            id: message.id,
            thread_id: message.thread_id,
            label_ids: message.label_ids,
            raw: bytes,
        })
    }

    /// One authorized call; on a 401 the token is refreshed once and the call sent again.
    async fn call(
        &self,
        what: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer, ProviderError> {
        let mut token_refused = false;
        loop {
            let lease = self.inner.tokens.get().await?;
            let answer =
                transport::execute(request().bearer_auth(&lease.access_token), what).await?;
            if answer.status == 401 && !token_refused {
                tracing::info!(what, "Gmail refused the access token; refreshing it once");
                self.inner.tokens.reject(&lease);
                token_refused = true;
                continue;
            }
            classify(
                what,
                answer.status,
                &answer.headers,
                &answer.body,
                Utc::now(),
            )?;
            return Ok(answer);
        }
    }
}

/// A message `history.list` says was added.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Added {
    pub id: String,
    pub thread_id: String,
    #[serde(default)]
    pub label_ids: Vec<String>,
}

/// A message as `messages.get` with `format=raw` gives it.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub id: String,
    pub thread_id: String,
    pub label_ids: Vec<String>,
    /// The RFC 5322 bytes.
    pub raw: Vec<u8>,
}

fn history_position(what: &str, raw: &str) -> Result<u64, ProviderError> {
    raw.parse().map_err(|_| {
        ProviderError::permanent(
            "unreadable_answer",
            format!("{what}: historyId {raw:?} is not a number"),
        )
    })
}

/// Reads a Gmail answer: `Ok` for 2xx, otherwise what the failure means, by Google's
/// `reason` where the status alone is ambiguous (403 and 429 carry quota errors both).
/// 401 reads as permanent: the client refreshes and retries once before it classifies.
pub fn classify(
    what: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), ProviderError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let (reason, detail) = google_error(body);
    let failure = match (status, reason.as_deref()) {
        (403 | 429, Some("dailyLimitExceeded")) => {
            let wait = (next_pacific_midnight(now) - now)
                .to_std()
                .unwrap_or(Duration::from_secs(3600));
            Failure::Transient {
                retry_after: Some(wait),
            }
        }
        (403, Some("rateLimitExceeded" | "userRateLimitExceeded")) => Failure::Transient {
            retry_after: retry_after(headers, now),
        },
        (403, _) => Failure::Permanent,
        _ => failure_for_status(status, headers, now),
    };
    let message = match (status, detail) {
        (401, _) => format!("{what}: Gmail refused the access token even after a refresh"),
        (_, Some(detail)) => format!("{what}: Gmail answered {status}: {detail}"),
        (_, None) => format!("{what}: Gmail answered {status}"),
    };
    Err(ProviderError {
        failure,
        http_status: Some(status),
        code: reason,
        message,
    })
}

/// Google's `{"error": {"message", "errors": [{"reason", "message"}]}}`: the first
/// reason and the message.
fn google_error(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Envelope {
        error: GoogleError,
    }
    #[derive(Deserialize)]
    struct GoogleError {
        message: Option<String>,
        #[serde(default)]
        errors: Vec<Item>,
        status: Option<String>,
    }
    #[derive(Deserialize)]
    struct Item {
        reason: Option<String>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => {
            let reason = error
                .errors
                .into_iter()
                .find_map(|item| item.reason)
                .or(error.status);
            (reason, error.message)
        }
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned();
            (None, (!text.is_empty()).then_some(text))
        }
    }
}

/// The mailbox's refresh token, exchanged for access tokens.
struct RefreshToken {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    refresh_token: String,
}

impl TokenSource for RefreshToken {
    async fn fetch(&self, _previous: Option<&Token>) -> Result<Token, ProviderError> {
        let what = "Gmail token refresh";
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("refresh_token", self.refresh_token.as_str()),
            ("grant_type", "refresh_token"),
        ];
        let request = self.http.post(&self.token_url).form(&form);
        let answer = transport::execute(request, what)
            .await
            .map_err(token::not_sent)?;
        if !answer.is_success() {
            return Err(token_refusal(
                answer.status,
                &answer.headers,
                &answer.body,
                Utc::now(),
            ));
        }
        #[derive(Deserialize)]
        struct Granted {
            access_token: String,
            expires_in: u64,
        }
        let granted: Granted = answer.json(what)?;
        Ok(Token::new(
            granted.access_token,
            Duration::from_secs(granted.expires_in),
            None,
        ))
    }
}

/// A failed refresh. 400 and 401 are permanent: `invalid_grant` (revoked or expired:
/// the mailbox must be connected again) or a bad OAuth client.
pub fn token_refusal(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> ProviderError {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    let what = "Gmail token refresh";
    let Some(refused) = matches!(status, 400 | 401)
        .then(|| serde_json::from_slice::<OAuthError>(body).ok())
        .flatten()
    else {
        return classify(what, status, headers, body, now)
            .err()
            .unwrap_or_else(|| ProviderError::permanent("token_refused", what));
    };
    let description = refused.error_description.unwrap_or_default();
    let consequence = if refused.error == "invalid_grant" {
        "the Gmail mailbox must be reconnected"
    } else {
        "the Google OAuth client settings must be fixed"
    };
    ProviderError {
        failure: Failure::Permanent,
        http_status: Some(status),
        message: format!(
            "{what}: Google refused the grant ({} {description}): {consequence}",
            refused.error
        ),
        code: Some(refused.error),
    }
}

/// The upload endpoint's multipart/related body: the metadata JSON, then the message.
fn upload_body(raw: &[u8], thread_id: Option<&str>) -> (String, Bytes) {
    let boundary = format!("upload-{}", Uuid::new_v4().simple());
    let metadata = match thread_id {
        Some(thread_id) => json!({ "threadId": thread_id }),
        None => json!({}),
    };
    let mut body = BytesMut::with_capacity(raw.len() + 512);
    body.put_slice(
        format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}")
            .as_bytes(),
    );
    body.put_slice(format!("\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes());
    body.put_slice(raw);
    body.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/related; boundary={boundary}"),
        body.freeze(),
    )
}

/// The message, with `date` as its Date header.
pub(crate) fn compose(email: &Email, date: DateTime<Utc>) -> Result<Vec<u8>, ProviderError> {
    let from = address(&email.from)?;
    if email.to.is_empty() {
        return Err(ProviderError::permanent(
            "no_recipient",
            "an email needs at least one recipient",
        ));
    }
    let to = email
        .to
        .iter()
        .map(|to| address(to))
        .collect::<Result<Vec<_>, _>>()?;
    let mut message = MessageBuilder::new()
        .message_id(message_id(&email.message_id)?)
        .from(from)
        .to(to)
        // A header is one line: line breaks in a subject would end it.
        .subject(email.subject.replace(['\r', '\n'], " "))
        .date(date.timestamp());
    if let Some(in_reply_to) = &email.in_reply_to {
        message = message.in_reply_to(message_id(in_reply_to)?);
        // References ends with the message replied to.
        let mut references = email
            .references
            .iter()
            .map(|r| message_id(r))
            .collect::<Result<Vec<_>, _>>()?;
        let replied = message_id(in_reply_to)?;
        if references.last() != Some(&replied) {
            references.push(replied);
        }
        message = message.references(references);
    } else if !email.references.is_empty() {
        message = message.references(
            email
                .references
                .iter()
                .map(|r| message_id(r))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    let text = MimePart::new("text/plain", email.text.as_str());
    let message = if email.attachments.is_empty() {
        message.body(text)
    } else {
        let mut parts = vec![text];
        parts.extend(email.attachments.iter().map(attachment_part));
        message.body(MimePart::new("multipart/mixed", parts))
    };
    message.write_to_vec().map_err(|error| {
        ProviderError::permanent(
            "compose_failed",
            format!("the email could not be composed: {error}"),
        )
    })
}

/// An attachment, always base64: its bytes must arrive exactly as they were, which
/// mail-builder's text handling (CRLF line ends for `text/*`) would not ensure.
fn attachment_part(attachment: &Attachment) -> MimePart<'_> {
    let content_type = ContentType::new(attachment.content_type.as_str())
        .attribute("name", attachment.name.as_str());
    MimePart::new(
        content_type,
        BodyPart::Binary(base64_lines(&attachment.bytes).into()),
    )
    .header(
        "Content-Disposition",
        Raw::new(format!(
            "attachment; {}",
            mime::filename_parameter(&attachment.name, "; ")
        )),
    )
    .header("Content-Transfer-Encoding", Raw::new("base64"))
}

/// Base64 in lines of 76 characters (RFC 2045).
fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let encoded = STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// An address as given, checked: one `@`, no spaces, brackets or control characters
/// (which would let a value write its own headers).
fn address(value: &str) -> Result<&str, ProviderError> {
    let value = value.trim();
    let valid = value.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@') && domain.contains('.')
    }) && !value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c));
    if valid {
        Ok(value)
    } else {
        Err(ProviderError::permanent(
            "invalid_address",
            format!("{value:?} is not an email address"),
        ))
    }
}

/// A Message-ID's inside, `left@right` (mail-builder adds the angle brackets).
fn message_id(value: &str) -> Result<String, ProviderError> {
    let bare = value.trim().trim_start_matches('<').trim_end_matches('>');
    let valid = bare
        .split_once('@')
        .is_some_and(|(left, right)| !left.is_empty() && !right.is_empty())
        && !bare
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>".contains(c));
    if valid {
        Ok(bare.to_owned())
    } else {
        Err(ProviderError::permanent(
            "invalid_message_id",
            format!("{value:?} is not a Message-ID"),
        ))
    }
}
