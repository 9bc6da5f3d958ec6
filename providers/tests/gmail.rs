//! The Gmail client against a tiny server: tokens, simple and upload sends, lookups.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE};
use bytes::Bytes;
use commcenter_providers::{
    Failure,
    gmail::{Gmail, MAX_MESSAGE_BYTES},
};
use serde_json::{Value, json};
use support::{Count, gmail_settings, serve};

#[derive(Clone, Default)]
struct Fake {
    token_calls: Count,
    /// Refuse the refresh token as revoked.
    revoked: Arc<Mutex<bool>>,
    valid_token: Arc<Mutex<String>>,
    /// What the send endpoints received: path and query, content type, body.
    sends: Arc<Mutex<Vec<(String, String, Bytes)>>>,
    /// An error the send endpoint answers with instead (status, body).
    send_error: Arc<Mutex<Option<(StatusCode, Value)>>>,
}

async fn token(State(fake): State<Fake>, Form(form): Form<Vec<(String, String)>>) -> Response {
    let n = fake.token_calls.bump();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("grant_type"), Some("refresh_token"));
    assert_eq!(field("refresh_token"), Some("mailbox-refresh"));
    assert_eq!(
        (field("client_id"), field("client_secret")),
        (Some("google-client"), Some("google-secret"))
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    if *fake.revoked.lock().expect("flag") {
        let body = json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    *fake.valid_token.lock().expect("token") = format!("ya29.{n}");
    Json(json!({"access_token": format!("ya29.{n}"), "expires_in": 3599, "scope": "https://www.googleapis.com/auth/gmail.send", "token_type": "Bearer"}))
        .into_response()
}

fn authorized(fake: &Fake, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", fake.valid_token.lock().expect("token"));
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str())
}

fn google_error(status: StatusCode, reason: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": reason, "errors": [{"domain": "global", "reason": reason, "message": reason}]}});
    (status, Json(body)).into_response()
}

async fn send(
    State(fake): State<Fake>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&fake, &headers) {
        return google_error(StatusCode::UNAUTHORIZED, "authError");
    }
    if let Some((status, body)) = fake.send_error.lock().expect("error").clone() {
        return (status, Json(body)).into_response();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    fake.sends
        .lock()
        .expect("sends")
        .push((uri.to_string(), content_type, body));
    Json(json!({"id": "18f0c1", "threadId": "18f0aa", "labelIds": ["SENT"]})).into_response()
}

fn router(fake: &Fake) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/gmail/v1/users/me/messages/send", post(send))
        .route("/upload/gmail/v1/users/me/messages/send", post(send))
        .route(
            "/gmail/v1/users/me/messages",
            get(|Query(query): Query<Vec<(String, String)>>| async move {
                let q = query.iter().find(|(k, _)| k == "q").map(|(_, v)| v.as_str()).unwrap_or_default();
                if q == "rfc822msgid:known@example.com" {
                    Json(json!({"messages": [{"id": "18f0c1", "threadId": "18f0aa"}], "resultSizeEstimate": 1}))
                } else {
                    Json(json!({"resultSizeEstimate": 0}))
                }
            }),
        )
        .route(
            "/gmail/v1/users/me/messages/{id}",
            get(|Path(id): Path<String>, Query(query): Query<Vec<(String, String)>>| async move {
                assert_eq!(query, [("format".to_owned(), "minimal".to_owned())]);
                Json(json!({"id": id, "threadId": "18f0aa", "labelIds": ["SENT"], "snippet": "", "historyId": "1", "internalDate": "0", "sizeEstimate": 10}))
            }),
        )
        // Gmail takes up to 35 MiB; axum's default is 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(40 << 20))
        .with_state(fake.clone())
}

async fn client(fake: &Fake) -> Gmail {
    Gmail::new(&gmail_settings(
        &serve(router(fake)).await,
        Duration::from_secs(10),
    ))
    .expect("client")
}

const RAW: &[u8] =
    b"From: team@example.com\r\nTo: client@example.org\r\nSubject: hi\r\n\r\nhello\r\n";

#[tokio::test]
async fn a_small_message_is_sent_as_base64url_json() {
    let fake = Fake::default();
    let gmail = client(&fake).await;
    let sent = gmail
        .send(Bytes::from_static(RAW), Some("18f0aa"))
        .await
        .expect("sent");
    assert_eq!(
        (
            sent.id.as_str(),
            sent.thread_id.as_str(),
            sent.label_ids.as_slice()
        ),
        ("18f0c1", "18f0aa", &["SENT".to_owned()][..])
    );
    let (uri, content_type, body) = fake.sends.lock().expect("sends")[0].clone();
    assert_eq!(
        (uri.as_str(), content_type.as_str()),
        ("/gmail/v1/users/me/messages/send", "application/json")
    );
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["threadId"], "18f0aa");
    assert_eq!(
        URL_SAFE
            .decode(body["raw"].as_str().unwrap_or_default())
            .expect("base64url"),
        RAW
    );
    assert_eq!(fake.token_calls.get(), 1);
}

