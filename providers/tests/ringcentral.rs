//! The RingCentral client against tiny servers: tokens, sends, pacing, transport failures.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use commcenter_providers::{
    Attachment, Failure,
    ringcentral::{CallLogQuery, OutboundSms, RingCentral},
};
use serde_json::{Value, json};
use support::{Arrivals, Count, refused_url, ringcentral_settings, serve};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A RingCentral stand-in: issues `token-N` on the N-th grant and accepts only the
/// latest token; records grants and sends.
#[derive(Clone, Default)]
struct Fake {
    token_calls: Count,
    grants: Arc<Mutex<Vec<String>>>,
    valid_token: Arc<Mutex<String>>,
    /// What the token endpoint answers instead of a token (status, body).
    token_refusal: Arc<Mutex<Option<(StatusCode, Value)>>>,
    /// Refuse the refresh grant (so the client falls back to the JWT grant).
    refuse_refresh: Arc<Mutex<bool>>,
    sends: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

fn record(id: u64, to: &str, text: &str, created: &str) -> Value {
    json!({
        "id": id, "uri": format!("/restapi/v1.0/account/1/extension/1/message-store/{id}"),
        "type": "SMS", "direction": "Outbound", "messageStatus": "Queued", "conversationId": 7_000_000_001u64,
        "from": {"phoneNumber": "+16505550100"}, "to": [{"phoneNumber": to}], "subject": text,
        "creationTime": created, "lastModifiedTime": created,
    })
}

async fn token(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let n = fake.token_calls.bump();
    // HTTP Basic app:app-secret.
    assert_eq!(
        headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default()),
        Some("Basic YXBwOmFwcC1zZWNyZXQ=")
    );
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let grant = field("grant_type").unwrap_or_default();
    fake.grants.lock().expect("grants").push(grant.clone());
    tokio::time::sleep(Duration::from_millis(20)).await;
    if let Some((status, body)) = fake.token_refusal.lock().expect("refusal").clone() {
        return (status, Json(body)).into_response();
    }
    match grant.as_str() {
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            assert_eq!(field("assertion").as_deref(), Some("user-jwt"))
        }
        "refresh_token" => {
            assert!(field("refresh_token").is_some_and(|t| t.starts_with("refresh-")));
            if *fake.refuse_refresh.lock().expect("flag") {
                return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant", "errorCode": "OAU-211", "error_description": "Token is revoked"}))).into_response();
            }
        }
        other => panic!("unexpected grant {other}"),
    }
    *fake.valid_token.lock().expect("token") = format!("token-{n}");
    Json(json!({
        "access_token": format!("token-{n}"), "token_type": "bearer", "expires_in": 3600,
        "refresh_token": format!("refresh-{n}"), "refresh_token_expires_in": 604800,
        "scope": "SMS ReadMessages ReadCallLog", "owner_id": "1", "endpoint_id": "e",
    }))
    .into_response()
}

fn authorized(fake: &Fake, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", fake.valid_token.lock().expect("token"));
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"errorCode": "TokenInvalid", "message": "Access token is invalid"})),
    )
        .into_response()
}

async fn sms(State(fake): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&fake, &headers) {
        return unauthorized();
    }
    fake.sends.lock().expect("sends").push((headers, body));
    Json(record(
        1_724_099_032_020,
        "+14155550100",
        "hello",
        "2024-07-01T12:00:00.000Z",
    ))
    .into_response()
}

fn fake_router(fake: &Fake) -> Router {
    Router::new()
        .route("/restapi/oauth/token", post(token))
        .route("/restapi/v1.0/account/~/extension/~/sms", post(sms))
        .with_state(fake.clone())
}

fn sms_to(text: &str) -> OutboundSms {
    OutboundSms {
        from: "+16505550100".into(),
        to: "+14155550100".into(),
        text: text.into(),
        attachments: vec![],
    }
}

async fn client(router: Router) -> RingCentral {
    RingCentral::new(&ringcentral_settings(&serve(router).await, TIMEOUT)).expect("client")
}

