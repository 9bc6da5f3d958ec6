//! RingCentral: SMS and MMS sends, message-store reads (status and reconciliation) and
//! the call log, with its OAuth tokens (JWT grant, single-use refresh tokens) and its
//! rate-limit groups.

use std::{sync::Arc, time::Duration};

use crate::settings::RingCentralSettings;
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use reqwest::{
    Method,
    header::{CONTENT_TYPE, HeaderMap},
};
use serde::Deserialize;
use serde_json::json;

pub use crate::mms::Attachment;
use crate::{
    error::{Failure, ProviderError, failure_for_status, retry_after},
    mime, mms,
    pacing::Pacer,
    token::{self, Token, TokenCache, TokenSource},
    transport::{self, Answer},
};

/// Characters in one SMS text.
pub const MAX_TEXT_CHARS: usize = 1_000;

const TOKEN_PATH: &str = "/restapi/oauth/token";
const SMS_PATH: &str = "/restapi/v1.0/account/~/extension/~/sms";
/// The longest lifetime RingCentral grants a `WebHook` subscription (10 years).
pub const WEBHOOK_LIFETIME_SECS: u64 = 315_360_000;
const MESSAGE_STORE_PATH: &str = "/restapi/v1.0/account/~/extension/~/message-store";
const CALL_LOG_PATH: &str = "/restapi/v1.0/account/~/extension/~/call-log";
const SUBSCRIPTION_PATH: &str = "/restapi/v1.0/subscription";
/// What our webhook wants to hear: message changes (ids only) and whole inbound SMS.
pub const WEBHOOK_EVENT_FILTERS: &[&str] = &[
    "/restapi/v1.0/account/~/extension/~/message-store",
    "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS",
];

/// Pages of the message store read when looking for an earlier send.
const RECONCILE_MAX_PAGES: usize = 10;
/// Our clock and RingCentral's may disagree: a message created this much before `since`
/// still counts.
const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(2);

/// An API endpoint: its name (for pacing) and the rate-limit group RingCentral documents
/// for it (answers' `X-Rate-Limit-Group` overrides it).
#[derive(Clone, Copy)]
struct Endpoint {
    name: &'static str,
    group: &'static str,
}

const SEND_SMS: Endpoint = Endpoint {
    name: "sms",
    group: "Medium",
};
const READ_MESSAGE: Endpoint = Endpoint {
    name: "message-store",
    group: "Light",
};
const READ_CALL_LOG: Endpoint = Endpoint {
    name: "call-log",
    group: "Heavy",
};
const SUBSCRIBE: Endpoint = Endpoint {
    name: "subscription",
    group: "Medium",
};
const AUTH: Endpoint = Endpoint {
    name: "token",
    group: "Auth",
};

/// The RingCentral client: one per worker process, cloned into every task.
#[derive(Clone)]
pub struct RingCentral {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    server_url: String,
    tokens: TokenCache<Credentials>,
    pacer: Arc<Pacer>,
}

/// One SMS (or MMS, when it has attachments) to send.
#[derive(Debug, Clone)]
pub struct OutboundSms {
    /// E.164 numbers.
    pub from: String,
    pub to: String,
    pub text: String,
    /// Already fitted with [`mms::fit`]; checked against the limits again before sending.
    pub attachments: Vec<Attachment>,
}

/// A message-store record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: String,
    /// `Queued`, `Sent`, `Delivered`, `DeliveryFailed`, `SendingFailed`, `Received`.
    pub message_status: String,
    pub conversation_id: Option<String>,
    /// `Outbound` or `Inbound`.
    pub direction: String,
    pub from: Option<String>,
    pub to: Vec<String>,
    /// The message text (RingCentral's `subject`).
    pub text: Option<String>,
    pub creation_time: Option<DateTime<Utc>>,
    pub last_modified_time: Option<DateTime<Utc>>,
    /// `SMS` (MMS included), `Pager`, `Fax`, `VoiceMail`.
    pub message_type: String,
}

impl MessageRecord {
    /// A record as RingCentral writes it: a message-store answer, or the body of an
    /// instant message event posted to our webhook.
    pub fn from_json(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value::<RawMessage>(value).map(Self::from)
    }
}

