//! RingCentral and Gmail: sends, logged calls and RingCentral's webhook.
//!
//! The sends follow `POST /api/messages/send`: validate everything the provider would
//! refuse (so a job never dies of bad input), then write the communication, its job
//! and the contact in one transaction and answer 202; a worker talks to the provider.
//! A provider that is not configured here answers 503 `provider_not_configured`.
//!
//! The webhook is RingCentral's to call (no bearer token: its verification token
//! instead). It records each notification once, by its `uuid`, as a
//! `ringcentral.event` job, and answers at once.

use axum::{
    Json, Router,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use commcenter_shared::{
    contact::{self, ContactKind, Mailbox, PhoneNumber},
    domain::{CommunicationType, CustomerId, Invalid, MessageText},
    jobs::{self, NewJob, kinds, payloads},
    store::{self, FileRecord},
};

use crate::{
    auth::Caller, body::JsonBody, error::ApiError, idempotency::IdempotencyKey, startup::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/integrations/ringcentral/sms", post(send_sms))
        .route("/api/integrations/gmail/send", post(send_email))
        .route("/api/integrations/ringcentral/call-log", post(log_call))
        .route(
            "/api/integrations/ringcentral/webhook",
            post(ringcentral_webhook),
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
fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::Invalid(format!("{field}: {why}"))
}

fn ringcentral_ready(state: &AppState) -> Result<(), Refusal> {
    if state.settings.ringcentral.configured() {
        Ok(())
    } else {
        Err(Refusal::NotConfigured(
            "RingCentral is not configured here (RINGCENTRAL_CLIENT_ID, RINGCENTRAL_CLIENT_SECRET, RINGCENTRAL_JWT)".into(),
        ))
    }
}

// --- SMS and MMS ---------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendSms {
    pub customer_id: CustomerId,
    pub to: String,
    pub message: String,
    #[serde(default)]
    pub attachments: Vec<Uuid>,
}

/// RingCentral's limits on one SMS or MMS.
const SMS_MAX_CHARS: usize = 1000;
const MMS_MAX_FILES: usize = 10;
const MMS_MAX_BYTES: i64 = 1_500_000;
/// The MMS content types RingCentral takes, among those our uploads can be. (It also
/// takes SVG, vCard, ZIP and gzip, which uploads refuse.) WebP, HEIC, MOV, WAV, PDF and
/// office documents cannot go by MMS.
const MMS_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/bmp",
    "image/gif",
    "image/tiff",
    "video/3gpp",
    "video/mp4",
    "video/mpeg",
    "video/x-msvideo",
    "audio/mpeg",
    "application/rtf",
];

pub async fn send_sms(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SendSms>,
) -> Answer {
    caller.ensure_staff()?;
    ringcentral_ready(&state)?;
    let ringcentral = &state.settings.ringcentral;
    let from = PhoneNumber::parse(&ringcentral.from_number, ringcentral.default_phone_region)
        .map_err(|e| {
            Refusal::NotConfigured(format!(
                "RingCentral is not configured here: RINGCENTRAL_FROM_NUMBER is not a number to send from ({e})"
            ))
        })?;
    let to = PhoneNumber::parse(&request.to, ringcentral.default_phone_region)
        .map_err(|e| invalid("to", e))?;
    let text = sms_text(&request.message, !request.attachments.is_empty())?;
    if request.attachments.len() > MMS_MAX_FILES {
        return Err(invalid(
            "attachments",
            format!("RingCentral takes at most {MMS_MAX_FILES} files per MMS"),
        )
        .into());
    }
    let key = IdempotencyKey::from_headers(
        &headers,
        caller.user_id(),
        "POST /api/integrations/ringcentral/sms",
        &request,
    )?;

    let mut tx = state.pool.begin().await?;
    if let Some(key) = &key
        && let Some(earlier) = key.claim(&mut tx).await?
    {
        tx.rollback().await?;
        return Ok((earlier.status, Json(earlier.body)));
    }
    let files =
        super::files::customer_files(&mut tx, &request.customer_id, &request.attachments).await?;
    check_mms(&files)?;
    let id = Uuid::now_v7();
    let communication = NewProviderCommunication {
        id,
        customer_id: &request.customer_id,
        communication_type: CommunicationType::Sms,
        direction: "outbound",
        sender_id: caller.user_id(),
        sender_role: caller.role().as_str(),
        subject: None,
        message: text,
        attachments: super::files::attachments_json(&files),
        metadata: json!({}),
        remote_address: to.as_str(),
        local_address: Some(from.as_str()),
        email: None,
        call: None,
    };
    let job = NewJob::new(
        kinds::SMS_SEND,
        &payloads::SendCommunication {
            communication_id: id,
        },
    );
    let body = record(
        &mut tx,
        &state,
        &communication,
        job,
        &[(ContactKind::Phone, to.as_str())],
    )
    .await?;
    finish(tx, &state, key.as_ref(), body).await
}

