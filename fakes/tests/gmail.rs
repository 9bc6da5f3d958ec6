//! The fake Gmail against a real HTTP client: OAuth, the three ways to send, the checks
//! on the message, threading, the rfc822msgid lookup, quota and faults.

use std::time::Duration;

use base64::Engine;
use commcenter_fakes::{Endpoint, FakeGmail, Fault, GmailConfig, QuotaAnswer};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn start(config: GmailConfig) -> FakeGmail {
    FakeGmail::start(config).await.expect("fake starts")
}

async fn token_request(fake: &FakeGmail, secret: &str, refresh_token: &str) -> reqwest::Response {
    let config = fake.config();
    let form = [
        ("client_id", config.client_id.as_str()),
        ("client_secret", secret),
        ("refresh_token", refresh_token),
        ("grant_type", "refresh_token"),
    ];
    Client::new()
        .post(fake.token_url())
        .form(&form)
        .send()
        .await
        .expect("token request")
}

async fn access_token(fake: &FakeGmail) -> String {
    let config = fake.config().clone();
    let answer = token_request(fake, &config.client_secret, &config.refresh_token).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    body["access_token"].as_str().expect("token").to_owned()
}

fn message(fake: &FakeGmail, message_id: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "From: Office <{}>\r\nTo: customer@example.net\r\nSubject: Your quote\r\nMessage-ID: <{message_id}>\r\n{extra_headers}\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        fake.config().sender
    )
}

fn raw(message: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(message)
}

async fn send(fake: &FakeGmail, token: &str, body: Value) -> reqwest::Response {
    Client::new()
        .post(format!("{}/gmail/v1/users/me/messages/send", fake.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("send")
}

async fn error_reason(answer: reqwest::Response) -> String {
    let body: Value = answer.json().await.expect("json");
    body["error"]["errors"][0]["reason"]
        .as_str()
        .expect("reason")
        .to_owned()
}

#[tokio::test]
async fn token_endpoint_checks_client_and_refresh_token() {
    let fake = start(GmailConfig::default()).await;
    access_token(&fake).await;
    let config = fake.config().clone();
    let wrong_client = token_request(&fake, "wrong", &config.refresh_token).await;
    assert_eq!(wrong_client.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong_client.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );
    let unknown = token_request(&fake, &config.client_secret, "unknown").await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    fake.revoke();
    let revoked = token_request(&fake, &config.client_secret, &config.refresh_token).await;
    assert_eq!(revoked.status(), StatusCode::BAD_REQUEST);
    let body: Value = revoked.json().await.expect("json");
    assert_eq!(
        body,
        json!({ "error": "invalid_grant", "error_description": "Token has been expired or revoked." })
    );
    assert_eq!(fake.token_requests(), 4);
}

#[tokio::test]
async fn expired_or_unknown_tokens_get_401_auth_error() {
    let fake = start(GmailConfig::default()).await;
    let token = access_token(&fake).await;
    let body = json!({ "raw": raw(&message(&fake, "a@commcenter", "", "hi")) });
    let unknown = send(&fake, "nope", body.clone()).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(unknown).await, "authError");
    fake.expire_tokens();
    let expired = send(&fake, &token, body).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(fake.sent().is_empty());
}

#[tokio::test]
async fn a_simple_send_is_parsed_recorded_and_found_by_message_id() {
    let fake = start(GmailConfig::default()).await;
    let token = access_token(&fake).await;
    // Padded base64url is taken too.
    let padded = base64::engine::general_purpose::URL_SAFE.encode(message(
        &fake,
        "q-1@commcenter",
        "",
        "Quote attached",
    ));
    let answer = send(&fake, &token, json!({ "raw": padded })).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let reply: Value = answer.json().await.expect("json");
    assert_eq!(reply["labelIds"], json!(["SENT"]));
    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].id, reply["id"].as_str().expect("id"));
    assert_eq!(sent[0].message_id, "q-1@commcenter");
    assert_eq!(sent[0].from, fake.config().sender);
    assert_eq!(sent[0].to, vec!["customer@example.net".to_owned()]);
    assert_eq!(sent[0].subject, "Your quote");

    let search = |id: &str| {
        let url = format!("{}/gmail/v1/users/me/messages", fake.url());
        let token = token.clone();
        let q = format!("rfc822msgid:{id}");
        async move {
            Client::new()
                .get(url)
                .bearer_auth(token)
                .query(&[("q", q)])
                .send()
                .await
                .expect("list")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let found = search("<q-1@commcenter>").await;
    assert_eq!(found["messages"][0]["id"], reply["id"]);
    assert_eq!(found["resultSizeEstimate"], 1);
    assert_eq!(
        search("other@commcenter").await,
        json!({ "resultSizeEstimate": 0 })
    );

    let metadata: Value = Client::new()
        .get(format!(
            "{}/gmail/v1/users/me/messages/{}",
            fake.url(),
            sent[0].id
        ))
        .bearer_auth(&token)
        .query(&[("format", "metadata"), ("metadataHeaders", "Message-ID")])
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["labelIds"], json!(["SENT"]));
    assert_eq!(
        metadata["payload"]["headers"],
        json!([{ "name": "Message-ID", "value": "<q-1@commcenter>" }])
    );
}

