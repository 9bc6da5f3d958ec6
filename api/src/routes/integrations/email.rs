//! `POST /api/integrations/gmail/send`: an email, or a reply kept in the thread of
//! what it answers (its `In-Reply-To`, `References`, subject and Gmail thread).

use std::collections::BTreeMap;

use axum::{extract::State, http::HeaderMap};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use commcenter_shared::{
    domain::contact::Mailbox,
    domain::{CommunicationType, CustomerId, Invalid},
};

use super::{Answer, Refusal, invalid};
use crate::{
    accept::{Acceptance, Channel, EmailThread, NewCommunication, TemplateChoice, begin_or_repeat},
    auth::Caller,
    body::JsonBody,
    error::ApiError,
    state::AppState,
};
use commcenter_shared::domain::{is_blank, text};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEmailRequest {
    pub customer_id: CustomerId,
    /// The project (a job at the customer\'s site) it belongs to.
    #[serde(default)]
    pub project_id: Option<Uuid>,
    /// One address or a list of them (checked in the handler, so the error names `to`).
    pub to: Value,
    /// Required, except on a reply, which keeps the subject of what it answers.
    #[serde(default)]
    pub subject: Option<String>,
    /// Required unless a template is chosen.
    #[serde(default, alias = "content")]
    pub message: Option<String>,
    #[serde(default)]
    pub attachments: Vec<Uuid>,
    /// Rendered instead of `message` (and its subject, unless one is given).
    #[serde(default)]
    pub template_id: Option<Uuid>,
    #[serde(default)]
    pub variables: Option<BTreeMap<String, Value>>,
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

pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SendEmailRequest>,
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
    let mut acceptance = begin_or_repeat!(Acceptance::begin(
        &state,
        &caller,
        &headers,
        "POST /api/integrations/gmail/send",
        &request
    ));
    let project_id = acceptance
        .project(&caller, &request.customer_id, request.project_id)
        .await?;
    let mut composed = acceptance
        .compose(
            CommunicationType::Email,
            request.message.as_deref(),
            &TemplateChoice::of(request.template_id, &request.variables),
            false,
        )
        .await?;
    email_text(&composed.message)?;
    // A subject given with the request wins over the template's.
    let given_subject = match (given_subject, &composed.subject) {
        (Some(given), _) => Some(given.to_owned()),
        (None, Some(rendered)) => Some(
            subject(rendered)
                .map_err(|e| invalid("subject", format!("the template's rendered subject {e}")))?
                .to_owned(),
        ),
        (None, None) => None,
    };
    let answered = match (&request.reply_to_communication_id, &request.thread_id) {
        (Some(id), _) => Some(
            earlier_email(
                acceptance.conn().await?,
                &request.customer_id,
                EarlierEmail::Id(*id),
            )
            .await?
            .ok_or_else(|| {
                invalid(
                    "reply_to_communication_id",
                    format!("no email {id} for customer {}", request.customer_id),
                )
            })?,
        ),
        (None, Some(thread)) => Some(
            earlier_email(
                acceptance.conn().await?,
                &request.customer_id,
                EarlierEmail::Thread(thread),
            )
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
        Some(earlier) => Threading::reply_to(earlier, given_subject.as_deref())?,
        None => Threading {
            subject: given_subject
                .ok_or_else(|| invalid("subject", "required (1 to 998 characters)"))?,
            ..Default::default()
        },
    };
    composed.subject = Some(threading.subject.clone());
    let files = acceptance
        .files(&request.customer_id, &request.attachments)
        .await?;
    let size = encoded_email_size(
        (composed.message.len() + threading.subject.len()) as u64,
        files.iter().map(|f| f.file_size.max(0) as u64),
    );
    if size > GMAIL_MAX_MESSAGE_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "attachments: the email would be about {size} bytes once encoded, over Gmail's limit of 35 MiB ({GMAIL_MAX_MESSAGE_BYTES} bytes)"
        ))
        .into());
    }
    let mut extra = Map::new();
    extra.insert(
        "recipients".into(),
        json!(
            recipients
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ),
    );
    Ok(acceptance
        .record(
            &state,
            &caller,
            NewCommunication::outbound(
                &request.customer_id,
                project_id,
                &composed,
                &files,
                Channel::Email {
                    recipients: &recipients,
                    from: sender.address.as_str(),
                    thread: EmailThread {
                        provider_thread_id: threading.provider_thread_id.as_deref(),
                        in_reply_to: threading.in_reply_to.as_deref(),
                        references: threading.references.as_deref(),
                    },
                },
            ),
            extra,
        )
        .await?)
}

/// An email's text: up to a letter's length; when there is one, something visible and
/// no control characters ([`text::refusal_if_any`]).
fn email_text(body: &str) -> Result<(), ApiError> {
    match text::refusal_if_any(body, EMAIL_MAX_CHARS) {
        Some(why) => Err(invalid("message", why)),
        None => Ok(()),
    }
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
    if is_blank(raw) {
        return Err(Invalid(
            "must not be blank (it has nothing visible in it)".into(),
        ));
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