/// The text of an SMS: up to RingCentral's 1,000 characters, empty only when files go
/// with it (an MMS may be pictures alone).
fn sms_text(raw: &str, has_files: bool) -> Result<&str, ApiError> {
    if raw.trim().is_empty() && !(raw.is_empty() && has_files) {
        return Err(invalid(
            "message",
            "must not be blank (it may be empty only when attachments are sent)",
        ));
    }
    let chars = raw.chars().count();
    if chars > SMS_MAX_CHARS {
        return Err(invalid(
            "message",
            format!("{chars} characters is over RingCentral's SMS limit of {SMS_MAX_CHARS}"),
        ));
    }
    if raw.contains('\0') {
        return Err(invalid("message", "must not contain NUL characters"));
    }
    Ok(raw)
}

/// What RingCentral would refuse of an MMS's files. Images count for nothing here: the
/// worker recompresses them to fit; every other file goes as it is and must fit now.
fn check_mms(files: &[FileRecord]) -> Result<(), ApiError> {
    if let Some(file) = files
        .iter()
        .find(|f| !MMS_TYPES.contains(&f.file_type.as_str()))
    {
        return Err(invalid(
            "attachments",
            format!(
                "file {} ({}, {}) cannot be sent by MMS: RingCentral takes JPEG, PNG, BMP, GIF, TIFF, 3GP, MP4, MPEG, AVI, MP3 and RTF",
                file.id, file.original_name, file.file_type
            ),
        ));
    }
    let as_they_are: i64 = files
        .iter()
        .filter(|f| f.file_category != "images")
        .map(|f| f.file_size)
        .sum();
    if as_they_are > MMS_MAX_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "attachments: {as_they_are} bytes of files other than images is over RingCentral's MMS limit of 1.5 MB ({MMS_MAX_BYTES} bytes); images are recompressed to fit, other files are not"
        )));
    }
    Ok(())
}

// --- Email ---------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEmail {
    pub customer_id: CustomerId,
    /// One address or a list of them (checked in the handler, so the error names `to`).
    pub to: Value,
    /// Required, except on a reply, which keeps the subject of what it answers.
    #[serde(default)]
    pub subject: Option<String>,
    pub message: String,
    #[serde(default)]
    pub attachments: Vec<Uuid>,
    /// Answer this earlier email of the customer's, in its thread.
    #[serde(default)]
    pub reply_to_communication_id: Option<Uuid>,
    /// Continue this Gmail thread of the customer's, answering its latest email.
    #[serde(default)]
    pub thread_id: Option<String>,
}

/// Gmail's limit on one whole message as sent, encodings included: 35 MiB.
const GMAIL_MAX_MESSAGE_BYTES: u64 = 36_700_160;
/// RFC 5322's limit on a line, which a subject must fit in unfolded.
const SUBJECT_MAX_CHARS: usize = 998;
/// Longer bodies are not letters; the JSON body limit (MAX_BODY_BYTES) is usually lower.
const EMAIL_MAX_CHARS: usize = 100_000;
const EMAIL_MAX_RECIPIENTS: usize = 50;
/// Bounded for the request's sake; what Gmail enforces is the size.
const EMAIL_MAX_FILES: usize = 25;