/// Which page of the call log to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallLogQuery {
    /// Calls that started in `[date_from, date_to)` (`date_to` None: until now).
    Range {
        date_from: DateTime<Utc>,
        date_to: Option<DateTime<Utc>>,
        per_page: u32,
        page: u32,
    },
    /// The `next_page` of an earlier answer.
    NextPage(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLogPage {
    pub records: Vec<CallRecord>,
    /// Where the next page is, if there is one: pass it back as [`CallLogQuery::NextPage`].
    pub next_page: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: String,
    pub session_id: Option<String>,
    pub start_time: DateTime<Utc>,
    /// Seconds.
    pub duration: u32,
    /// `Inbound` or `Outbound`.
    pub direction: String,
    /// `Accepted`, `Missed`, `Voicemail`, …
    pub result: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl RingCentral {
    pub fn new(settings: &RingCentralSettings) -> anyhow::Result<Self> {
        let http = transport::client(settings.timeout)?;
        let pacer = Arc::new(Pacer::default());
        let credentials = Credentials {
            http: http.clone(),
            token_url: format!("{}{TOKEN_PATH}", settings.server_url),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.expose().to_owned(),
            jwt: settings.jwt.expose().to_owned(),
            pacer: pacer.clone(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                server_url: settings.server_url.clone(),
                tokens: TokenCache::new(credentials),
                pacer,
            }),
        })
    }

    /// Sends an SMS, or an MMS (multipart/mixed: the JSON, then the files) when it has
    /// attachments. Refuses before any call what RingCentral would refuse for its size.
    pub async fn send_sms(&self, sms: &OutboundSms) -> Result<MessageRecord, ProviderError> {
        let chars = sms.text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(ProviderError::permanent(
                "text_too_long",
                format!(
                    "SMS text has {chars} characters; RingCentral takes at most {MAX_TEXT_CHARS}"
                ),
            ));
        }
        if sms.text.is_empty() && sms.attachments.is_empty() {
            return Err(ProviderError::permanent(
                "empty_message",
                "an SMS needs a text or an attachment",
            ));
        }
        mms::check(&sms.attachments)?;
        let mut body = json!({
            "from": { "phoneNumber": sms.from },
            "to": [{ "phoneNumber": sms.to }],
        });
        if !sms.text.is_empty() {
            body["text"] = json!(sms.text);
        }
        let (content_type, payload, what) = if sms.attachments.is_empty() {
            (
                "application/json".to_owned(),
                Bytes::from(body.to_string()),
                "RingCentral SMS send",
            )
        } else {
            let (content_type, payload) = multipart_mixed(&body, &sms.attachments);
            (content_type, payload, "RingCentral MMS send")
        };
        let url = self.url(SMS_PATH);
        let answer = self
            .call(SEND_SMS, what, || {
                self.inner
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, &content_type)
                    .body(payload.clone())
            })
            .await?;
        Ok(answer.json::<RawMessage>(what)?.into())
    }

    /// Subscribes `address` (our webhook) to [`WEBHOOK_EVENT_FILTERS`] for
    /// [`WEBHOOK_LIFETIME_SECS`]; RingCentral calls
    /// it at once with a `Validation-Token` that it must echo. Returns the subscription
    /// record (`id`, `status`, `expirationTime`, …).
    pub async fn subscribe(
        &self,
        address: &str,
        verification_token: &str,
    ) -> Result<serde_json::Value, ProviderError> {
        let what = "RingCentral webhook subscription";
        let body = json!({
            "eventFilters": WEBHOOK_EVENT_FILTERS,
            // The longest RingCentral allows a webhook; its default is a week, after
            // which notifications would silently stop.
            "expiresIn": WEBHOOK_LIFETIME_SECS,
            "deliveryMode": {
                "transportType": "WebHook",
                "address": address,
                "verificationToken": verification_token,
            },
        });
        let url = self.url(SUBSCRIPTION_PATH);
        self.call(SUBSCRIBE, what, || self.inner.http.post(&url).json(&body))
            .await?
            .json(what)
    }

    /// One message-store record, e.g. to learn a sent message's delivery status.
    pub async fn get_message(&self, id: &str) -> Result<MessageRecord, ProviderError> {
        let what = "RingCentral message read";
        let url = format!("{}/{}", self.url(MESSAGE_STORE_PATH), path_segment(id));
        let answer = self
            .call(READ_MESSAGE, what, || self.inner.http.get(&url))
            .await?;
        Ok(answer.json::<RawMessage>(what)?.into())
    }

    /// Reconciliation after an unknown outcome: the latest outbound message to `to` with
    /// exactly `text`, created at or after `since` (less two minutes for clock skew).
    pub async fn find_sent(
        &self,
        to: &str,
        text: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<MessageRecord>, ProviderError> {
        let what = "RingCentral message-store search";
        let since = since - CLOCK_SKEW;
        let mut url = reqwest::Url::parse(&self.url(MESSAGE_STORE_PATH))
            .map_err(|e| ProviderError::permanent("invalid_url", format!("{what}: {e}")))?;
        url.query_pairs_mut()
            .append_pair("direction", "Outbound")
            .append_pair("messageType", "SMS")
            .append_pair("phoneNumber", to)
            .append_pair(
                "dateFrom",
                &since.to_rfc3339_opts(SecondsFormat::Millis, true),
            )
            .append_pair("perPage", "100");
        let mut url = url.to_string();
        let mut found: Option<MessageRecord> = None;
        for _ in 0..RECONCILE_MAX_PAGES {
            let page: RawMessagePage = self
                .call(READ_MESSAGE, what, || self.inner.http.get(&url))
                .await?
                .json(what)?;
            let matches = page
                .records
                .into_iter()
                .map(MessageRecord::from)
                .filter(|record| {
                    record.direction == "Outbound"
                        && record.to.iter().any(|number| number == to)
                        && record.text.as_deref() == Some(text)
                        && record.creation_time.is_none_or(|created| created >= since)
                });
            for record in matches {
                if found
                    .as_ref()
                    .is_none_or(|best| record.creation_time > best.creation_time)
                {
                    found = Some(record);
                }
            }
            match page.navigation.and_then(|n| n.next_page) {
                Some(next) => url = self.on_our_host(&next.uri, what)?,
                None => break,
            }
        }
        Ok(found)
    }

    /// One page of the call log.
    pub async fn call_log(&self, query: &CallLogQuery) -> Result<CallLogPage, ProviderError> {
        let what = "RingCentral call-log read";
        let url = match query {
            CallLogQuery::NextPage(uri) => self.on_our_host(uri, what)?,
            CallLogQuery::Range {
                date_from,
                date_to,
                per_page,
                page,
            } => {
                let mut url = reqwest::Url::parse(&self.url(CALL_LOG_PATH))
                    .map_err(|e| ProviderError::permanent("invalid_url", format!("{what}: {e}")))?;
                {
                    let mut pairs = url.query_pairs_mut();
                    pairs
                        .append_pair("view", "Simple")
                        .append_pair(
                            "dateFrom",
                            &date_from.to_rfc3339_opts(SecondsFormat::Millis, true),
                        )
                        .append_pair("perPage", &per_page.to_string())
                        .append_pair("page", &page.to_string());
                    if let Some(date_to) = date_to {
                        pairs.append_pair(
                            "dateTo",
                            &date_to.to_rfc3339_opts(SecondsFormat::Millis, true),
                        );
                    }
                }
                url.to_string()
            }
        };
        let page: RawCallLogPage = self
            .call(READ_CALL_LOG, what, || self.inner.http.get(&url))
            .await?
            .json(what)?;
        Ok(CallLogPage {
            records: page.records.into_iter().map(CallRecord::from).collect(),
            next_page: page
                .navigation
                .and_then(|n| n.next_page)
                .map(|next| next.uri),
        })
    }

    /// One authorized call: waits for its rate-limit group, sends with the cached token,
    /// and on a 401 refreshes the token once and sends again.
    async fn call(
        &self,
        endpoint: Endpoint,
        what: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer, ProviderError> {
        let mut token_refused = false;
        loop {
            self.inner.pacer.wait(endpoint.name, endpoint.group).await;
            let lease = self.inner.tokens.get().await?;
            let answer =
                transport::execute(request().bearer_auth(&lease.access_token), what).await?;
            let now = Utc::now();
            let wait = if answer.status == 429 {
                retry_after(&answer.headers, now)
            } else {
                None
            };
            self.inner
                .pacer
                .observe(endpoint.name, endpoint.group, &answer.headers, wait);
            if answer.status == 401 && !token_refused {
                tracing::info!(
                    what,
                    "RingCentral refused the access token; refreshing it once"
                );
                self.inner.tokens.reject(&lease);
                token_refused = true;
                continue;
            }
            classify(what, answer.status, &answer.headers, &answer.body, now)?;
            return Ok(answer);
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.server_url)
    }

    /// A navigation URI from an answer, re-rooted on our configured server so that the
    /// token never goes to another host.
    fn on_our_host(&self, uri: &str, what: &str) -> Result<String, ProviderError> {
        if uri.starts_with('/') {
            return Ok(self.url(uri));
        }
        let parsed = reqwest::Url::parse(uri).map_err(|e| {
            ProviderError::permanent(
                "invalid_url",
                format!("{what}: unreadable next-page URI {uri:?}: {e}"),
            )
        })?;
        let query = parsed.query().map(|q| format!("?{q}")).unwrap_or_default();
        Ok(self.url(&format!("{}{query}", parsed.path())))
    }
}

/// Reads a RingCentral answer: `Ok` for 2xx, otherwise what the failure means. 401 reads
/// as permanent: the client refreshes and retries once before it classifies.
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
    let (code, detail) = error_detail(body);
    Err(ProviderError {
        failure: failure_for_status(status, headers, now),
        http_status: Some(status),
        message: match (status, detail) {
            (401, _) => {
                format!("{what}: RingCentral refused the access token even after a refresh")
            }
            (_, Some(detail)) => format!("{what}: RingCentral answered {status}: {detail}"),
            (_, None) => format!("{what}: RingCentral answered {status}"),
        },
        code,
    })
}

