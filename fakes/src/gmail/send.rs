//! `messages.send`: the simple JSON endpoint (`{raw, threadId?}`, at most 5 MiB of
//! request) and the upload endpoint (`uploadType=multipart` or `media`, at most 35 MiB of
//! message). The message must parse and carry From (the mailbox), To, Subject and
//! Message-ID. Real Gmail would rewrite a foreign From and add a missing Message-ID; the
//! fake refuses both, because Commcenter's reconciliation depends on its own Message-ID.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};
use serde_json::{Value, json};

use super::{Gmail, SentAttachment, SentMail, error};
use crate::faults::Endpoint;
use crate::server::{Connection, lock, media_type, split_multipart};

/// The simple endpoint's request limit (Google: "Request payload size exceeds the limit").
pub const SIMPLE_LIMIT_BYTES: usize = 5 * 1024 * 1024;
/// The upload endpoint's message limit: 35 MiB.
pub const UPLOAD_LIMIT_BYTES: usize = 36_700_160;
const SEND_UNITS: u32 = 100;

pub(super) struct Stored {
    pub(super) mail: SentMail,
    pub(super) internal_date: i64,
    /// The mailbox's history position this message was added at.
    pub(super) history_id: u64,
    /// `INBOX` for mail that came in, `SENT` for mail sent.
    pub(super) label: &'static str,
}

pub(super) async fn simple(
    State(gmail): State<Arc<Gmail>>,
    Extension(connection): Extension<Connection>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let work = async {
        if body.len() > SIMPLE_LIMIT_BYTES {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "uploadTooLarge",
                &format!("Request payload size exceeds the limit: {SIMPLE_LIMIT_BYTES} bytes."),
            );
        }
        let Ok(request) = serde_json::from_slice::<Value>(&body) else {
            return invalid("Invalid JSON payload received.");
        };
        let Some(raw) = request["raw"].as_str() else {
            return invalid(
                "'raw' RFC822 payload message string or uploading message via /upload/* URL required",
            );
        };
        let Some(message) = decode_base64url(raw) else {
            return invalid("Invalid value for ByteString: raw");
        };
        accept(&gmail, Bytes::from(message), request["threadId"].as_str())
    };
    gmail
        .serve(
            Endpoint::Send,
            Some((&headers, &user_id, SEND_UNITS)),
            &connection,
            work,
        )
        .await
}

pub(super) async fn upload(
    State(gmail): State<Arc<Gmail>>,
    Extension(connection): Extension<Connection>,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let work = async {
        let upload_type = serde_urlencoded::from_str::<Vec<(String, String)>>(
            query.as_deref().unwrap_or_default(),
        )
        .unwrap_or_default()
        .into_iter()
        .find_map(|(key, value)| (key == "uploadType").then_some(value));
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let (metadata, message) = match upload_type.as_deref() {
            Some("media") => {
                if media_type(content_type) != "message/rfc822" {
                    return invalid(
                        "Media type '' is not supported. Valid media types: [message/*]",
                    );
                }
                (Value::Null, body.clone())
            }
            Some("multipart") => match split_related(content_type, &body) {
                Ok(parts) => parts,
                Err(refusal) => return refusal,
            },
            // Resumable sessions are not served: Commcenter's messages fit one request.
            _ => return invalid("uploadType must be media or multipart on this fake"),
        };
        if message.len() > UPLOAD_LIMIT_BYTES {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "uploadTooLarge",
                &format!("Maximum upload size exceeded: {UPLOAD_LIMIT_BYTES} bytes."),
            );
        }
        accept(&gmail, message, metadata["threadId"].as_str())
    };
    gmail
        .serve(
            Endpoint::Send,
            Some((&headers, &user_id, SEND_UNITS)),
            &connection,
            work,
        )
        .await
}

/// `multipart/related`: the JSON metadata, then the `message/rfc822` part.
fn split_related(content_type: &str, body: &Bytes) -> Result<(Value, Bytes), Response> {
    let parts =
        split_multipart(content_type, body).ok_or_else(|| invalid("Malformed multipart body."))?;
    let [metadata, message] = parts.as_slice() else {
        return Err(invalid(
            "A multipart upload has two parts: the metadata and the message.",
        ));
    };
    if metadata.media_type() != "application/json" || message.media_type() != "message/rfc822" {
        return Err(invalid(
            "The parts must be application/json, then message/rfc822.",
        ));
    }
    let metadata = if metadata.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&metadata.body)
            .map_err(|_| invalid("Invalid JSON payload received."))?
    };
    Ok((metadata, message.body.clone()))
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalidArgument", message)
}

/// base64url, padded or not (Gmail takes both).
fn decode_base64url(raw: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim().trim_end_matches('='))
        .ok()
}