pub async fn send_email(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SendEmail>,
) -> Answer {
    caller.ensure_staff()?;
    let gmail = &state.settings.gmail;
    if !gmail.configured() {
        return Err(Refusal::NotConfigured(
            "Gmail is not configured here (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, GMAIL_REFRESH_TOKEN)".into(),
        ));
    }
    let sender = Mailbox::parse(&gmail.sender).map_err(|e| {
        Refusal::NotConfigured(format!(
            "Gmail is not configured here: GMAIL_SENDER is not an address ({e})"
        ))
    })?;
    let recipients = recipients(&request.to)?;
    let given_subject = request
        .subject
        .as_deref()
        .map(|s| subject(s).map_err(|e| invalid("subject", e)))
        .transpose()?;
    let chars = request.message.chars().count();
    if chars > EMAIL_MAX_CHARS {
        return Err(invalid("message", format!("at most {EMAIL_MAX_CHARS} characters")).into());
    }
    if request.message.contains('\0') {
        return Err(invalid("message", "must not contain NUL characters").into());
    }
    if request.attachments.len() > EMAIL_MAX_FILES {
        return Err(invalid(
            "attachments",
            format!("at most {EMAIL_MAX_FILES} files per email"),
        )
        .into());
    }
    if request.reply_to_communication_id.is_some() && request.thread_id.is_some() {
        return Err(invalid(
            "reply_to_communication_id",
            "give it or thread_id, not both",
        )
        .into());
    }
    if let Some(thread) = &request.thread_id
        && !((1..=64).contains(&thread.len()) && thread.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(invalid(
            "thread_id",
            "must be a Gmail thread id (1 to 64 letters and digits)",
        )
        .into());
    }
    let key = IdempotencyKey::from_headers(
        &headers,
        caller.user_id(),
        "POST /api/integrations/gmail/send",
        &request,
    )?;

    let mut tx = state.pool.begin().await?;
    if let Some(key) = &key
        && let Some(earlier) = key.claim(&mut tx).await?
    {
        tx.rollback().await?;
        return Ok((earlier.status, Json(earlier.body)));
    }
    let answered = match (&request.reply_to_communication_id, &request.thread_id) {
        (Some(id), _) => Some(
            earlier_email(&mut tx, &request.customer_id, EarlierEmail::Id(*id))
                .await?
                .ok_or_else(|| {
                    invalid(
                        "reply_to_communication_id",
                        format!("no email {id} for customer {}", request.customer_id),
                    )
                })?,
        ),
        (None, Some(thread)) => Some(
            earlier_email(&mut tx, &request.customer_id, EarlierEmail::Thread(thread))
                .await?
                .ok_or_else(|| {
                    invalid(
                        "thread_id",
                        format!(
                            "no email of customer {} in thread {thread}",
                            request.customer_id
                        ),
                    )
                })?,
        ),
        (None, None) => None,
    };
    let threading = match &answered {
        Some(earlier) => Threading::reply_to(earlier, given_subject)?,
        None => Threading {
            subject: given_subject
                .ok_or_else(|| invalid("subject", "required (1 to 998 characters)"))?
                .to_owned(),
            ..Default::default()
        },
    };
    let files =
        super::files::customer_files(&mut tx, &request.customer_id, &request.attachments).await?;
    let size = encoded_email_size(
        (request.message.len() + threading.subject.len()) as u64,
        files.iter().map(|f| f.file_size.max(0) as u64),
    );
    if size > GMAIL_MAX_MESSAGE_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "attachments: the email would be about {size} bytes once encoded, over Gmail's limit of 35 MiB ({GMAIL_MAX_MESSAGE_BYTES} bytes)"
        ))
        .into());
    }

    let id = Uuid::now_v7();
    let message_id = format!("<{id}@{}>", sender.address.domain());
    let contacts: Vec<(ContactKind, &str)> = recipients
        .iter()
        .map(|r| (ContactKind::Email, r.address.as_str()))
        .collect();
    // Every address, as the worker reads them for the To header.
    let to = recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let communication = NewProviderCommunication {
        id,
        customer_id: &request.customer_id,
        communication_type: CommunicationType::Email,
        direction: "outbound",
        sender_id: caller.user_id(),
        sender_role: caller.role().as_str(),
        subject: Some(&threading.subject),
        message: &request.message,
        attachments: super::files::attachments_json(&files),
        // The recipients with their display names.
        metadata: json!({ "to": recipients }),
        remote_address: &to,
        local_address: Some(sender.address.as_str()),
        email: Some(EmailHeaders {
            rfc822_message_id: &message_id,
            provider_thread_id: threading.provider_thread_id.as_deref(),
            in_reply_to: threading.in_reply_to.as_deref(),
            references: threading.references.as_deref(),
        }),
        call: None,
    };
    let job = NewJob::new(
        kinds::EMAIL_SEND,
        &payloads::SendCommunication {
            communication_id: id,
        },
    );
    let mut body = record(&mut tx, &state, &communication, job, &contacts).await?;
    body["subject"] = json!(threading.subject);
    body["to"] = json!(
        recipients
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    body["rfc822_message_id"] = json!(message_id);
    finish(tx, &state, key.as_ref(), body).await
}