/// `errorCode` and `message` from RingCentral's error bodies (`{errorCode, message,
/// errors[]}`, or OAuth's `{error, error_description}`).
fn error_detail(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Detail {
        error_code: Option<String>,
        message: Option<String>,
        #[serde(default)]
        errors: Vec<Detail>,
        error: Option<String>,
        error_description: Option<String>,
    }
    let Ok(detail) = serde_json::from_slice::<Detail>(body) else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned();
        return (None, (!text.is_empty()).then_some(text));
    };
    let first = detail.errors.into_iter().next().unwrap_or_default();
    (
        detail.error_code.or(first.error_code).or(detail.error),
        detail
            .message
            .or(first.message)
            .or(detail.error_description),
    )
}

/// The app's credentials, and how tokens are obtained with them: the refresh grant while
/// the single-use refresh token lives, else (or when it fails) the JWT grant.
struct Credentials {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    jwt: String,
    pacer: Arc<Pacer>,
}

impl TokenSource for Credentials {
    async fn fetch(&self, previous: Option<&Token>) -> Result<Token, ProviderError> {
        let now = std::time::Instant::now();
        if let Some((refresh_token, _)) = previous
            .and_then(|t| t.refresh.as_ref())
            .filter(|(_, until)| *until > now)
        {
            match self
                .grant(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                ])
                .await
            {
                Ok(token) => return Ok(token),
                Err(error) => {
                    tracing::warn!(%error, "RingCentral refresh grant failed; using the JWT grant")
                }
            }
        }
        self.grant(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &self.jwt),
        ])
        .await
    }
}

