//! Mail coming in, and reading the mailbox incrementally as Google documents it:
//! `users.getProfile` (the current `historyId`), `users.history.list`
//! (`startHistoryId`, `historyTypes=messageAdded`, paged; a start older than what is
//! kept answers 404) and, in `lookup`, `messages.list` with `after:` and
//! `messages.get` with `format=raw`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mail_parser::MessageParser;
use serde_json::{Value, json};

use super::send::{Stored, addresses, bare, ids, new_id};
use super::{Gmail, SentMail, error};
use crate::faults::Endpoint;
use crate::server::{Connection, lock};

const PROFILE_UNITS: u32 = 1;
const HISTORY_UNITS: u32 = 2;
const HISTORY_PAGE: usize = 100;

impl Gmail {
    /// Files `raw` in the inbox as if it had arrived, threaded with the message its
    /// `In-Reply-To` or `References` name (as Gmail threads replies); answers its id.
    pub(super) fn receive(&self, raw: &[u8]) -> Option<String> {
        let message = MessageParser::default().parse(raw)?;
        let in_reply_to = ids(message.in_reply_to()).into_iter().next();
        let references = ids(message.references());
        let mut mailbox = lock(&self.mailbox);
        let thread = mailbox
            .iter()
            .find(|stored| {
                in_reply_to.as_deref() == Some(stored.mail.message_id.as_str())
                    || references.contains(&stored.mail.message_id)
            })
            .map(|stored| stored.mail.thread_id.clone());
        let id = new_id();
        let mail = SentMail {
            thread_id: thread.unwrap_or_else(|| id.clone()),
            id: id.clone(),
            raw: axum::body::Bytes::copy_from_slice(raw),
            message_id: message.message_id().map(bare).unwrap_or_default(),
            from: addresses(message.from())
                .into_iter()
                .next()
                .unwrap_or_default(),
            to: addresses(message.to()),
            subject: message.subject().unwrap_or_default().to_owned(),
            in_reply_to,
            references,
            attachments: Vec::new(),
        };
        mailbox.push(Stored {
            mail,
            internal_date: chrono::Utc::now().timestamp_millis(),
            history_id: self.next_history_id(),
            label: "INBOX",
        });
        Some(id)
    }
}

pub(super) async fn profile(
    State(gmail): State<Arc<Gmail>>,
    Extension(connection): Extension<Connection>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let mailbox = lock(&gmail.mailbox);
        Json(json!({
            "emailAddress": gmail.config.sender,
            "messagesTotal": mailbox.len(),
            "threadsTotal": mailbox.len(),
            "historyId": gmail.current_history_id().to_string(),
        }))
        .into_response()
    };
    gmail
        .serve(
            Endpoint::Search,
            Some((&headers, &user_id, PROFILE_UNITS)),
            &connection,
            work,
        )
        .await
}

pub(super) async fn history(
    State(gmail): State<Arc<Gmail>>,
    Extension(connection): Extension<Connection>,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let query: HashMap<String, String> =
            serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
        let Some(start) = query
            .get("startHistoryId")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalidArgument",
                "Invalid startHistoryId",
            );
        };
        if start < gmail.oldest_history_id() {
            return error(
                StatusCode::NOT_FOUND,
                "notFound",
                "Requested entity was not found.",
            );
        }
        let offset: usize = query
            .get("pageToken")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let page = query
            .get("maxResults")
            .and_then(|m| m.parse().ok())
            .unwrap_or(HISTORY_PAGE)
            .clamp(1, 500);
        let mailbox = lock(&gmail.mailbox);
        let records: Vec<Value> = mailbox
            .iter()
            .filter(|stored| stored.history_id > start)
            .skip(offset)
            .take(page + 1)
            .map(|stored| {
                json!({
                    "id": stored.history_id.to_string(),
                    "messages": [{ "id": stored.mail.id, "threadId": stored.mail.thread_id }],
                    "messagesAdded": [{ "message": {
                        "id": stored.mail.id,
                        "threadId": stored.mail.thread_id,
                        "labelIds": [stored.label],
                    }}],
                })
            })
            .collect();
        let mut body = json!({ "historyId": gmail.current_history_id().to_string() });
        let more = records.len() > page;
        let records: Vec<Value> = records.into_iter().take(page).collect();
        // Google leaves `history` out when nothing changed.
        if !records.is_empty() {
            body["history"] = json!(records);
        }
        if more {
            body["nextPageToken"] = json!((offset + page).to_string());
        }
        Json(body).into_response()
    };
    gmail
        .serve(
            Endpoint::Search,
            Some((&headers, &user_id, HISTORY_UNITS)),
            &connection,
            work,
        )
        .await
}