#[tokio::test]
async fn an_sms_goes_out_as_documented() {
    let fake = Fake::default();
    let client = client(fake_router(&fake)).await;
    let sent = client.send_sms(&sms_to("hello")).await.expect("sent");
    assert_eq!(sent.id, "1724099032020");
    assert_eq!(sent.message_status, "Queued");
    assert_eq!(sent.conversation_id.as_deref(), Some("7000000001"));
    assert_eq!(
        (sent.direction.as_str(), sent.message_type.as_str()),
        ("Outbound", "SMS")
    );
    assert_eq!(sent.to, ["+14155550100"]);
    assert_eq!(sent.text.as_deref(), Some("hello"));
    assert_eq!(
        sent.creation_time,
        "2024-07-01T12:00:00Z".parse::<DateTime<Utc>>().ok()
    );
    let sends = fake.sends.lock().expect("sends").clone();
    let body: Value = serde_json::from_slice(&sends[0].1).expect("JSON");
    assert_eq!(
        body,
        json!({"from": {"phoneNumber": "+16505550100"}, "to": [{"phoneNumber": "+14155550100"}], "text": "hello"})
    );
    assert_eq!(
        fake.grants.lock().expect("grants").as_slice(),
        ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    );
}

#[tokio::test]
async fn an_mms_is_multipart_mixed_json_first() {
    let fake = Fake::default();
    let client = client(fake_router(&fake)).await;
    let mut mms = sms_to("look");
    let photo = Bytes::from_static(b"\xff\xd8\xff\xe0 jpeg bytes \r\n--not-a-boundary\r\n");
    mms.attachments = vec![Attachment {
        name: "façade.jpg".into(),
        content_type: "image/jpeg".into(),
        bytes: photo.clone(),
    }];
    client.send_sms(&mms).await.expect("sent");
    let (headers, body) = fake.sends.lock().expect("sends")[0].clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("multipart/mixed; boundary="),
        "{content_type}"
    );
    // Parsed as MIME: the JSON part, then the file.
    let mut whole = format!("Content-Type: {content_type}\r\n\r\n").into_bytes();
    whole.extend_from_slice(&body);
    let parsed = mail_parser::MessageParser::default()
        .parse(&whole)
        .expect("MIME");
    let parts: Vec<_> = parsed.parts.iter().skip(1).collect();
    assert_eq!(parts.len(), 2);
    let json: Value = serde_json::from_slice(parts[0].contents()).expect("JSON part");
    assert_eq!(json["text"], "look");
    assert_eq!(json["to"][0]["phoneNumber"], "+14155550100");
    assert_eq!(parts[1].contents(), photo.as_ref());
    use mail_parser::MimeHeaders;
    assert_eq!(parts[1].attachment_name(), Some("façade.jpg"));
}

#[tokio::test]
async fn what_ringcentral_would_refuse_is_refused_before_any_call() {
    let fake = Fake::default();
    let client = client(fake_router(&fake)).await;
    let error = client
        .send_sms(&sms_to(&"é".repeat(1001)))
        .await
        .expect_err("too long");
    assert_eq!(
        (error.failure, error.code.as_deref()),
        (Failure::Permanent, Some("text_too_long"))
    );
    assert!(
        client.send_sms(&sms_to(&"é".repeat(1000))).await.is_ok(),
        "1,000 characters is the limit, not bytes"
    );
    let mut eleven = sms_to("x");
    eleven.attachments = (0..11)
        .map(|n| Attachment {
            name: format!("{n}.gif"),
            content_type: "image/gif".into(),
            bytes: Bytes::from_static(b"GIF89a"),
        })
        .collect();
    let error = client.send_sms(&eleven).await.expect_err("too many");
    assert_eq!(
        (error.failure, error.code.as_deref()),
        (Failure::Permanent, Some("mms_too_many_files"))
    );
    assert_eq!(fake.sends.lock().expect("sends").len(), 1);
}