#[tokio::test]
async fn a_large_message_goes_by_the_upload_endpoint() {
    let fake = Fake::default();
    let gmail = client(&fake).await;
    let mut raw = RAW.to_vec();
    raw.extend(std::iter::repeat_n(b'x', 6 * 1024 * 1024));
    gmail
        .send(Bytes::from(raw.clone()), None)
        .await
        .expect("sent");
    let (uri, content_type, body) = fake.sends.lock().expect("sends")[0].clone();
    assert_eq!(
        uri,
        "/upload/gmail/v1/users/me/messages/send?uploadType=multipart"
    );
    assert!(
        content_type.starts_with("multipart/related; boundary="),
        "{content_type}"
    );
    let mut whole = format!("Content-Type: {content_type}\r\n\r\n").into_bytes();
    whole.extend_from_slice(&body);
    let parsed = mail_parser::MessageParser::default()
        .parse(&whole)
        .expect("MIME");
    let metadata: Value = serde_json::from_slice(parsed.parts[1].contents()).expect("metadata");
    assert_eq!(metadata, json!({}));
    // The message part is the message itself, byte for byte.
    let start = body.windows(raw.len()).position(|w| w == raw.as_slice());
    assert!(start.is_some(), "the raw message is in the upload");
}

#[tokio::test]
async fn a_message_over_35_mib_is_refused_before_any_call() {
    let fake = Fake::default();
    let gmail = client(&fake).await;
    let error = gmail
        .send(Bytes::from(vec![b'x'; MAX_MESSAGE_BYTES + 1]), None)
        .await
        .expect_err("too large");
    assert_eq!(
        (error.failure, error.code.as_deref()),
        (Failure::Permanent, Some("message_too_large"))
    );
    assert_eq!(fake.token_calls.get(), 0);
    assert!(fake.sends.lock().expect("sends").is_empty());
}

#[tokio::test]
async fn a_revoked_mailbox_answers_every_caller_with_one_token_request() {
    let fake = Fake::default();
    *fake.revoked.lock().expect("flag") = true;
    let gmail = client(&fake).await;
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let gmail = gmail.clone();
            tokio::spawn(async move { gmail.send(Bytes::from_static(RAW), None).await })
        })
        .collect();
    for task in tasks {
        let error = task.await.expect("task").expect_err("revoked");
        assert_eq!(
            (error.failure, error.code.as_deref()),
            (Failure::Permanent, Some("invalid_grant"))
        );
        assert!(
            error.message.contains("mailbox must be reconnected"),
            "{}",
            error.message
        );
    }
    assert_eq!(fake.token_calls.get(), 1, "no retry storm");
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_and_the_send_retried() {
    let fake = Fake::default();
    let gmail = client(&fake).await;
    gmail
        .send(Bytes::from_static(RAW), None)
        .await
        .expect("sent");
    *fake.valid_token.lock().expect("token") = "revoked-elsewhere".into();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let gmail = gmail.clone();
            tokio::spawn(async move { gmail.send(Bytes::from_static(RAW), None).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("sent after the refresh");
    }
    assert_eq!(fake.token_calls.get(), 2);
    assert_eq!(fake.sends.lock().expect("sends").len(), 201);
}

#[tokio::test]
async fn quota_errors_are_read_by_reason() {
    let fake = Fake::default();
    let gmail = client(&fake).await;
    let daily = json!({"error": {"code": 403, "message": "Daily Limit Exceeded", "errors": [{"domain": "usageLimits", "reason": "dailyLimitExceeded", "message": "Daily Limit Exceeded"}]}});
    *fake.send_error.lock().expect("error") = Some((StatusCode::FORBIDDEN, daily));
    let error = gmail
        .send(Bytes::from_static(RAW), None)
        .await
        .expect_err("quota");
    let Failure::Transient {
        retry_after: Some(wait),
    } = error.failure
    else {
        panic!("{error}")
    };
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(25 * 3600),
        "{wait:?}"
    );
    assert_eq!(error.code.as_deref(), Some("dailyLimitExceeded"));
}

#[tokio::test]
async fn a_message_is_found_by_its_message_id() {
    let fake = Fake::default();
    let gmail = client(&fake).await;
    let found = gmail
        .find_by_message_id("<known@example.com>")
        .await
        .expect("searched")
        .expect("found");
    assert_eq!(
        (
            found.id.as_str(),
            found.thread_id.as_str(),
            found.label_ids.as_slice()
        ),
        ("18f0c1", "18f0aa", &["SENT".to_owned()][..])
    );
    assert_eq!(
        gmail
            .find_by_message_id("known@example.com")
            .await
            .expect("searched"),
        Some(found)
    );
    assert_eq!(
        gmail
            .find_by_message_id("<unknown@example.com>")
            .await
            .expect("searched"),
        None
    );
}