/// `to` as one address or a list of them, each parsed; no address twice.
fn recipients(to: &Value) -> Result<Vec<Mailbox>, ApiError> {
    let raw: Vec<&str> = match to {
        Value::String(one) => vec![one],
        Value::Array(list) => list
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| invalid("to", "each recipient must be a string"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("to", "must be an email address or a list of them")),
    };
    if raw.is_empty() {
        return Err(invalid("to", "at least one recipient is needed"));
    }
    if raw.len() > EMAIL_MAX_RECIPIENTS {
        return Err(invalid(
            "to",
            format!("at most {EMAIL_MAX_RECIPIENTS} recipients"),
        ));
    }
    let mut mailboxes: Vec<Mailbox> = Vec::with_capacity(raw.len());
    for one in raw {
        let mailbox = Mailbox::parse(one).map_err(|e| invalid("to", e))?;
        // The recipients are stored as one comma-separated list (`remote_address`).
        if mailbox.address.as_str().contains(',') {
            return Err(invalid(
                "to",
                format!("{} has a comma, which we cannot send to", mailbox.address),
            ));
        }
        if mailboxes.iter().any(|m| m.address == mailbox.address) {
            return Err(invalid(
                "to",
                format!("{} is listed twice", mailbox.address),
            ));
        }
        mailboxes.push(mailbox);
    }
    Ok(mailboxes)
}

/// A subject: one header line, never blank.
fn subject(raw: &str) -> Result<&str, Invalid> {
    if raw.trim().is_empty() {
        return Err(Invalid("must not be blank".into()));
    }
    if raw.chars().count() > SUBJECT_MAX_CHARS {
        return Err(Invalid(format!("at most {SUBJECT_MAX_CHARS} characters")));
    }
    // CR and LF would start a new header; other controls have no place in one.
    if raw.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Invalid(
            "must be one line without control characters".into(),
        ));
    }
    Ok(raw)
}

/// Does the subject start with `Re:` (in any case)?
fn is_reply_subject(subject: &str) -> bool {
    subject
        .trim_start()
        .get(..3)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("re:"))
}

/// The subject without any leading `Re:` (as mail clients compare them).
fn bare_subject(subject: &str) -> &str {
    let mut rest = subject.trim();
    while is_reply_subject(rest) {
        rest = rest[3..].trim_start();
    }
    rest
}

/// An email this one answers.
#[derive(Debug, sqlx::FromRow)]
struct Earlier {
    subject: Option<String>,
    provider_thread_id: Option<String>,
    rfc822_message_id: Option<String>,
    references: Option<String>,
}

enum EarlierEmail<'a> {
    Id(Uuid),
    /// The latest email of the thread.
    Thread(&'a str),
}

/// Only the customer's own emails: a reply cannot reach into another conversation.
async fn earlier_email(
    conn: &mut PgConnection,
    customer: &CustomerId,
    which: EarlierEmail<'_>,
) -> sqlx::Result<Option<Earlier>> {
    let (id, thread) = match which {
        EarlierEmail::Id(id) => (Some(id), None),
        EarlierEmail::Thread(thread) => (None, Some(thread)),
    };
    sqlx::query_as(
        r#"SELECT subject, provider_thread_id, rfc822_message_id, "references" FROM communications
           WHERE customer_id = $1 AND type = 'email'
             AND ($2::uuid IS NULL OR id = $2)
             AND ($3::text IS NULL OR provider_thread_id = $3)
           ORDER BY created_at DESC, id DESC
           LIMIT 1"#,
    )
    .bind(customer.as_str())
    .bind(id)
    .bind(thread)
    .fetch_optional(conn)
    .await
}