#[tokio::test]
async fn messages_without_required_headers_or_with_bad_raw_are_refused() {
    let fake = start(GmailConfig::default()).await;
    let token = access_token(&fake).await;
    let sender = fake.config().sender.clone();
    let cases = [
        json!({ "raw": "***not base64***" }),
        json!({ "notRaw": true }),
        json!({ "raw": raw(&format!("From: {sender}\r\nTo: a@example.net\r\nMessage-ID: <x@y>\r\n\r\nno subject")) }),
        json!({ "raw": raw(&format!("From: {sender}\r\nTo: a@example.net\r\nSubject: s\r\n\r\nno id")) }),
        json!({ "raw": raw(&format!("From: {sender}\r\nSubject: s\r\nMessage-ID: <x@y>\r\n\r\nno to")) }),
        json!({ "raw": raw("From: someone@else.com\r\nTo: a@example.net\r\nSubject: s\r\nMessage-ID: <x@y>\r\n\r\nforeign") }),
    ];
    for body in cases {
        let answer = send(&fake, &token, body.clone()).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_reason(answer).await, "invalidArgument", "{body}");
    }
    let other_user = Client::new()
        .post(format!(
            "{}/gmail/v1/users/boss@example.com/messages/send",
            fake.url()
        ))
        .bearer_auth(&token)
        .json(&json!({ "raw": raw(&message(&fake, "u@c", "", "x")) }))
        .send()
        .await
        .expect("send");
    assert_eq!(other_user.status(), StatusCode::FORBIDDEN);
    assert!(fake.sent().is_empty());
}