pub(super) fn bare(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

pub(super) fn addresses(address: Option<&Address<'_>>) -> Vec<String> {
    address
        .into_iter()
        .flat_map(Address::iter)
        .filter_map(|addr| addr.address())
        .map(str::to_owned)
        .collect()
}

pub(super) fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![bare(id)],
        HeaderValue::TextList(ids) => ids.iter().map(|id| bare(id)).collect(),
        _ => Vec::new(),
    }
}

pub(super) fn new_id() -> String {
    format!("{:016x}", rand_id())
}

/// Checks the message, threads it and keeps it.
fn accept(gmail: &Gmail, raw: Bytes, thread_id: Option<&str>) -> Response {
    let Some(message) = MessageParser::default().parse(&raw[..]) else {
        return invalid("Invalid RFC 822 message.");
    };
    let from = addresses(message.from());
    let to = addresses(message.to());
    let Some(subject) = message.subject() else {
        return invalid("Missing Subject header.");
    };
    let Some(message_id) = message.message_id().map(bare) else {
        return invalid("Missing Message-ID header.");
    };
    if from
        .first()
        .is_none_or(|from| !from.eq_ignore_ascii_case(&gmail.config.sender))
    {
        return invalid(&format!(
            "Invalid From header: must be {}",
            gmail.config.sender
        ));
    }
    if to.is_empty() {
        return invalid("Invalid To header");
    }
    let in_reply_to = ids(message.in_reply_to()).into_iter().next();
    let references = ids(message.references());
    let attachments = message
        .attachments()
        .map(|part| SentAttachment {
            name: part.attachment_name().map(str::to_owned),
            content_type: part
                .content_type()
                .map(|kind| format!("{}/{}", kind.ctype(), kind.subtype().unwrap_or_default()))
                .unwrap_or_default(),
            size: part.contents().len(),
        })
        .collect();
    let mut mailbox = lock(&gmail.mailbox);
    let thread_id = match thread_id {
        None => None,
        Some(thread) => {
            let Some(thread) = joinable_thread(
                &mailbox,
                thread,
                subject,
                in_reply_to.as_deref(),
                &references,
            ) else {
                // Google answers an unknown threadId with 404.
                return error(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    "Requested entity was not found.",
                );
            };
            thread
        }
    };
    let id = new_id();
    let mail = SentMail {
        thread_id: thread_id.unwrap_or_else(|| id.clone()),
        id,
        raw: raw.clone(),
        message_id,
        from: from[0].clone(),
        to,
        subject: subject.to_owned(),
        in_reply_to,
        references,
        attachments,
    };
    let reply = json!({ "id": mail.id, "threadId": mail.thread_id, "labelIds": ["SENT"] });
    mailbox.push(Stored {
        mail,
        internal_date: chrono::Utc::now().timestamp_millis(),
        history_id: gmail.next_history_id(),
        label: "SENT",
    });
    Json(reply).into_response()
}

/// `None` if the thread does not exist. Otherwise Gmail's documented rule: the message
/// joins the thread only if its In-Reply-To or References name a message of the thread
/// and its Subject matches (ignoring `Re:`); if not, it silently starts a new thread
/// (`Some(None)`).
fn joinable_thread(
    mailbox: &[Stored],
    thread: &str,
    subject: &str,
    in_reply_to: Option<&str>,
    references: &[String],
) -> Option<Option<String>> {
    let members: Vec<&SentMail> = mailbox
        .iter()
        .map(|stored| &stored.mail)
        .filter(|mail| mail.thread_id == thread)
        .collect();
    if members.is_empty() {
        return None;
    }
    let names_member = members.iter().any(|mail| {
        in_reply_to == Some(mail.message_id.as_str()) || references.contains(&mail.message_id)
    });
    let same_subject = members
        .iter()
        .any(|mail| strip_reply(&mail.subject) == strip_reply(subject));
    Some((names_member && same_subject).then(|| thread.to_owned()))
}

fn strip_reply(subject: &str) -> &str {
    let mut subject = subject.trim();
    while let Some(rest) = subject
        .get(..3)
        .filter(|prefix| prefix.eq_ignore_ascii_case("re:"))
        .map(|_| &subject[3..])
    {
        subject = rest.trim_start();
    }
    subject
}

/// Gmail's ids look like 16 hex digits.
fn rand_id() -> u64 {
    let uuid = uuid::Uuid::new_v4().as_u64_pair();
    uuid.0 >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_with_or_without_padding() {
        assert_eq!(decode_base64url("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64url("aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(
            decode_base64url("a+b/"),
            None,
            "standard alphabet is refused"
        );
    }

    #[test]
    fn reply_prefixes_do_not_change_the_subject() {
        assert_eq!(strip_reply("Re: RE: Quote"), "Quote");
        assert_eq!(strip_reply("Quote"), "Quote");
    }
}