/// Where an email sits in a conversation: its subject and, for a reply, the headers
/// and Gmail thread that keep it with what it answers.
#[derive(Debug, Default, PartialEq)]
struct Threading {
    subject: String,
    provider_thread_id: Option<String>,
    in_reply_to: Option<String>,
    references: Option<String>,
}

impl Threading {
    /// A reply keeps the subject (with one `Re: `): Gmail threads only on a matching
    /// subject, so a different one given for a reply is refused rather than ignored.
    fn reply_to(earlier: &Earlier, given_subject: Option<&str>) -> Result<Self, ApiError> {
        let original = earlier.subject.as_deref().unwrap_or_default();
        let subject = if is_reply_subject(original) {
            original.to_owned()
        } else {
            format!("Re: {original}")
        };
        if let Some(given) = given_subject
            && bare_subject(given) != bare_subject(original)
        {
            return Err(invalid(
                "subject",
                format!("a reply keeps the subject of the email it answers ({subject:?})"),
            ));
        }
        let references = earlier
            .references
            .iter()
            .chain(&earlier.rfc822_message_id)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Self {
            subject,
            provider_thread_id: earlier.provider_thread_id.clone(),
            in_reply_to: earlier.rfc822_message_id.clone(),
            references: (!references.is_empty()).then_some(references),
        })
    }
}

/// A generous bound on the encoded message: headers, the text part and each file,
/// all in base64 with MIME's 76-character lines (the text may go as quoted-printable,
/// which is no larger for the text we take).
fn encoded_email_size(text_bytes: u64, file_sizes: impl Iterator<Item = u64>) -> u64 {
    /// Headers of the message (recipients, subject, ids) and of the multipart body.
    const HEADERS: u64 = 16 * 1024;
    /// A part's boundary and headers (content type, file name, disposition).
    const PART: u64 = 1024;
    fn base64(bytes: u64) -> u64 {
        let chars = bytes.div_ceil(3) * 4;
        chars + chars.div_ceil(76) * 2
    }
    HEADERS + PART + base64(text_bytes) + file_sizes.map(|size| PART + base64(size)).sum::<u64>()
}

// --- Logged calls --------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallDirection {
    Inbound,
    Outbound,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogCall {
    pub customer_id: CustomerId,
    pub phone: String,
    pub direction: CallDirection,
    /// Seconds.
    pub duration: i64,
    #[serde(default)]
    pub notes: Option<String>,
    /// RFC 3339; now when absent.
    #[serde(default)]
    pub occurred_at: Option<String>,
}

/// A day: no call logged by hand lasts longer.
const CALL_MAX_SECONDS: i64 = 86_400;
/// Clocks of the portal's users run a little ahead at times.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

pub async fn log_call(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<LogCall>,
) -> Answer {
    caller.ensure_staff()?;
    ringcentral_ready(&state)?;
    let ringcentral = &state.settings.ringcentral;
    let phone = PhoneNumber::parse(&request.phone, ringcentral.default_phone_region)
        .map_err(|e| invalid("phone", e))?;
    if !(0..=CALL_MAX_SECONDS).contains(&request.duration) {
        return Err(invalid(
            "duration",
            format!(
                "must be 0 to {CALL_MAX_SECONDS} seconds, not {}",
                request.duration
            ),
        )
        .into());
    }
    let notes = request.notes.as_deref().unwrap_or_default();
    if notes.chars().count() > MessageText::MAX_CHARS {
        return Err(invalid(
            "notes",
            format!("at most {} characters", MessageText::MAX_CHARS),
        )
        .into());
    }
    if notes.contains('\0') {
        return Err(invalid("notes", "must not contain NUL characters").into());
    }
    let now = Utc::now();
    let occurred_at = match request.occurred_at.as_deref() {
        None => now,
        Some(raw) => {
            let at = DateTime::parse_from_rfc3339(raw)
                .map_err(|e| {
                    invalid(
                        "occurred_at",
                        format!("{raw:?} is not an RFC 3339 time ({e})"),
                    )
                })?
                .with_timezone(&Utc);
            if at > now + CLOCK_SKEW {
                return Err(invalid("occurred_at", format!("{raw} is in the future")).into());
            }
            at
        }
    };
    let key = IdempotencyKey::from_headers(
        &headers,
        caller.user_id(),
        "POST /api/integrations/ringcentral/call-log",
        &request,
    )?;

    let mut tx = state.pool.begin().await?;
    if let Some(key) = &key
        && let Some(earlier) = key.claim(&mut tx).await?
    {
        tx.rollback().await?;
        return Ok((earlier.status, Json(earlier.body)));
    }
    let id = Uuid::now_v7();
    let direction = match request.direction {
        CallDirection::Inbound => "inbound",
        CallDirection::Outbound => "outbound",
    };
    let communication = NewProviderCommunication {
        id,
        customer_id: &request.customer_id,
        communication_type: CommunicationType::Call,
        direction,
        sender_id: caller.user_id(),
        sender_role: caller.role().as_str(),
        subject: None,
        message: notes,
        attachments: json!([]),
        metadata: json!({}),
        remote_address: phone.as_str(),
        // Our number, when one is set: a call can be logged without it.
        local_address: Some(ringcentral.from_number.as_str()).filter(|n| !n.is_empty()),
        email: None,
        call: Some(CallFacts {
            duration_seconds: request.duration as i32,
            occurred_at,
        }),
    };
    let job = NewJob::new(
        kinds::CALL_LOG,
        &payloads::LogCall {
            communication_id: id,
        },
    );
    let body = record(
        &mut tx,
        &state,
        &communication,
        job,
        &[(ContactKind::Phone, phone.as_str())],
    )
    .await?;
    finish(tx, &state, key.as_ref(), body).await
}

