//! SMS and MMS sending, the message store (one record, a filtered list) and status changes.
//!
//! Validation error codes: CMN-100 (a required parameter is missing) and CMN-101 (a value
//! is invalid) follow RingCentral's common codes; the MSG-3xx codes and
//! [`super::NOT_SMS_CAPABLE`] are (check): clients should classify by status.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{RateGroup, RingCentral, error, is_e164, listing, query_map, subscriptions};
use crate::faults::Endpoint;
use crate::server::{Connection, lock, split_multipart};

const MAX_TEXT_CHARS: usize = 1000;
/// Attachments of one MMS, in all (1.5 MB).
const MAX_MMS_BYTES: usize = 1_500_000;
const MAX_MMS_ATTACHMENTS: usize = 10;
/// The media types RingCentral accepts in an MMS (jpeg, png, bmp, gif, tiff, svg, 3gp,
/// mp4, mpeg, avi, mp3, vcard, zip, gzip, rtf), with the usual aliases.
const MMS_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/bmp",
    "image/gif",
    "image/tiff",
    "image/svg+xml",
    "video/3gpp",
    "video/mp4",
    "video/mpeg",
    "video/x-msvideo",
    "video/avi",
    "audio/mpeg",
    "audio/mp3",
    "text/vcard",
    "text/x-vcard",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/rtf",
    "text/rtf",
];
const STATUSES: &[&str] = &[
    "Queued",
    "Sent",
    "Delivered",
    "DeliveryFailed",
    "SendingFailed",
];

/// Every message of the extension, in creation order.
#[derive(Default)]
pub(super) struct Store {
    messages: Vec<Stored>,
    conversations: HashMap<String, u64>,
}

struct Stored {
    id: u64,
    created: DateTime<Utc>,
    record: Value,
}

impl Store {
    fn get(&self, id: u64) -> Option<&Stored> {
        self.messages.iter().find(|message| message.id == id)
    }
}

impl super::RingCentral {
    pub(super) fn sent(&self) -> Vec<Value> {
        lock(&self.store)
            .messages
            .iter()
            .filter(|message| message.record["direction"] == "Outbound")
            .map(|message| message.record.clone())
            .collect()
    }
}

fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An attachment accepted with an MMS.
struct Attachment {
    content_type: String,
    file_name: Option<String>,
    size: usize,
}

pub(super) async fn send_sms(
    State(rc): State<Arc<RingCentral>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The SMS path takes an MMS too when the body is multipart.
    let multipart = content_type(&headers).is_some_and(|value| value.starts_with("multipart/"));
    let work = async {
        match if multipart {
            parse_mms(&headers, &body)
        } else {
            parse_sms(&body)
        } {
            Ok((request, attachments)) => accept(&rc, request, attachments),
            Err(refusal) => refusal,
        }
    };
    rc.serve(
        Endpoint::Send,
        RateGroup::Medium,
        Some(&headers),
        &connection,
        work,
    )
    .await
}

pub(super) async fn send_mms(
    State(rc): State<Arc<RingCentral>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let work = async {
        match parse_mms(&headers, &body) {
            Ok((request, attachments)) => accept(&rc, request, attachments),
            Err(refusal) => refusal,
        }
    };
    rc.serve(
        Endpoint::Send,
        RateGroup::Medium,
        Some(&headers),
        &connection,
        work,
    )
    .await
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
}

fn bad_request(code: &str, message: &str, parameter: Option<&str>) -> Response {
    error(StatusCode::BAD_REQUEST, code, message, parameter)
}

fn parse_sms(body: &[u8]) -> Result<(Value, Vec<Attachment>), Response> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|_| bad_request("CMN-101", "Request body is not valid JSON", None))?;
    match request["text"].as_str() {
        None => Err(bad_request(
            "CMN-100",
            "Parameter [text] is not specified",
            Some("text"),
        )),
        Some("") => Err(bad_request(
            "CMN-101",
            "Parameter [text] value is invalid: empty",
            Some("text"),
        )),
        Some(_) => Ok((request, Vec::new())),
    }
}