impl Credentials {
    async fn grant(&self, form: &[(&str, &str)]) -> Result<Token, ProviderError> {
        let what = "RingCentral token request";
        self.pacer.wait(AUTH.name, AUTH.group).await;
        let request = self
            .http
            .request(Method::POST, &self.token_url)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(form);
        let answer = transport::execute(request, what)
            .await
            .map_err(token::not_sent)?;
        let now = Utc::now();
        let wait = if answer.status == 429 {
            retry_after(&answer.headers, now)
        } else {
            None
        };
        self.pacer
            .observe(AUTH.name, AUTH.group, &answer.headers, wait);
        if !answer.is_success() {
            return Err(token_refusal(what, &answer, now));
        }
        #[derive(Deserialize)]
        struct Granted {
            access_token: String,
            expires_in: u64,
            refresh_token: Option<String>,
            refresh_token_expires_in: Option<u64>,
        }
        let granted: Granted = answer.json(what)?;
        let refresh = granted.refresh_token.map(|token| {
            (
                token,
                Duration::from_secs(granted.refresh_token_expires_in.unwrap_or(0)),
            )
        });
        Ok(Token::new(
            granted.access_token,
            Duration::from_secs(granted.expires_in),
            refresh,
        ))
    }
}

/// A failed token request. 400 and 401 are permanent: the grant itself is refused, and
/// asking again would only spend the Auth group's few calls.
fn token_refusal(what: &str, answer: &Answer, now: DateTime<Utc>) -> ProviderError {
    if !matches!(answer.status, 400 | 401) {
        return classify(what, answer.status, &answer.headers, &answer.body, now)
            .err()
            .unwrap_or_else(|| ProviderError::permanent("token_refused", what));
    }
    let (code, detail) = error_detail(&answer.body);
    ProviderError {
        failure: Failure::Permanent,
        http_status: Some(answer.status),
        code,
        message: format!(
            "{what}: RingCentral refused the grant ({}): the app's client id and secret or the JWT must be replaced",
            detail.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// A multipart/mixed MMS body: the JSON first, then each file.
fn multipart_mixed(json: &serde_json::Value, attachments: &[Attachment]) -> (String, Bytes) {
    let boundary = format!("mms-{}", uuid::Uuid::new_v4().simple());
    let size = attachments
        .iter()
        .map(|a| a.bytes.len() + 300)
        .sum::<usize>()
        + 1024;
    let mut body = BytesMut::with_capacity(size);
    body.put_slice(
        format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n").as_bytes(),
    );
    body.put_slice(json.to_string().as_bytes());
    for attachment in attachments {
        body.put_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Disposition: attachment; {}\r\n\r\n",
                attachment.content_type,
                mime::filename_parameter(&attachment.name, "; "),
            )
            .as_bytes(),
        );
        body.put_slice(&attachment.bytes);
    }
    body.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/mixed; boundary={boundary}"),
        body.freeze(),
    )
}