// --- RingCentral's webhook -----------------------------------------------------------

/// RingCentral's subscription handshake: the header to echo.
const VALIDATION_TOKEN: &str = "validation-token";
/// The token our subscription was created with, on every notification.
const VERIFICATION_TOKEN: &str = "verification-token";
/// Longer notification ids than this are not RingCentral's.
const NOTIFICATION_ID_MAX: usize = 200;

pub async fn ringcentral_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    if let Some(token) = headers.get(VALIDATION_TOKEN) {
        let mut response = StatusCode::OK.into_response();
        response
            .headers_mut()
            .insert(VALIDATION_TOKEN, token.clone());
        return Ok(response);
    }
    let expected = state.settings.ringcentral.webhook_token.expose();
    if expected.is_empty() {
        return Err(Refusal::NotConfigured(
            "RingCentral's webhook is not configured here (RINGCENTRAL_WEBHOOK_TOKEN)".into(),
        ));
    }
    let given = headers
        .get(VERIFICATION_TOKEN)
        .ok_or_else(|| ApiError::Unauthorized("missing Verification-Token header".into()))?;
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(ApiError::Forbidden("wrong Verification-Token".into()).into());
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(
                "the notification is larger than the limit (MAX_BODY_BYTES)".into(),
            )
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })?;
    let notification = notification(&body)?;
    let uuid = notification["uuid"].as_str().unwrap_or_default().to_owned();
    let event = notification["event"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // The job goes first; a repeat finds the receipt taken and rolls the job back.
    let mut tx = state.pool.begin().await?;
    let job_id = jobs::enqueue(
        &mut tx,
        NewJob::new(
            kinds::RINGCENTRAL_EVENT,
            &payloads::RingCentralEvent { notification },
        ),
        state.settings.jobs.max_attempts,
    )
    .await?;
    let taken = sqlx::query(
        "INSERT INTO webhook_receipts (provider, notification_id, event, job_id)
         VALUES ('ringcentral', $1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&uuid)
    .bind(&event)
    .bind(job_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if taken == 0 {
        tx.rollback().await?;
        return Ok((StatusCode::OK, Json(json!({ "status": "duplicate" }))).into_response());
    }
    tx.commit().await?;
    state.outbox.notify_one();
    Ok((
        StatusCode::OK,
        Json(json!({ "status": "accepted", "job_id": job_id })),
    )
        .into_response())
}

/// The envelope: a JSON object with a `uuid`, an `event` and a `body`. Kept whole for
/// the job (`subscriptionId`, `timestamp` and whatever RingCentral adds).
fn notification(raw: &[u8]) -> Result<Value, ApiError> {
    let refuse = |message: String| ApiError::bad_request("invalid_notification", message);
    let envelope: Map<String, Value> = serde_json::from_slice(raw).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the notification is not a JSON object: {e}"),
        )
    })?;
    match envelope.get("uuid").and_then(Value::as_str) {
        Some(uuid) if !uuid.trim().is_empty() && uuid.len() <= NOTIFICATION_ID_MAX => {}
        _ => {
            return Err(refuse(format!(
                "uuid: required, a string of 1 to {NOTIFICATION_ID_MAX} characters"
            )));
        }
    }
    match envelope.get("event").and_then(Value::as_str) {
        Some(event) if !event.trim().is_empty() => {}
        _ => return Err(refuse("event: required, the event filter's path".into())),
    }
    if !envelope.get("body").is_some_and(Value::is_object) {
        return Err(refuse("body: required, an object".into()));
    }
    Ok(Value::Object(envelope))
}