/// `multipart/mixed` (or form-data): the JSON body first, then the files.
fn parse_mms(headers: &HeaderMap, body: &Bytes) -> Result<(Value, Vec<Attachment>), Response> {
    let parts = content_type(headers)
        .and_then(|content_type| split_multipart(content_type, body))
        .ok_or_else(|| {
            bad_request(
                "CMN-101",
                "MMS body must be multipart/mixed with a boundary",
                None,
            )
        })?;
    let Some((first, files)) = parts.split_first() else {
        return Err(bad_request(
            "CMN-100",
            "The request body part is missing",
            None,
        ));
    };
    if first.media_type() != "application/json" {
        return Err(bad_request(
            "CMN-101",
            "The first part must be the application/json request body",
            None,
        ));
    }
    let request: Value = serde_json::from_slice(&first.body)
        .map_err(|_| bad_request("CMN-101", "Request body is not valid JSON", None))?;
    if files.is_empty() {
        return Err(bad_request(
            "CMN-100",
            "An MMS needs at least one attachment",
            Some("attachments"),
        ));
    }
    if files.len() > MAX_MMS_ATTACHMENTS {
        return Err(bad_request(
            "MSG-348",
            &format!(
                "{} attachments: at most {MAX_MMS_ATTACHMENTS} are allowed",
                files.len()
            ),
            Some("attachments"),
        ));
    }
    let total: usize = files.iter().map(|file| file.body.len()).sum();
    if total > MAX_MMS_BYTES {
        return Err(bad_request(
            "MSG-349",
            &format!("Attachments total {total} bytes: at most {MAX_MMS_BYTES} are allowed"),
            Some("attachments"),
        ));
    }
    let mut attachments = Vec::new();
    for file in files {
        let content_type = file.media_type();
        if !MMS_TYPES.contains(&content_type.as_str()) {
            return Err(bad_request(
                "MSG-350",
                &format!("Attachment content type [{content_type}] is not supported"),
                Some("attachments"),
            ));
        }
        attachments.push(Attachment {
            content_type,
            file_name: file.file_name(),
            size: file.body.len(),
        });
    }
    if let Some(text) = request.get("text")
        && !text.is_string()
    {
        return Err(bad_request(
            "CMN-101",
            "Parameter [text] value is invalid",
            Some("text"),
        ));
    }
    Ok((request, attachments))
}

/// Validates the common fields, stores the record and answers it.
fn accept(rc: &RingCentral, request: Value, attachments: Vec<Attachment>) -> Response {
    let from = match request["from"]["phoneNumber"].as_str() {
        None => {
            return bad_request(
                "CMN-100",
                "Parameter [from.phoneNumber] is not specified",
                Some("from"),
            );
        }
        Some(number) if !is_e164(number) => {
            return bad_request(
                "CMN-101",
                "Parameter [from.phoneNumber] value is invalid",
                Some("from.phoneNumber"),
            );
        }
        Some(number) if number != rc.config.from_number => {
            return bad_request(
                "MSG-304",
                &format!(
                    "Phone number [{number}] does not belong to the extension or cannot send SMS"
                ),
                Some("from.phoneNumber"),
            );
        }
        Some(number) => number.to_owned(),
    };
    let Some(recipients) = request["to"].as_array().filter(|to| !to.is_empty()) else {
        return bad_request("CMN-100", "Parameter [to] is not specified", Some("to"));
    };
    let mut to = Vec::new();
    for recipient in recipients {
        match recipient["phoneNumber"].as_str() {
            Some(number) if is_e164(number) => to.push(number.to_owned()),
            _ => {
                return bad_request(
                    "CMN-101",
                    "Parameter [to.phoneNumber] value is invalid",
                    Some("to.phoneNumber"),
                );
            }
        }
    }
    if let Some(number) = to
        .iter()
        .find(|number| rc.config.no_sms_numbers.contains(number))
    {
        return bad_request(
            super::NOT_SMS_CAPABLE,
            &format!("Phone number [{number}] is not SMS-capable"),
            Some("to.phoneNumber"),
        );
    }
    let text = request["text"].as_str().unwrap_or_default();
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return bad_request(
            "CMN-101",
            &format!(
                "Parameter [text] value is invalid: {chars} characters, at most {MAX_TEXT_CHARS}"
            ),
            Some("text"),
        );
    }
    let record = store(rc, &from, &to, text, &attachments, "Outbound", "Queued");
    Json(record).into_response()
}

/// Creates a message-store record and keeps it.
fn store(
    rc: &RingCentral,
    from: &str,
    to: &[String],
    text: &str,
    attachments: &[Attachment],
    direction: &str,
    status: &str,
) -> Value {
    let id = rc.next_id();
    let now = Utc::now();
    let uri = format!("{}/message-store/{id}", rc.extension_uri());
    let mut files = Vec::new();
    if !text.is_empty() {
        files.push(json!({
            "id": rc.next_id(), "uri": format!("{uri}/content/{id}"), "type": "Text", "contentType": "text/plain",
        }));
    }
    for attachment in attachments {
        let attachment_id = rc.next_id();
        let mut file = json!({
            "id": attachment_id, "uri": format!("{uri}/content/{attachment_id}"), "type": "MmsAttachment",
            "contentType": attachment.content_type, "size": attachment.size,
        });
        if let Some(name) = &attachment.file_name {
            file["fileName"] = json!(name);
        }
        files.push(file);
    }
    let mut store = lock(&rc.store);
    let mut parties: Vec<&str> = to.iter().map(String::as_str).chain([from]).collect();
    parties.sort_unstable();
    let next_conversation = rc.next_id();
    let conversation_id = *store
        .conversations
        .entry(parties.join(","))
        .or_insert(next_conversation);
    let record = json!({
        "uri": uri,
        "id": id,
        "to": to.iter().map(|number| json!({ "phoneNumber": number })).collect::<Vec<_>>(),
        "from": { "phoneNumber": from },
        "type": "SMS",
        "creationTime": timestamp(now),
        "readStatus": if direction == "Outbound" { "Read" } else { "Unread" },
        "priority": "Normal",
        "attachments": files,
        "direction": direction,
        "availability": "Alive",
        "subject": text,
        "messageStatus": status,
        "conversationId": conversation_id,
        "conversation": {
            "id": conversation_id.to_string(),
            "uri": format!("{}/restapi/v1.0/conversation/{conversation_id}", rc.base_url),
        },
        "lastModifiedTime": timestamp(now),
    });
    store.messages.push(Stored {
        id,
        created: now,
        record: record.clone(),
    });
    record
}