#[tokio::test]
async fn a_thousand_concurrent_sends_share_one_token_request() {
    let fake = Fake::default();
    let client = client(fake_router(&fake)).await;
    let sends = |client: RingCentral| async move {
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.send_sms(&sms_to("hello")).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("sent");
        }
    };
    sends(client.clone()).await;
    assert_eq!(fake.token_calls.get(), 1);

    // The token expires on RingCentral's side: every call gets a 401 with it, and one
    // refresh (with the single-use refresh token) serves them all.
    *fake.valid_token.lock().expect("token") = "expired-elsewhere".into();
    sends(client.clone()).await;
    assert_eq!(fake.token_calls.get(), 2);
    assert_eq!(fake.grants.lock().expect("grants")[1], "refresh_token");
    assert_eq!(fake.sends.lock().expect("sends").len(), 2000);
}

#[tokio::test]
async fn a_refused_refresh_falls_back_to_the_jwt_grant() {
    let fake = Fake::default();
    let client = client(fake_router(&fake)).await;
    client.send_sms(&sms_to("one")).await.expect("sent");
    *fake.refuse_refresh.lock().expect("flag") = true;
    *fake.valid_token.lock().expect("token") = "expired-elsewhere".into();
    client
        .send_sms(&sms_to("two"))
        .await
        .expect("sent with a JWT-grant token");
    let jwt = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    assert_eq!(
        fake.grants.lock().expect("grants").as_slice(),
        [jwt, "refresh_token", jwt]
    );
}

#[tokio::test]
async fn a_refused_grant_answers_every_waiting_caller_once() {
    let fake = Fake::default();
    *fake.token_refusal.lock().expect("refusal") = Some((
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_grant", "errorCode": "OAU-140", "error_description": "Invalid JWT"}),
    ));
    let client = client(fake_router(&fake)).await;
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.send_sms(&sms_to("hello")).await })
        })
        .collect();
    for task in tasks {
        let error = task.await.expect("task").expect_err("refused");
        assert_eq!(error.failure, Failure::Permanent);
        assert_eq!(error.code.as_deref(), Some("OAU-140"));
        assert!(
            error.message.contains("JWT must be replaced"),
            "{}",
            error.message
        );
    }
    assert_eq!(fake.token_calls.get(), 1, "no retry storm");
    assert!(fake.sends.lock().expect("sends").is_empty());
}

#[tokio::test]
async fn a_token_refused_after_a_refresh_is_permanent() {
    let fake = Fake::default();
    let refusals = Count::default();
    let router = Router::new()
        .route("/restapi/oauth/token", post(token))
        .route(
            "/restapi/v1.0/account/~/extension/~/sms",
            post({
                let refusals = refusals.clone();
                move || async move {
                    refusals.bump();
                    unauthorized()
                }
            }),
        )
        .with_state(fake.clone());
    let client = client(router).await;
    let error = client
        .send_sms(&sms_to("hello"))
        .await
        .expect_err("refused");
    assert_eq!(
        (error.failure, error.http_status),
        (Failure::Permanent, Some(401))
    );
    assert_eq!(refusals.get(), 2, "sent, refreshed once, sent again");
    assert_eq!(fake.token_calls.get(), 2);
}

/// A send endpoint answering with the given status and headers, recording arrivals.
fn limited(
    fake: &Fake,
    arrivals: &Arrivals,
    status: StatusCode,
    headers: &'static [(&'static str, &'static str)],
) -> Router {
    let arrivals = arrivals.clone();
    Router::new()
        .route("/restapi/oauth/token", post(token))
        .route(
            "/restapi/v1.0/account/~/extension/~/sms",
            post(move || async move {
                arrivals.record();
                let body = if status.is_success() {
                    record(1, "+14155550100", "hello", "2024-07-01T12:00:00Z")
                } else {
                    json!({"errorCode": "CMN-301", "message": "Request rate exceeded"})
                };
                let mut response = (status, Json(body)).into_response();
                for (name, value) in headers {
                    response
                        .headers_mut()
                        .insert(*name, value.parse().expect("header"));
                }
                response
            }),
        )
        .with_state(fake.clone())
}