// --- Recording -----------------------------------------------------------------------

/// An email's own headers, written with it.
#[derive(Debug)]
struct EmailHeaders<'a> {
    rfc822_message_id: &'a str,
    provider_thread_id: Option<&'a str>,
    in_reply_to: Option<&'a str>,
    references: Option<&'a str>,
}

#[derive(Debug)]
struct CallFacts {
    duration_seconds: i32,
    occurred_at: DateTime<Utc>,
}

/// A communication over a provider: an in-app one plus the other party's address and
/// what the channel needs.
#[derive(Debug)]
struct NewProviderCommunication<'a> {
    id: Uuid,
    customer_id: &'a CustomerId,
    communication_type: CommunicationType,
    direction: &'static str,
    sender_id: &'a str,
    sender_role: &'a str,
    subject: Option<&'a str>,
    message: &'a str,
    attachments: Value,
    metadata: Value,
    remote_address: &'a str,
    local_address: Option<&'a str>,
    email: Option<EmailHeaders<'a>>,
    call: Option<CallFacts>,
}

/// Writes the communication, its job and the contacts in the caller's transaction;
/// returns the 202 body.
async fn record(
    tx: &mut PgConnection,
    state: &AppState,
    c: &NewProviderCommunication<'_>,
    job: NewJob,
    contacts: &[(ContactKind, &str)],
) -> Result<Value, ApiError> {
    store::ensure_conversation(&mut *tx, c.customer_id).await?;
    let (status, created_at): (String, DateTime<Utc>) = sqlx::query_as(
        r#"INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role, subject,
               message, attachments, metadata, remote_address, local_address, rfc822_message_id,
               provider_thread_id, in_reply_to, "references", duration_seconds, occurred_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
           RETURNING status, created_at"#,
    )
    .bind(c.id)
    .bind(c.customer_id.as_str())
    .bind(c.communication_type.as_str())
    .bind(c.direction)
    .bind(c.sender_id)
    .bind(c.sender_role)
    .bind(c.subject)
    .bind(c.message)
    .bind(&c.attachments)
    .bind(&c.metadata)
    .bind(c.remote_address)
    .bind(c.local_address)
    .bind(c.email.as_ref().map(|e| e.rfc822_message_id))
    .bind(c.email.as_ref().and_then(|e| e.provider_thread_id))
    .bind(c.email.as_ref().and_then(|e| e.in_reply_to))
    .bind(c.email.as_ref().and_then(|e| e.references))
    .bind(c.call.as_ref().map(|call| call.duration_seconds))
    .bind(c.call.as_ref().map(|call| call.occurred_at))
    .fetch_one(&mut *tx)
    .await?;
    for (kind, address) in contacts {
        contact::remember(&mut *tx, *kind, address, c.customer_id).await?;
    }
    let job = job.for_communication(c.id).for_customer(c.customer_id);
    let job_id = jobs::enqueue(&mut *tx, job, state.settings.jobs.max_attempts).await?;
    Ok(json!({
        "id": c.id,
        "status": status,
        "type": c.communication_type.as_str(),
        "customer_id": c.customer_id,
        "direction": c.direction,
        "remote_address": c.remote_address,
        "created_at": created_at,
        "job_id": job_id,
    }))
}