pub(super) async fn get(
    State(rc): State<Arc<RingCentral>>,
    Extension(connection): Extension<Connection>,
    Path((_account, _extension, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let store = lock(&rc.store);
        match id.parse().ok().and_then(|id| store.get(id)) {
            Some(message) => Json(message.record.clone()).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "CMN-102",
                "Resource for parameter [messageId] is not found",
                Some("messageId"),
            ),
        }
    };
    rc.serve(
        Endpoint::MessageStore,
        RateGroup::Light,
        Some(&headers),
        &connection,
        work,
    )
    .await
}

/// `GET …/message-store` with `messageType`, `direction`, `dateFrom` (default: a day
/// ago, as RingCentral's), `dateTo`, `phoneNumber`, `perPage` and `page`; newest first.
pub(super) async fn list(
    State(rc): State<Arc<RingCentral>>,
    Extension(connection): Extension<Connection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let query = query_map(query.as_deref());
        let window = match listing::DateWindow::parse(&query) {
            Ok(window) => window,
            Err(refusal) => return refusal,
        };
        let paging = match listing::Paging::parse(&query) {
            Ok(paging) => paging,
            Err(refusal) => return refusal,
        };
        let phone = query.get("phoneNumber").map(|number| digits(number));
        let store = lock(&rc.store);
        let records: Vec<Value> = store
            .messages
            .iter()
            .rev()
            .filter(|message| window.contains(message.created))
            .filter(|message| {
                query
                    .get("messageType")
                    .is_none_or(|kind| message.record["type"] == kind.as_str())
            })
            .filter(|message| {
                query
                    .get("direction")
                    .is_none_or(|way| message.record["direction"] == way.as_str())
            })
            .filter(|message| {
                phone
                    .as_ref()
                    .is_none_or(|phone| involves(&message.record, phone))
            })
            .map(|message| message.record.clone())
            .collect();
        let uri = format!("{}/message-store", rc.extension_uri());
        Json(paging.page_of(records, &uri, &query)).into_response()
    };
    rc.serve(
        Endpoint::MessageStore,
        RateGroup::Light,
        Some(&headers),
        &connection,
        work,
    )
    .await
}

fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

fn involves(record: &Value, phone_digits: &str) -> bool {
    let from = record["from"]["phoneNumber"].as_str().into_iter();
    let to = record["to"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|party| party["phoneNumber"].as_str());
    from.chain(to).any(|number| digits(number) == phone_digits)
}

pub(super) fn set_status(rc: &Arc<RingCentral>, id: &str, status: &str) -> bool {
    if !STATUSES.contains(&status) {
        return false;
    }
    let Ok(id) = id.parse::<u64>() else {
        return false;
    };
    {
        let mut store = lock(&rc.store);
        let Some(message) = store.messages.iter_mut().find(|message| message.id == id) else {
            return false;
        };
        message.record["messageStatus"] = json!(status);
        message.record["lastModifiedTime"] = json!(timestamp(Utc::now()));
        if status.ends_with("Failed") {
            // A carrier's "number unavailable" (RingCentral's SMS-UP-4xx family).
            message.record["deliveryErrorCode"] = json!("SMS-UP-410");
        }
    }
    let rc = rc.clone();
    tokio::spawn(async move { subscriptions::notify_changed(&rc, id, false).await });
    true
}

pub(super) async fn inbound_sms(rc: &Arc<RingCentral>, from: &str, text: &str) -> u64 {
    let record = store(
        rc,
        from,
        std::slice::from_ref(&rc.config.from_number),
        text,
        &[],
        "Inbound",
        "Received",
    );
    let id = record["id"].as_u64().unwrap_or_default();
    subscriptions::notify_changed(rc, id, true).await;
    subscriptions::notify_instant(rc, &record).await;
    id
}