#[tokio::test]
async fn the_simple_endpoint_stops_at_5_mib_and_uploads_at_35_mib() {
    let fake = start(GmailConfig::default()).await;
    let token = access_token(&fake).await;
    let big = message(&fake, "big@c", "", &"x".repeat(4 * 1024 * 1024));
    let too_big = send(&fake, &token, json!({ "raw": raw(&big) })).await;
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let upload_url = format!("{}/upload/gmail/v1/users/me/messages/send", fake.url());
    let media = Client::new()
        .post(format!("{upload_url}?uploadType=media"))
        .bearer_auth(&token)
        .header("content-type", "message/rfc822")
        .body(big.clone())
        .send()
        .await
        .expect("media upload");
    assert_eq!(media.status(), StatusCode::OK);
    assert_eq!(fake.sent()[0].raw.len(), big.len());

    let huge = message(&fake, "huge@c", "", &"x".repeat(36_700_160));
    let refused = Client::new()
        .post(format!("{upload_url}?uploadType=media"))
        .bearer_auth(&token)
        .header("content-type", "message/rfc822")
        .body(huge)
        .send()
        .await
        .expect("media upload");
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let attachment_message = format!(
        "From: {}\r\nTo: c@example.net\r\nSubject: Photos\r\nMessage-ID: <multi@c>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\nSee attached\r\n\
         --inner\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=\"roof.png\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--inner--\r\n",
        fake.config().sender,
        base64::engine::general_purpose::STANDARD.encode([7u8; 300])
    );
    let related = format!(
        "--outer\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{{}}\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\n{attachment_message}\r\n--outer--\r\n"
    );
    let multipart = Client::new()
        .post(format!("{upload_url}?uploadType=multipart"))
        .bearer_auth(&token)
        .header("content-type", "multipart/related; boundary=outer")
        .body(related)
        .send()
        .await
        .expect("multipart upload");
    assert_eq!(multipart.status(), StatusCode::OK);
    let sent = fake.sent();
    assert_eq!(sent[1].attachments.len(), 1);
    assert_eq!(sent[1].attachments[0].name.as_deref(), Some("roof.png"));
    assert_eq!(sent[1].attachments[0].size, 300);
    let wrong_type = Client::new()
        .post(format!("{upload_url}?uploadType=media"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(message(&fake, "t@c", "", "x"))
        .send()
        .await
        .expect("upload");
    assert_eq!(wrong_type.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn replies_join_the_thread_only_as_gmail_allows() {
    let fake = start(GmailConfig::default()).await;
    let token = access_token(&fake).await;
    let first: Value = send(
        &fake,
        &token,
        json!({ "raw": raw(&message(&fake, "m1@c", "", "first")) }),
    )
    .await
    .json()
    .await
    .expect("json");
    let thread = first["threadId"].as_str().expect("thread").to_owned();
    let reply_headers = "In-Reply-To: <m1@c>\r\nReferences: <m1@c>\r\n";
    let reply: Value = send(
        &fake,
        &token,
        json!({ "raw": raw(&message(&fake, "m2@c", reply_headers, "reply")), "threadId": thread }),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(reply["threadId"], thread.as_str());
    assert_eq!(fake.sent()[1].in_reply_to.as_deref(), Some("m1@c"));
    assert_eq!(fake.sent()[1].references, vec!["m1@c".to_owned()]);
    let unthreaded: Value = send(
        &fake,
        &token,
        json!({ "raw": raw(&message(&fake, "m3@c", "", "no headers")), "threadId": thread }),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_ne!(
        unthreaded["threadId"],
        thread.as_str(),
        "without References the message starts a new thread"
    );
    let unknown = send(
        &fake,
        &token,
        json!({ "raw": raw(&message(&fake, "m4@c", "", "x")), "threadId": "0000dead" }),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn quota_runs_out_per_minute_and_the_daily_limit_is_scriptable() {
    let fake = start(GmailConfig {
        quota_units_per_minute: 200,
        ..Default::default()
    })
    .await;
    let token = access_token(&fake).await;
    for index in 0..2 {
        let answer = send(
            &fake,
            &token,
            json!({ "raw": raw(&message(&fake, &format!("q{index}@c"), "", "x")) }),
        )
        .await;
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let limited = send(
        &fake,
        &token,
        json!({ "raw": raw(&message(&fake, "q2@c", "", "x")) }),
    )
    .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_reason(limited).await, "rateLimitExceeded");
    fake.set_quota_answer(QuotaAnswer::Forbidden);
    let forbidden = send(
        &fake,
        &token,
        json!({ "raw": raw(&message(&fake, "q3@c", "", "x")) }),
    )
    .await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_reason(forbidden).await, "userRateLimitExceeded");

    let fresh = start(GmailConfig::default()).await;
    let token = access_token(&fresh).await;
    fresh.mark_daily_limit(true);
    let daily = send(
        &fresh,
        &token,
        json!({ "raw": raw(&message(&fresh, "d@c", "", "x")) }),
    )
    .await;
    assert_eq!(daily.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_reason(daily).await, "dailyLimitExceeded");
    fresh.mark_daily_limit(false);
    assert_eq!(
        send(
            &fresh,
            &token,
            json!({ "raw": raw(&message(&fresh, "d@c", "", "x")) })
        )
        .await
        .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn faults_on_send_and_token_including_drop_after_accepting() {
    let fake = start(GmailConfig::default()).await;
    let token = access_token(&fake).await;
    fake.fail_next(Endpoint::Send, Fault::ServerError(500), 1);
    fake.fail_next(
        Endpoint::Send,
        Fault::RateLimited {
            retry_after: Some(3),
        },
        1,
    );
    fake.fail_next(Endpoint::Send, Fault::ExpiredToken, 1);
    let body = json!({ "raw": raw(&message(&fake, "f@c", "", "x")) });
    assert_eq!(
        send(&fake, &token, body.clone()).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let limited = send(&fake, &token, body.clone()).await;
    assert_eq!(limited.headers()["retry-after"], "3");
    assert_eq!(error_reason(limited).await, "rateLimitExceeded");
    assert_eq!(
        error_reason(send(&fake, &token, body.clone()).await).await,
        "authError"
    );
    assert!(fake.sent().is_empty());

    fake.fail_next(Endpoint::Send, Fault::AcceptThenDrop, 1);
    let dropped = Client::new()
        .post(format!("{}/gmail/v1/users/me/messages/send", fake.url()))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await;
    assert!(dropped.is_err());
    assert_eq!(
        fake.sent().len(),
        1,
        "the message went out although no answer came"
    );

    fake.fail_next(
        Endpoint::Search,
        Fault::Stall(Duration::from_millis(500)),
        1,
    );
    let impatient = Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let stalled = impatient
        .get(format!(
            "{}/gmail/v1/users/me/messages?q=rfc822msgid:f@c",
            fake.url()
        ))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(stalled.expect_err("times out").is_timeout());

    fake.fail_next(Endpoint::Token, Fault::InvalidGrant, 1);
    let config = fake.config().clone();
    let refused = token_request(&fake, &config.client_secret, &config.refresh_token).await;
    assert_eq!(
        refused.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    assert!(
        !access_token(&fake).await.is_empty(),
        "the fault was used up"
    );
}

#[tokio::test]
async fn control_api_scripts_faults_and_lists_what_was_sent() {
    let fake = start(GmailConfig::default()).await;
    let control = Client::new();
    let scripted = control
        .post(format!("{}/_fake/faults", fake.url()))
        .json(&json!({ "endpoint": "send", "fault": { "kind": "server_error", "status": 503 }, "times": 1 }))
        .send()
        .await
        .expect("control");
    assert_eq!(scripted.status(), StatusCode::NO_CONTENT);
    let token = access_token(&fake).await;
    let body = json!({ "raw": raw(&message(&fake, "c@c", "", "x")) });
    assert_eq!(
        send(&fake, &token, body.clone()).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(send(&fake, &token, body).await.status(), StatusCode::OK);
    let sent: Value = control
        .get(format!("{}/_fake/sent", fake.url()))
        .send()
        .await
        .expect("control")
        .json()
        .await
        .expect("json");
    assert_eq!(sent[0]["messageId"], "c@c");
    let requests: Value = control
        .get(format!("{}/_fake/requests", fake.url()))
        .send()
        .await
        .expect("control")
        .json()
        .await
        .expect("json");
    assert_eq!(
        requests.as_array().expect("requests").len(),
        3,
        "control calls are not recorded"
    );
}
