//! The fake RingCentral against a real HTTP client: auth, sending, limits, faults,
//! message store, call log and webhooks.

use std::time::Duration;

use commcenter_fakes::{
    Endpoint, FakeRingCentral, Fault, RateLimit, RateLimits, RingCentralConfig,
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const TOKEN_PATH: &str = "/restapi/oauth/token";
const SMS_PATH: &str = "/restapi/v1.0/account/~/extension/~/sms";
const MMS_PATH: &str = "/restapi/v1.0/account/~/extension/~/mms";
const STORE_PATH: &str = "/restapi/v1.0/account/~/extension/~/message-store";
const CALL_LOG_PATH: &str = "/restapi/v1.0/account/~/extension/~/call-log";
const TO: &str = "+14155550100";

async fn start(config: RingCentralConfig) -> FakeRingCentral {
    FakeRingCentral::start(config).await.expect("fake starts")
}

async fn token_request(
    fake: &FakeRingCentral,
    user: &str,
    password: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    Client::new()
        .post(format!("{}{TOKEN_PATH}", fake.url()))
        .basic_auth(user, Some(password))
        .form(form)
        .send()
        .await
        .expect("token request")
}

async fn jwt_grant(fake: &FakeRingCentral) -> Value {
    let config = fake.config().clone();
    let answer = token_request(
        fake,
        &config.client_id,
        &config.client_secret,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &config.jwt),
        ],
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    answer.json().await.expect("json")
}