/// Stores the answer with the idempotency key, commits, and wakes the relay.
async fn finish(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    state: &AppState,
    key: Option<&IdempotencyKey>,
    body: Value,
) -> Answer {
    if let Some(key) = key {
        key.store(&mut tx, StatusCode::ACCEPTED, &body).await?;
    }
    tx.commit().await?;
    state.outbox.notify_one();
    Ok((StatusCode::ACCEPTED, Json(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_is_measured_as_it_will_be_encoded() {
        // Nothing but the allowances: headers and the text part.
        assert_eq!(encoded_email_size(0, std::iter::empty()), 16 * 1024 + 1024);
        // 57 bytes are one full base64 line: 76 characters and CRLF.
        assert_eq!(
            encoded_email_size(57, std::iter::empty()),
            16 * 1024 + 1024 + 78
        );
        // Files grow by a third, and a little more for line breaks and part headers.
        let mib = 1u64 << 20;
        let one =
            encoded_email_size(0, [mib].into_iter()) - encoded_email_size(0, std::iter::empty());
        assert!(one > mib * 4 / 3 && one < mib * 4 / 3 * 103 / 100, "{one}");
        // About 25.5 MiB of files fill Gmail's 35 MiB: 25 MiB fit, 26 MiB do not.
        let fits = |sizes: &[u64]| {
            encoded_email_size(1000, sizes.iter().copied()) <= GMAIL_MAX_MESSAGE_BYTES
        };
        assert!(fits(&[12 * mib, 13 * mib]));
        assert!(!fits(&[13 * mib, 13 * mib]));
        assert!(!fits(&[26 * mib]));
    }

    #[test]
    fn sms_text_is_bounded_in_characters_and_empty_only_with_files() {
        assert!(sms_text("hi", false).is_ok());
        assert!(sms_text(&"é".repeat(SMS_MAX_CHARS), false).is_ok());
        let error = sms_text(&"é".repeat(SMS_MAX_CHARS + 1), false).unwrap_err();
        assert!(error.to_string().contains("1001 characters"), "{error}");
        assert!(sms_text("", true).is_ok());
        assert!(sms_text("", false).is_err());
        assert!(sms_text("   ", true).is_err());
        assert!(sms_text("a\0b", false).is_err());
    }

    #[test]
    fn subjects_are_one_line() {
        assert!(subject("Quote for the roof").is_ok());
        assert!(subject(&"s".repeat(SUBJECT_MAX_CHARS)).is_ok());
        for bad in ["", "  ", "a\r\nBcc: x@evil.com", "a\nb", &"s".repeat(999)] {
            assert!(subject(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_reply_threads_under_what_it_answers() {
        let earlier = Earlier {
            subject: Some("Quote".into()),
            provider_thread_id: Some("18c2f".into()),
            rfc822_message_id: Some("<b@example.com>".into()),
            references: Some("<a@example.com>".into()),
        };
        let reply = Threading::reply_to(&earlier, None).unwrap();
        assert_eq!(
            reply,
            Threading {
                subject: "Re: Quote".into(),
                provider_thread_id: Some("18c2f".into()),
                in_reply_to: Some("<b@example.com>".into()),
                references: Some("<a@example.com> <b@example.com>".into()),
            }
        );
        // "Re: " once, whatever the reply's own subject says.
        let again = Earlier {
            subject: Some("RE: Quote".into()),
            references: None,
            ..earlier
        };
        let reply = Threading::reply_to(&again, Some("Re: re: Quote")).unwrap();
        assert_eq!(reply.subject, "RE: Quote");
        assert_eq!(reply.references.as_deref(), Some("<b@example.com>"));
        assert!(Threading::reply_to(&again, Some("Another matter")).is_err());
        // Subjects are compared by characters, never cut inside one.
        let accented = Earlier {
            subject: Some("éé".into()),
            ..again
        };
        assert_eq!(
            Threading::reply_to(&accented, Some("éé")).unwrap().subject,
            "Re: éé"
        );
    }

    #[test]
    fn recipients_are_one_or_many_and_never_twice() {
        let one = recipients(&json!("Jane <jane@example.com>")).unwrap();
        assert_eq!(one[0].to_string(), "Jane <jane@example.com>");
        let many = recipients(&json!(["a@example.com", "B <b@example.com>"])).unwrap();
        assert_eq!(many.len(), 2);
        for bad in [
            json!([]),
            json!(42),
            json!([1]),
            json!("not an address"),
            json!(["a@example.com", "A <a@EXAMPLE.com>"]),
            json!("\"a,b\"@example.com"),
        ] {
            let error = recipients(&bad).unwrap_err().to_string();
            assert!(error.starts_with("to: "), "{bad}: {error}");
        }
    }
}