/// A message id as one URL path segment (ids are digits; anything else is escaped).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// RingCentral ids are JSON numbers in some answers and strings in others.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(u64),
}

impl From<Id> for String {
    fn from(id: Id) -> Self {
        match id {
            Id::Text(text) => text,
            Id::Number(number) => number.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Party {
    phone_number: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage {
    id: Id,
    #[serde(default)]
    message_status: String,
    conversation_id: Option<Id>,
    #[serde(default)]
    direction: String,
    from: Option<Party>,
    #[serde(default)]
    to: Vec<Party>,
    subject: Option<String>,
    creation_time: Option<DateTime<Utc>>,
    last_modified_time: Option<DateTime<Utc>>,
    #[serde(rename = "type", default)]
    message_type: String,
}

impl From<RawMessage> for MessageRecord {
    fn from(raw: RawMessage) -> Self {
        Self {
            id: raw.id.into(),
            message_status: raw.message_status,
            conversation_id: raw.conversation_id.map(String::from),
            direction: raw.direction,
            from: raw.from.and_then(|party| party.phone_number),
            to: raw
                .to
                .into_iter()
                .filter_map(|party| party.phone_number)
                .collect(),
            text: raw.subject,
            creation_time: raw.creation_time,
            last_modified_time: raw.last_modified_time,
            message_type: raw.message_type,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Navigation {
    next_page: Option<PageLink>,
}

#[derive(Deserialize)]
struct PageLink {
    uri: String,
}

#[derive(Deserialize)]
struct RawMessagePage {
    #[serde(default)]
    records: Vec<RawMessage>,
    navigation: Option<Navigation>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCall {
    id: Id,
    session_id: Option<Id>,
    start_time: DateTime<Utc>,
    #[serde(default)]
    duration: u32,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    result: String,
    from: Option<Party>,
    to: Option<Party>,
}

impl From<RawCall> for CallRecord {
    fn from(raw: RawCall) -> Self {
        Self {
            id: raw.id.into(),
            session_id: raw.session_id.map(String::from),
            start_time: raw.start_time,
            duration: raw.duration,
            direction: raw.direction,
            result: raw.result,
            from: raw.from.and_then(|party| party.phone_number),
            to: raw.to.and_then(|party| party.phone_number),
        }
    }
}

#[derive(Deserialize)]
struct RawCallLogPage {
    #[serde(default)]
    records: Vec<RawCall>,
    navigation: Option<Navigation>,
}