#[tokio::test]
async fn an_exhausted_rate_limit_group_waits_for_its_window() {
    let (fake, arrivals) = (Fake::default(), Arrivals::default());
    let headers = &[
        ("x-rate-limit-group", "Medium"),
        ("x-rate-limit-limit", "40"),
        ("x-rate-limit-remaining", "0"),
        ("x-rate-limit-window", "1"),
    ];
    let client = client(limited(&fake, &arrivals, StatusCode::OK, headers)).await;
    client.send_sms(&sms_to("hello")).await.expect("sent");
    client.send_sms(&sms_to("hello")).await.expect("sent");
    let at = arrivals.all();
    let gap = at[1] - at[0];
    assert!(
        gap >= Duration::from_millis(950),
        "the second send waited {gap:?}"
    );
}

#[tokio::test]
async fn a_429_closes_the_gate_for_its_retry_after() {
    let (fake, arrivals) = (Fake::default(), Arrivals::default());
    let client = client(limited(
        &fake,
        &arrivals,
        StatusCode::TOO_MANY_REQUESTS,
        &[("retry-after", "1")],
    ))
    .await;
    let error = client
        .send_sms(&sms_to("hello"))
        .await
        .expect_err("limited");
    assert_eq!(
        error.failure,
        Failure::Transient {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert_eq!(error.code.as_deref(), Some("CMN-301"));
    let started = Instant::now();
    let _ = client.send_sms(&sms_to("hello")).await;
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(arrivals.all().len(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let client =
        RingCentral::new(&ringcentral_settings(&refused_url().await, TIMEOUT)).expect("client");
    let error = client
        .send_sms(&sms_to("hello"))
        .await
        .expect_err("refused");
    // The token request failed to connect: nothing was sent.
    assert_eq!(error.failure, Failure::Transient { retry_after: None });
    assert_eq!(error.code.as_deref(), Some("connect"));
}

#[tokio::test]
async fn a_send_left_unanswered_is_unknown_after_the_timeout() {
    let fake = Fake::default();
    let router = Router::new()
        .route("/restapi/oauth/token", post(token))
        .route(
            "/restapi/v1.0/account/~/extension/~/sms",
            post(|_: Bytes| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::OK
            }),
        )
        .with_state(fake.clone());
    let base = serve(router).await;
    let client =
        RingCentral::new(&ringcentral_settings(&base, Duration::from_millis(400))).expect("client");
    let started = Instant::now();
    let error = client
        .send_sms(&sms_to("hello"))
        .await
        .expect_err("timed out");
    assert_eq!(
        (error.failure, error.code.as_deref()),
        (Failure::Unknown, Some("timeout"))
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[derive(serde::Deserialize)]
struct StoreQuery {
    page: Option<u32>,
    #[serde(rename = "phoneNumber")]
    phone_number: String,
    direction: String,
    #[serde(rename = "dateFrom")]
    date_from: String,
}

#[tokio::test]
async fn reconciliation_finds_the_earlier_send_across_pages() {
    let fake = Fake::default();
    let router = Router::new()
        .route("/restapi/oauth/token", post(token))
        .route(
            "/restapi/v1.0/account/~/extension/~/message-store",
            get(|Query(query): Query<StoreQuery>| async move {
                assert_eq!((query.phone_number.as_str(), query.direction.as_str()), ("+14155550100", "Outbound"));
                assert_eq!(query.date_from, "2024-07-01T11:58:00.000Z", "since less the clock-skew allowance");
                match query.page.unwrap_or(1) {
                    1 => Json(json!({
                        "records": [record(1, "+14155550100", "other text", "2024-07-01T12:00:01Z"),
                                    record(2, "+14155550199", "hello", "2024-07-01T12:00:01Z")],
                        // An absolute URI on RingCentral's host: followed on ours.
                        "navigation": {"nextPage": {"uri": "https://platform.ringcentral.com/restapi/v1.0/account/~/extension/~/message-store?page=2&phoneNumber=%2B14155550100&direction=Outbound&dateFrom=2024-07-01T11:58:00.000Z"}},
                    })),
                    _ => Json(json!({
                        "records": [record(3, "+14155550100", "hello", "2024-07-01T12:00:02Z"),
                                    record(4, "+14155550100", "hello", "2024-07-01T11:00:00Z")],
                        "navigation": {},
                    })),
                }
            }),
        )
        .route(
            "/restapi/v1.0/account/~/extension/~/message-store/{id}",
            get(|Path(id): Path<String>| async move {
                if id == "3" {
                    Json(record(3, "+14155550100", "hello", "2024-07-01T12:00:02Z")).into_response()
                } else {
                    (StatusCode::NOT_FOUND, Json(json!({"errorCode": "CMN-102", "message": "Resource for parameter [messageId] is not found"}))).into_response()
                }
            }),
        )
        .with_state(fake.clone());
    let client = client(router).await;
    let since: DateTime<Utc> = "2024-07-01T12:00:00Z".parse().expect("time");
    let found = client
        .find_sent("+14155550100", "hello", since)
        .await
        .expect("searched")
        .expect("found");
    assert_eq!(found.id, "3");
    assert_eq!(
        client
            .find_sent("+14155550100", "never sent", since)
            .await
            .expect("searched"),
        None
    );
    assert_eq!(client.get_message("3").await.expect("read").id, "3");
    let missing = client.get_message("9").await.expect_err("missing");
    assert_eq!(
        (missing.failure, missing.code.as_deref()),
        (Failure::Permanent, Some("CMN-102"))
    );
}

#[tokio::test]
async fn the_call_log_is_read_page_by_page() {
    let fake = Fake::default();
    let router = Router::new()
        .route("/restapi/oauth/token", post(token))
        .route(
            "/restapi/v1.0/account/~/extension/~/call-log",
            get(|Query(query): Query<Vec<(String, String)>>| async move {
                let field = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
                if field("page").as_deref() == Some("2") && field("dateFrom").is_none() {
                    return Json(json!({"records": [], "navigation": {}}));
                }
                assert_eq!(field("dateFrom").as_deref(), Some("2024-07-01T00:00:00.000Z"));
                assert_eq!(field("dateTo").as_deref(), Some("2024-07-02T00:00:00.000Z"));
                assert_eq!((field("perPage").as_deref(), field("page").as_deref()), (Some("100"), Some("1")));
                Json(json!({
                    "records": [{
                        "id": "Y3s", "sessionId": "4503", "startTime": "2024-07-01T09:30:00.000Z", "duration": 95,
                        "type": "Voice", "direction": "Inbound", "result": "Accepted",
                        "from": {"phoneNumber": "+14155550100", "name": "Client"}, "to": {"extensionNumber": "101"},
                    }],
                    "navigation": {"nextPage": {"uri": "https://platform.ringcentral.com/restapi/v1.0/account/~/extension/~/call-log?page=2&perPage=100"}},
                }))
            }),
        )
        .with_state(fake.clone());
    let client = client(router).await;
    let page = client
        .call_log(&CallLogQuery::Range {
            date_from: "2024-07-01T00:00:00Z".parse().expect("time"),
            date_to: "2024-07-02T00:00:00Z".parse().ok(),
            per_page: 100,
            page: 1,
        })
        .await
        .expect("page");
    assert_eq!(page.records.len(), 1);
    let call = &page.records[0];
    assert_eq!(
        (call.id.as_str(), call.session_id.as_deref(), call.duration),
        ("Y3s", Some("4503"), 95)
    );
    assert_eq!(
        (call.direction.as_str(), call.result.as_str()),
        ("Inbound", "Accepted")
    );
    assert_eq!(
        (call.from.as_deref(), call.to.as_deref()),
        (Some("+14155550100"), None)
    );
    let next = page.next_page.expect("a next page");
    let last = client
        .call_log(&CallLogQuery::NextPage(next))
        .await
        .expect("page 2");
    assert!(last.records.is_empty() && last.next_page.is_none());
}