async fn access_token(fake: &FakeRingCentral) -> String {
    jwt_grant(fake).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

async fn send_sms(fake: &FakeRingCentral, token: &str, body: Value) -> reqwest::Response {
    Client::new()
        .post(format!("{}{SMS_PATH}", fake.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("send")
}

fn sms(fake: &FakeRingCentral, to: &str, text: &str) -> Value {
    json!({ "from": { "phoneNumber": fake.config().from_number }, "to": [{ "phoneNumber": to }], "text": text })
}

async fn get(fake: &FakeRingCentral, token: &str, path_and_query: &str) -> reqwest::Response {
    Client::new()
        .get(format!("{}{path_and_query}", fake.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
}

#[tokio::test]
async fn jwt_grant_answers_a_token_and_refresh_tokens_are_single_use() {
    let fake = start(RingCentralConfig::default()).await;
    let grant = jwt_grant(&fake).await;
    assert_eq!(grant["token_type"], "bearer");
    assert_eq!(grant["expires_in"], 3600);
    assert!(grant["scope"].as_str().expect("scope").contains("SMS"));
    let refresh = grant["refresh_token"].as_str().expect("refresh token");
    let config = fake.config().clone();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    let first = token_request(&fake, &config.client_id, &config.client_secret, &form).await;
    assert_eq!(first.status(), StatusCode::OK);
    let again = token_request(&fake, &config.client_id, &config.client_secret, &form).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["errors"][0]["errorCode"]
            .as_str()
            .expect("code")
            .starts_with("OAU-")
    );
    assert_eq!(fake.token_requests(), 3);
}

#[tokio::test]
async fn wrong_client_credentials_and_wrong_jwt_are_refused() {
    let fake = start(RingCentralConfig::default()).await;
    let config = fake.config().clone();
    let jwt = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", config.jwt.as_str()),
    ];
    let wrong_client = token_request(&fake, &config.client_id, "wrong", &jwt).await;
    assert_eq!(wrong_client.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong_client.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );
    let wrong_jwt = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", "forged"),
    ];
    let answer = token_request(&fake, &config.client_id, &config.client_secret, &wrong_jwt).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    fake.revoke();
    let revoked = token_request(&fake, &config.client_id, &config.client_secret, &jwt).await;
    assert_eq!(revoked.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn api_calls_need_a_valid_unexpired_bearer_token() {
    let fake = start(RingCentralConfig::default()).await;
    let token = access_token(&fake).await;
    assert_eq!(
        get(&fake, "made-up", STORE_PATH).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let anonymous = Client::new()
        .get(format!("{}{STORE_PATH}", fake.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&fake, &token, STORE_PATH).await.status(),
        StatusCode::OK
    );
    fake.expire_tokens();
    let expired = get(&fake, &token, STORE_PATH).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    let body: Value = expired.json().await.expect("json");
    assert_eq!(body["errorCode"], "TokenInvalid");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("expired")
    );
}

#[tokio::test]
async fn an_accepted_sms_is_a_queued_message_store_record() {
    let fake = start(RingCentralConfig::default()).await;
    let token = access_token(&fake).await;
    let answer = send_sms(&fake, &token, sms(&fake, TO, "Your crew arrives at 9")).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let record: Value = answer.json().await.expect("json");
    assert_eq!(record["messageStatus"], "Queued");
    assert_eq!(record["direction"], "Outbound");
    assert_eq!(record["type"], "SMS");
    assert_eq!(record["to"][0]["phoneNumber"], TO);
    assert_eq!(record["subject"], "Your crew arrives at 9");
    assert!(record["id"].is_u64() && record["conversationId"].is_u64());
    assert_eq!(fake.sent(), vec![record.clone()]);
    let id = record["id"].as_u64().expect("id");
    assert!(fake.set_status(id, "Delivered"));
    assert!(!fake.set_status(id, "Teleported"));
    let fetched: Value = get(&fake, &token, &format!("{STORE_PATH}/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(fetched["messageStatus"], "Delivered");
    let missing = get(&fake, &token, &format!("{STORE_PATH}/42")).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json::<Value>().await.expect("json")["errorCode"],
        "CMN-102"
    );
}

#[tokio::test]
async fn invalid_sms_requests_are_refused_naming_the_parameter() {
    let fake = start(RingCentralConfig {
        no_sms_numbers: vec!["+14155550199".to_owned()],
        ..Default::default()
    })
    .await;
    let token = access_token(&fake).await;
    let long = "x".repeat(1001);
    let cases = [
        (
            json!({ "from": { "phoneNumber": "+19995550100" }, "to": [{ "phoneNumber": TO }], "text": "hi" }),
            "from.phoneNumber",
        ),
        (sms(&fake, "4155550100", "hi"), "to.phoneNumber"),
        (
            json!({ "from": { "phoneNumber": fake.config().from_number }, "to": [], "text": "hi" }),
            "to",
        ),
        (
            json!({ "from": { "phoneNumber": fake.config().from_number }, "to": [{ "phoneNumber": TO }] }),
            "text",
        ),
        (sms(&fake, TO, &long), "text"),
        (sms(&fake, "+14155550199", "hi"), "to.phoneNumber"),
    ];
    for (body, parameter) in cases {
        let answer = send_sms(&fake, &token, body.clone()).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = answer.json().await.expect("json");
        assert_eq!(error["errors"][0]["parameterName"], parameter, "{body}");
        assert!(error["errorCode"].is_string() && error["message"].is_string());
    }
    let not_capable = send_sms(&fake, &token, sms(&fake, "+14155550199", "hi")).await;
    assert_eq!(
        not_capable.json::<Value>().await.expect("json")["errorCode"],
        commcenter_fakes::ringcentral::NOT_SMS_CAPABLE
    );
    let exactly_1000 = send_sms(&fake, &token, sms(&fake, TO, &"é".repeat(1000))).await;
    assert_eq!(
        exactly_1000.status(),
        StatusCode::OK,
        "the limit counts characters, not bytes"
    );
    assert_eq!(fake.sent().len(), 1);
}

fn mms_body(json_part: &Value, files: &[(&str, &str, usize)]) -> Vec<u8> {
    let mut body =
        format!("--BOUNDARY\r\nContent-Type: application/json\r\n\r\n{json_part}\r\n").into_bytes();
    for (name, content_type, size) in files {
        body.extend(
            format!("--BOUNDARY\r\nContent-Type: {content_type}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend(std::iter::repeat_n(b'a', *size));
        body.extend(b"\r\n");
    }
    body.extend(b"--BOUNDARY--\r\n");
    body
}

async fn send_mms(fake: &FakeRingCentral, token: &str, body: Vec<u8>) -> reqwest::Response {
    Client::new()
        .post(format!("{}{MMS_PATH}", fake.url()))
        .bearer_auth(token)
        .header("content-type", "multipart/mixed; boundary=BOUNDARY")
        .body(body)
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn mms_records_attachments_and_enforces_count_size_and_type() {
    let fake = start(RingCentralConfig::default()).await;
    let token = access_token(&fake).await;
    let request = sms(&fake, TO, "Photo of the job");
    let answer = send_mms(
        &fake,
        &token,
        mms_body(&request, &[("roof.jpg", "image/jpeg", 2048)]),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let record: Value = answer.json().await.expect("json");
    let attachment = &record["attachments"][1];
    assert_eq!(attachment["type"], "MmsAttachment");
    assert_eq!(attachment["fileName"], "roof.jpg");
    assert_eq!(attachment["contentType"], "image/jpeg");
    assert_eq!(attachment["size"], 2048);

    let eleven = vec![("a.png", "image/png", 10); 11];
    assert_eq!(
        send_mms(&fake, &token, mms_body(&request, &eleven))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let too_big = [
        ("a.png", "image/png", 800_000),
        ("b.png", "image/png", 700_001),
    ];
    assert_eq!(
        send_mms(&fake, &token, mms_body(&request, &too_big))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let just_fits = [
        ("a.png", "image/png", 800_000),
        ("b.png", "image/png", 700_000),
    ];
    assert_eq!(
        send_mms(&fake, &token, mms_body(&request, &just_fits))
            .await
            .status(),
        StatusCode::OK
    );
    let exe = [("run.exe", "application/x-msdownload", 10)];
    let refused = send_mms(&fake, &token, mms_body(&request, &exe)).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.json::<Value>().await.expect("json")["errors"][0]["parameterName"],
        "attachments"
    );
    assert_eq!(fake.sent().len(), 2);
}

#[tokio::test]
async fn rate_limit_headers_count_down_and_the_limit_answers_429_with_retry_after() {
    let limits = RateLimits {
        medium: RateLimit::per_minute(2),
        ..RateLimits::default()
    };
    let fake = start(RingCentralConfig {
        rate_limits: limits,
        ..Default::default()
    })
    .await;
    let token = access_token(&fake).await;
    let first = send_sms(&fake, &token, sms(&fake, TO, "1")).await;
    assert_eq!(first.headers()["x-rate-limit-group"], "Medium");
    assert_eq!(first.headers()["x-rate-limit-limit"], "2");
    assert_eq!(first.headers()["x-rate-limit-remaining"], "1");
    assert_eq!(first.headers()["x-rate-limit-window"], "60");
    assert_eq!(
        send_sms(&fake, &token, sms(&fake, TO, "2")).await.status(),
        StatusCode::OK
    );
    let limited = send_sms(&fake, &token, sms(&fake, TO, "3")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after));
    assert_eq!(
        limited.json::<Value>().await.expect("json")["errorCode"],
        "CMN-301"
    );
    assert_eq!(fake.sent().len(), 2);
    // Light is counted apart.
    assert_eq!(
        get(&fake, &token, STORE_PATH).await.headers()["x-rate-limit-group"],
        "Light"
    );
}

#[tokio::test]
async fn scripted_faults_answer_instead_of_the_endpoint_then_run_out() {
    let fake = start(RingCentralConfig::default()).await;
    let token = access_token(&fake).await;
    fake.fail_next(
        Endpoint::Send,
        Fault::RateLimited {
            retry_after: Some(7),
        },
        1,
    );
    fake.fail_next(Endpoint::Send, Fault::ServerError(503), 1);
    fake.fail_next(Endpoint::Send, Fault::ExpiredToken, 1);
    fake.fail_next(
        Endpoint::Send,
        Fault::Status {
            status: 418,
            body: json!({ "teapot": true }),
            retry_after: None,
        },
        1,
    );
    let limited = send_sms(&fake, &token, sms(&fake, TO, "a")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "7");
    assert_eq!(
        send_sms(&fake, &token, sms(&fake, TO, "a")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send_sms(&fake, &token, sms(&fake, TO, "a")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let teapot = send_sms(&fake, &token, sms(&fake, TO, "a")).await;
    assert_eq!(teapot.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(
        teapot.json::<Value>().await.expect("json"),
        json!({ "teapot": true })
    );
    assert!(fake.sent().is_empty(), "failed sends have no effect");
    assert_eq!(
        send_sms(&fake, &token, sms(&fake, TO, "a")).await.status(),
        StatusCode::OK
    );

    fake.fail_next(Endpoint::Token, Fault::InvalidGrant, 1);
    let config = fake.config().clone();
    let jwt = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", config.jwt.as_str()),
    ];
    let refused = token_request(&fake, &config.client_id, &config.client_secret, &jwt).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    let statuses: Vec<Option<u16>> = fake
        .requests()
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(
        statuses[1..6],
        [Some(429), Some(503), Some(401), Some(418), Some(200)]
    );
}

#[tokio::test]
async fn a_stall_outlasts_the_client_timeout_and_the_message_is_still_sent() {
    let fake = start(RingCentralConfig::default()).await;
    let token = access_token(&fake).await;
    fake.fail_next(Endpoint::Send, Fault::Stall(Duration::from_millis(600)), 1);
    let client = Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .expect("client");
    let outcome = client
        .post(format!("{}{SMS_PATH}", fake.url()))
        .bearer_auth(&token)
        .json(&sms(&fake, TO, "slow"))
        .send()
        .await;
    assert!(outcome.expect_err("times out").is_timeout());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(fake.sent().len(), 1);
}

#[tokio::test]
async fn accept_then_drop_records_the_message_and_closes_the_connection_unanswered() {
    let fake = start(RingCentralConfig::default()).await;
    let token = access_token(&fake).await;
    fake.fail_next(Endpoint::Send, Fault::AcceptThenDrop, 1);
    let outcome = send_sms_result(&fake, &token).await;
    let error = outcome.expect_err("no answer");
    assert!(!error.is_timeout() && error.status().is_none(), "{error:?}");
    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    let request = fake.requests().into_iter().last().expect("recorded");
    assert_eq!(request.status, None);
    // The client can reconcile: the message is in the store, found by number and text.
    let since = "2000-01-01T00:00:00Z";
    let list: Value = get(&fake, &token, &format!("{STORE_PATH}?messageType=SMS&direction=Outbound&dateFrom={since}&phoneNumber=%2B14155550100"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(list["records"][0]["id"], sent[0]["id"]);
}

async fn send_sms_result(
    fake: &FakeRingCentral,
    token: &str,
) -> reqwest::Result<reqwest::Response> {
    Client::new()
        .post(format!("{}{SMS_PATH}", fake.url()))
        .bearer_auth(token)
        .json(&sms(fake, TO, "lost answer"))
        .send()
        .await
}

#[tokio::test]
async fn message_store_list_filters_by_direction_number_and_date() {
    let fake = start(RingCentralConfig::default()).await;
    let token = access_token(&fake).await;
    send_sms(&fake, &token, sms(&fake, TO, "one")).await;
    send_sms(&fake, &token, sms(&fake, "+14155550111", "two")).await;
    fake.inbound_sms(TO, "reply").await;
    let list = |query: String| {
        let fake = &fake;
        let token = &token;
        async move {
            get(fake, token, &format!("{STORE_PATH}?{query}"))
                .await
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let outbound_to = list(format!(
        "direction=Outbound&phoneNumber={}",
        "%2B14155550100"
    ))
    .await;
    assert_eq!(outbound_to["records"].as_array().expect("records").len(), 1);
    assert_eq!(outbound_to["records"][0]["subject"], "one");
    let all = list("messageType=SMS".to_owned()).await;
    assert_eq!(all["records"].as_array().expect("records").len(), 3);
    assert_eq!(
        all["records"][0]["messageStatus"], "Received",
        "newest first"
    );
    let future = list("dateFrom=2999-01-01T00:00:00Z&dateTo=2999-01-02T00:00:00Z".to_owned()).await;
    assert!(future["records"].as_array().expect("records").is_empty());
    assert_eq!(
        get(&fake, &token, &format!("{STORE_PATH}?dateFrom=yesterday"))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn call_log_pages_through_seeded_calls() {
    let fake = start(RingCentralConfig::default()).await;
    let token = access_token(&fake).await;
    for minute in 0..5 {
        fake.add_call(json!({
            "startTime": format!("2025-03-01T10:0{minute}:00.000Z"), "duration": 60, "type": "Voice",
            "direction": "Inbound", "action": "Phone Call", "result": "Accepted",
            "from": { "phoneNumber": TO }, "to": { "phoneNumber": fake.config().from_number },
        }));
    }
    let window = "dateFrom=2025-03-01T00:00:00Z&dateTo=2025-03-02T00:00:00Z";
    let first = get(
        &fake,
        &token,
        &format!("{CALL_LOG_PATH}?{window}&perPage=2&page=1"),
    )
    .await;
    assert_eq!(first.headers()["x-rate-limit-group"], "Heavy");
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["records"].as_array().expect("records").len(), 2);
    assert_eq!(first["records"][0]["startTime"], "2025-03-01T10:04:00.000Z");
    assert_eq!(first["paging"]["pageStart"], 0);
    assert_eq!(first["paging"]["pageEnd"], 1);
    let next = first["navigation"]["nextPage"]["uri"]
        .as_str()
        .expect("next page");
    let last: Value = Client::new()
        .get(next)
        .bearer_auth(&token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(last["paging"]["page"], 2);
    let third: Value = get(
        &fake,
        &token,
        &format!("{CALL_LOG_PATH}?{window}&perPage=2&page=3"),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(third["records"].as_array().expect("records").len(), 1);
    assert!(third["navigation"].get("nextPage").is_none());
    assert!(third["records"][0]["id"].is_string());
}

/// A webhook that echoes (or not) the Validation-Token and keeps what it is sent.
async fn webhook(
    echo: bool,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(Option<String>, Value)>,
) {
    use axum::http::HeaderMap;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sender = sender.clone();
            async move {
                let mut answer = HeaderMap::new();
                if let Some(token) = headers.get("validation-token") {
                    if echo {
                        answer.insert("validation-token", token.clone());
                    }
                } else {
                    let token = headers
                        .get("verification-token")
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_owned);
                    let _ =
                        sender.send((token, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                }
                answer
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

async fn subscribe(fake: &FakeRingCentral, token: &str, address: &str) -> reqwest::Response {
    let body = json!({
        "eventFilters": ["/restapi/v1.0/account/~/extension/~/message-store", "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS"],
        "deliveryMode": { "transportType": "WebHook", "address": address, "verificationToken": "secret-vt" },
    });
    Client::new()
        .post(format!("{}/restapi/v1.0/subscription", fake.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("subscribe")
}

#[tokio::test]
async fn subscription_handshake_and_inbound_sms_notifications() {
    let fake = start(RingCentralConfig::default()).await;
    let token = access_token(&fake).await;
    let (silent, _) = webhook(false).await;
    let refused = subscribe(&fake, &token, &silent).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(fake.subscriptions().is_empty());

    let (address, mut received) = webhook(true).await;
    let created = subscribe(&fake, &token, &address).await;
    assert_eq!(created.status(), StatusCode::OK);
    let record: Value = created.json().await.expect("json");
    assert_eq!(record["status"], "Active");
    let id = fake.inbound_sms(TO, "Running late?").await;
    let mut events = Vec::new();
    for _ in 0..2 {
        events.push(received.recv().await.expect("notification"));
    }
    assert!(
        events
            .iter()
            .all(|(token, event)| token.as_deref() == Some("secret-vt")
                && event["subscriptionId"] == record["id"])
    );
    let changes = events
        .iter()
        .find(|(_, event)| event["body"].get("changes").is_some())
        .expect("message-store event");
    assert_eq!(
        changes.1["body"]["changes"][0]["newMessageIds"],
        json!([id])
    );
    let instant = events
        .iter()
        .find(|(_, event)| event["body"].get("messageStatus").is_some())
        .expect("instant event");
    assert_eq!(instant.1["body"]["messageStatus"], "Received");
    assert_eq!(instant.1["body"]["subject"], "Running late?");
    assert!(
        instant.1["event"]
            .as_str()
            .expect("event")
            .contains("/message-store/instant")
    );
}
