//! `messages.list` (only the `rfc822msgid:` and `after:` queries Commcenter uses, or
//! none) and
//! `messages.get` (`format` minimal, metadata, full or raw).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use mail_parser::MessageParser;
use serde_json::{Value, json};

use super::send::Stored;
use super::{Gmail, error};
use crate::faults::Endpoint;
use crate::server::{Connection, lock};

const LOOKUP_UNITS: u32 = 5;

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    serde_urlencoded::from_str(query.unwrap_or_default()).unwrap_or_default()
}

pub(super) async fn list(
    State(gmail): State<Arc<Gmail>>,
    Extension(connection): Extension<Connection>,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let query: HashMap<String, String> = query_pairs(query.as_deref()).into_iter().collect();
        let mut after: Option<i64> = None;
        let wanted = match query.get("q").map(|q| q.trim()) {
            None | Some("") => None,
            Some(q) => match (q.strip_prefix("rfc822msgid:"), q.strip_prefix("after:")) {
                (Some(id), _) => Some(
                    id.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned(),
                ),
                (None, Some(seconds)) if seconds.trim().parse::<i64>().is_ok() => {
                    after = seconds.trim().parse().ok();
                    None
                }
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalidArgument",
                        "This fake only searches rfc822msgid: and after:<epoch seconds>",
                    );
                }
            },
        };
        let mailbox = lock(&gmail.mailbox);
        let messages: Vec<Value> = mailbox
            .iter()
            .rev()
            .filter(|stored| {
                wanted
                    .as_ref()
                    .is_none_or(|id| stored.mail.message_id == *id)
                    && after.is_none_or(|after| stored.internal_date / 1000 > after)
            })
            .map(|stored| json!({ "id": stored.mail.id, "threadId": stored.mail.thread_id }))
            .collect();
        // Google leaves `messages` out when nothing matches.
        if messages.is_empty() {
            return Json(json!({ "resultSizeEstimate": 0 })).into_response();
        }
        Json(json!({ "resultSizeEstimate": messages.len(), "messages": messages })).into_response()
    };
    gmail
        .serve(
            Endpoint::Search,
            Some((&headers, &user_id, LOOKUP_UNITS)),
            &connection,
            work,
        )
        .await
}

pub(super) async fn get(
    State(gmail): State<Arc<Gmail>>,
    Extension(connection): Extension<Connection>,
    Path((user_id, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let pairs = query_pairs(query.as_deref());
        let format = pairs
            .iter()
            .find(|(key, _)| key == "format")
            .map_or("full", |(_, value)| value.as_str());
        let wanted_headers: Vec<&str> = pairs
            .iter()
            .filter(|(key, _)| key == "metadataHeaders")
            .map(|(_, value)| value.as_str())
            .collect();
        let mailbox = lock(&gmail.mailbox);
        let Some(stored) = mailbox.iter().find(|stored| stored.mail.id == id) else {
            return error(
                StatusCode::NOT_FOUND,
                "notFound",
                "Requested entity was not found.",
            );
        };
        match render(stored, format, &wanted_headers) {
            Some(message) => Json(message).into_response(),
            None => error(
                StatusCode::BAD_REQUEST,
                "invalidArgument",
                &format!("Invalid format: {format}"),
            ),
        }
    };
    gmail
        .serve(
            Endpoint::Search,
            Some((&headers, &user_id, LOOKUP_UNITS)),
            &connection,
            work,
        )
        .await
}

fn render(stored: &Stored, format: &str, wanted_headers: &[&str]) -> Option<Value> {
    let mail = &stored.mail;
    let mut message = json!({
        "id": mail.id,
        "threadId": mail.thread_id,
        "labelIds": [stored.label],
        "sizeEstimate": mail.raw.len(),
        "internalDate": stored.internal_date.to_string(),
        "historyId": stored.history_id.to_string(),
    });
    match format {
        "minimal" => {}
        "raw" => {
            message["raw"] = json!(base64::engine::general_purpose::URL_SAFE.encode(&mail.raw))
        }
        "metadata" | "full" => {
            let parsed = MessageParser::default().parse(&mail.raw[..])?;
            let headers: Vec<Value> = parsed
                .headers_raw()
                .filter(|(name, _)| {
                    format == "full"
                        || wanted_headers.is_empty()
                        || wanted_headers
                            .iter()
                            .any(|wanted| wanted.eq_ignore_ascii_case(name))
                })
                .map(|(name, value)| json!({ "name": name, "value": value.trim() }))
                .collect();
            let mime_type = parsed
                .root_part()
                .headers()
                .iter()
                .find(|header| header.name().eq_ignore_ascii_case("content-type"))
                .and_then(|header| header.value().as_content_type())
                .map_or_else(
                    || "text/plain".to_owned(),
                    |kind| format!("{}/{}", kind.ctype(), kind.subtype().unwrap_or_default()),
                );
            message["snippet"] = json!(parsed.body_preview(100).unwrap_or_default());
            message["payload"] = json!({ "mimeType": mime_type, "headers": headers });
        }
        _ => return None,
    }
    Some(message)
}
