//! The provider endpoints: SMS and MMS, email, logged calls and RingCentral's webhook.
//! Workers are not started, so no provider is called: each test checks what the api
//! recorded (communication, job, contact) and what it refused, leaving nothing behind.

use std::io::Cursor;

use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, TestOptions, spawn_app_with};
use image::{ImageFormat, Rgb, RgbImage};
use reqwest::{
    StatusCode,
    multipart::{Form, Part},
};
use serde_json::{Value, json};

const SMS: &str = "/api/integrations/ringcentral/sms";
const EMAIL: &str = "/api/integrations/gmail/send";
const CALL_LOG: &str = "/api/integrations/ringcentral/call-log";
const WEBHOOK: &str = "/api/integrations/ringcentral/webhook";

async fn app_with(providers_configured: bool) -> TestApp {
    spawn_app_with(TestOptions {
        start_workers: false,
        providers_configured,
        ..Default::default()
    })
    .await
}

async fn app() -> TestApp {
    app_with(true).await
}

fn png() -> Vec<u8> {
    let image = RgbImage::from_fn(8, 8, |x, y| Rgb([x as u8 * 30, y as u8 * 30, 90]));
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

/// An MP4 as the upload sniffs it (an `ftyp` box), padded to `size` bytes.
fn mp4(size: usize) -> Vec<u8> {
    let mut bytes = 24u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(b"ftypisom\0\0\x02\0isommp42");
    bytes.resize(size, 0);
    bytes
}

/// Uploads one file for `customer`; returns its id.
async fn upload(app: &TestApp, customer: &str, bytes: Vec<u8>, name: &str) -> String {
    let form = Form::new()
        .text("customer_id", customer.to_owned())
        .part("file", Part::bytes(bytes).file_name(name.to_owned()));
    let response = app
        .client
        .post(app.url("/api/communications/upload"))
        .bearer_auth(app.staff_token())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{name} is uploaded");
    let body: Value = response.json().await.unwrap();
    body["files"][0]["file_id"].as_str().unwrap().to_owned()
}

/// Asserts the status and that the error names `field`; returns the message.
async fn refused(response: reqwest::Response, status: u16, field: &str) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(field),
        "the error names {field:?}: {message}"
    );
    message
}

async fn communication(app: &TestApp, id: &str) -> Value {
    sqlx::query_scalar::<_, sqlx::types::Json<Value>>(
        "SELECT to_jsonb(c) FROM communications c WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
    .0
}

#[derive(sqlx::FromRow)]
struct Job {
    kind: String,
    payload: sqlx::types::Json<Value>,
    state: String,
    customer_id: Option<String>,
}

/// The communication's one job, as (kind, payload), checked to be on its way.
async fn job_of(app: &TestApp, communication_id: &str) -> (String, Value) {
    let jobs: Vec<Job> = sqlx::query_as(
        "SELECT kind, payload, state, customer_id FROM jobs WHERE communication_id = $1::uuid",
    )
    .bind(communication_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(jobs.len(), 1, "one job per communication");
    let job = jobs.into_iter().next().unwrap();
    assert!(
        ["pending", "queued"].contains(&job.state.as_str()),
        "{}",
        job.state
    );
    assert!(job.customer_id.is_some());
    (job.kind, job.payload.0)
}

async fn contacts(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT kind, address, customer_id FROM customer_contacts ORDER BY kind, address",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Rows a refused request must not have left: communications, jobs, contacts, receipts,
/// conversations and idempotency keys.
async fn written(app: &TestApp) -> [i64; 6] {
    [
        app.count("communications").await,
        app.count("jobs").await,
        app.count("customer_contacts").await,
        app.count("webhook_receipts").await,
        app.count("conversations").await,
        app.count("idempotency_keys").await,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_and_an_mms_are_recorded_with_their_job_and_contact() {
    let app = app().await;
    let staff = app.staff_token();
    let response = app
        .post_json(
            SMS,
            &staff,
            &json!({ "customer_id": "cust-1", "to": "(650) 555-0101", "message": "On our way" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["remote_address"], "+16505550101");
    let id = body["id"].as_str().unwrap();
    let row = communication(&app, id).await;
    assert_eq!(row["type"], "sms");
    assert_eq!(row["direction"], "outbound");
    assert_eq!(row["message"], "On our way");
    assert_eq!(row["remote_address"], "+16505550101");
    assert_eq!(row["local_address"], "+16505550100");
    assert_eq!(row["sender_id"], "staff-1");
    assert_eq!(row["attachments"], json!([]));
    let (kind, payload) = job_of(&app, id).await;
    assert_eq!(kind, "sms.send");
    assert_eq!(payload, json!({ "communication_id": id }));
    assert!(body["job_id"].is_string());
    assert_eq!(
        contacts(&app).await,
        [("phone".into(), "+16505550101".into(), "cust-1".into())]
    );

    // An MMS: pictures alone need no text, and an image is taken at any size (the
    // worker recompresses it); a small video goes as it is.
    let mut big_picture = png();
    big_picture.resize(3_000_000, 0);
    let picture = upload(&app, "cust-1", big_picture, "roof.png").await;
    let clip = upload(&app, "cust-1", mp4(400_000), "clip.mp4").await;
    let response = app
        .post_json(
            SMS,
            &staff,
            &json!({ "customer_id": "cust-1", "to": "+1 650 555 0102", "message": "",
                     "attachments": [picture, clip] }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let row = communication(&app, body["id"].as_str().unwrap()).await;
    assert_eq!(row["message"], "");
    let attached: Vec<&str> = row["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["file_id"].as_str().unwrap())
        .collect();
    assert_eq!(attached, [picture.as_str(), clip.as_str()]);
    assert_eq!(row["attachments"][1]["file_type"], "video/mp4");
    assert_eq!(contacts(&app).await.len(), 2);

    // The same number for another customer now belongs to that one.
    let response = app
        .post_json(
            SMS,
            &staff,
            &json!({ "customer_id": "cust-2", "to": "+16505550101", "message": "Hello" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        contacts(&app).await[0],
        ("phone".into(), "+16505550101".into(), "cust-2".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sms_refusals_name_the_field_and_write_nothing() {
    let app = app().await;
    let staff = app.staff_token();
    let mut files = Vec::new();
    for i in 0..11 {
        files.push(upload(&app, "cust-1", png(), &format!("p{i}.png")).await);
    }
    let video = upload(&app, "cust-1", mp4(2_000_000), "walkthrough.mp4").await;
    let part_one = upload(&app, "cust-1", mp4(800_000), "part 1.mp4").await;
    let part_two = upload(&app, "cust-1", mp4(800_000), "part 2.mp4").await;
    let document = upload(
        &app,
        "cust-1",
        b"%PDF-1.4\n%\xe2\xe3\n".to_vec(),
        "quote.pdf",
    )
    .await;
    let foreign = upload(&app, "cust-2", png(), "theirs.png").await;
    let before = written(&app).await;

    let sms = |to: &str, message: String, attachments: Vec<&String>| json!({ "customer_id": "cust-1", "to": to, "message": message, "attachments": attachments });
    for bad in [
        "12",
        "+1 555 CALL-NOW",
        "call me maybe",
        "",
        "+1 650 555 0101 x12",
    ] {
        let response = app
            .post_json(SMS, &staff, &sms(bad, "hi".into(), vec![]))
            .await;
        refused(response, 422, "to:").await;
    }
    let response = app
        .post_json(SMS, &staff, &sms("6505550101", "x".repeat(1001), vec![]))
        .await;
    let message = refused(response, 422, "message:").await;
    assert!(message.contains("1000"), "{message}");
    let response = app
        .post_json(SMS, &staff, &sms("6505550101", "   ".into(), vec![]))
        .await;
    refused(response, 422, "message:").await;
    let response = app
        .post_json(SMS, &staff, &sms("6505550101", "".into(), vec![]))
        .await;
    refused(response, 422, "message:").await;
    let response = app
        .post_json(
            SMS,
            &staff,
            &sms("6505550101", "all".into(), files.iter().collect()),
        )
        .await;
    let message = refused(response, 422, "attachments:").await;
    assert!(message.contains("at most 10"), "{message}");
    let response = app
        .post_json(SMS, &staff, &sms("6505550101", "tour".into(), vec![&video]))
        .await;
    let message = refused(response, 413, "attachments:").await;
    assert!(message.contains("RingCentral's MMS limit"), "{message}");
    // Files other than images add up: two of 0.8 MB are too many.
    let response = app
        .post_json(
            SMS,
            &staff,
            &sms("6505550101", "tour".into(), vec![&part_one, &part_two]),
        )
        .await;
    refused(response, 413, "attachments:").await;
    let response = app
        .post_json(
            SMS,
            &staff,
            &sms("6505550101", "quote".into(), vec![&document]),
        )
        .await;
    let message = refused(response, 422, "attachments:").await;
    assert!(message.contains("cannot be sent by MMS"), "{message}");
    let response = app
        .post_json(
            SMS,
            &staff,
            &sms("6505550101", "theirs".into(), vec![&foreign]),
        )
        .await;
    let message = refused(response, 422, "attachments:").await;
    assert!(message.contains(&foreign), "{message}");
    let response = app
        .post_json(
            SMS,
            &staff,
            &sms("6505550101", "twice".into(), vec![&files[0], &files[0]]),
        )
        .await;
    refused(response, 422, "attachments:").await;
    let response = app
        .post_json(
            SMS,
            &staff,
            &json!({ "customer_id": "cust-1", "to": "6505550101", "message": "hi", "cc": "x" }),
        )
        .await;
    refused(response, 422, "cc").await;

    assert_eq!(written(&app).await, before, "nothing half-written");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_staff_and_operators_reach_the_providers() {
    let app = app().await;
    let customer = app.customer_token("cust-1");
    let crew = app.token("crew-1", Role::Crew, None);
    let requests = [
        (
            SMS,
            json!({ "customer_id": "cust-1", "to": "6505550101", "message": "hi" }),
        ),
        (
            EMAIL,
            json!({ "customer_id": "cust-1", "to": "jane@example.com", "subject": "Hi", "message": "hi" }),
        ),
        (
            CALL_LOG,
            json!({ "customer_id": "cust-1", "phone": "6505550101", "direction": "inbound", "duration": 30 }),
        ),
    ];
    for (path, body) in &requests {
        for token in [&customer, &crew] {
            let response = app.post_json(path, token, body).await;
            assert_eq!(response.status(), 403, "{path}");
        }
        let response = app
            .client
            .post(app.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path} without a token");
    }
    assert_eq!(written(&app).await, [0; 6]);

    let operator = app.token("op-1", Role::Operator, None);
    for (path, body) in &requests {
        let response = app.post_json(path, &operator, body).await;
        assert_eq!(response.status(), 202, "{path} for an operator");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_is_recorded_and_replies_stay_in_their_thread() {
    let app = app().await;
    let staff = app.staff_token();
    let plan = upload(
        &app,
        "cust-1",
        b"%PDF-1.4\n%\xe2\xe3\n".to_vec(),
        "plan.pdf",
    )
    .await;
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &json!({ "customer_id": "cust-1", "to": ["Jane   Doe <Jane.Doe@Example.COM>", "bob@example.org"],
                     "subject": "Your quote", "message": "Attached.", "attachments": [plan] }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let first = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        body["recipients"],
        json!(["Jane Doe <Jane.Doe@example.com>", "bob@example.org"])
    );
    assert_eq!(body["to"], "Jane.Doe@example.com, bob@example.org");
    let row = communication(&app, &first).await;
    assert_eq!(row["type"], "email");
    assert_eq!(row["subject"], "Your quote");
    assert_eq!(row["message"], "Attached.");
    assert_eq!(
        row["remote_address"],
        "Jane.Doe@example.com, bob@example.org"
    );
    assert_eq!(row["local_address"], "office@example.com");
    assert_eq!(row["rfc822_message_id"], format!("<{first}@example.com>"));
    assert_eq!(row["in_reply_to"], Value::Null);
    assert_eq!(
        row["metadata"]["to"],
        json!([{ "name": "Jane Doe", "address": "Jane.Doe@example.com" }, { "address": "bob@example.org" }])
    );
    assert_eq!(row["attachments"][0]["file_id"], plan.as_str());
    let (kind, payload) = job_of(&app, &first).await;
    assert_eq!(kind, "email.send");
    assert_eq!(payload, json!({ "communication_id": first }));
    assert_eq!(
        contacts(&app).await,
        [
            (
                "email".into(),
                "Jane.Doe@example.com".into(),
                "cust-1".into()
            ),
            ("email".into(), "bob@example.org".into(), "cust-1".into()),
        ]
    );

    // What the worker records once Gmail took it.
    sqlx::query("UPDATE communications SET provider_thread_id = 'thread1' WHERE id = $1::uuid")
        .bind(&first)
        .execute(&app.pool)
        .await
        .unwrap();
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &json!({ "customer_id": "cust-1", "to": "jane.doe@example.com", "message": "Any questions?",
                     "reply_to_communication_id": first }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let second = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = communication(&app, &second).await;
    assert_eq!(reply["subject"], "Re: Your quote");
    assert_eq!(reply["provider_thread_id"], "thread1");
    assert_eq!(reply["in_reply_to"], format!("<{first}@example.com>"));
    assert_eq!(reply["references"], format!("<{first}@example.com>"));

    // Continuing the thread answers its latest email; "Re: " is not added twice.
    sqlx::query("UPDATE communications SET provider_thread_id = 'thread1' WHERE id = $1::uuid")
        .bind(&second)
        .execute(&app.pool)
        .await
        .unwrap();
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &json!({ "customer_id": "cust-1", "to": "jane.doe@example.com", "message": "Following up",
                     "subject": "RE: Your quote", "thread_id": "thread1" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let third = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let follow_up = communication(&app, &third).await;
    assert_eq!(follow_up["subject"], "Re: Your quote");
    assert_eq!(follow_up["provider_thread_id"], "thread1");
    assert_eq!(follow_up["in_reply_to"], format!("<{second}@example.com>"));
    assert_eq!(
        follow_up["references"],
        format!("<{first}@example.com> <{second}@example.com>")
    );

    // A reply cannot change the subject, nor reach another customer's email or thread.
    let before = written(&app).await;
    let reply = |extra: Value| {
        let mut body =
            json!({ "customer_id": "cust-1", "to": "jane.doe@example.com", "message": "x" });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &reply(json!({ "subject": "Something else", "reply_to_communication_id": first })),
        )
        .await;
    refused(response, 422, "subject:").await;
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &json!({ "customer_id": "cust-2", "to": "x@example.com", "message": "x",
                     "reply_to_communication_id": first }),
        )
        .await;
    refused(response, 422, "reply_to_communication_id:").await;
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &json!({ "customer_id": "cust-2", "to": "x@example.com", "message": "x", "thread_id": "thread1" }),
        )
        .await;
    refused(response, 422, "thread_id:").await;
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &reply(json!({ "reply_to_communication_id": first, "thread_id": "thread1" })),
        )
        .await;
    refused(response, 422, "thread_id").await;
    assert_eq!(written(&app).await, before, "nothing half-written");
}

#[tokio::test(flavor = "multi_thread")]
async fn email_refusals_name_the_field_and_write_nothing() {
    let app = app().await;
    let staff = app.staff_token();
    // 27 MiB is under MAX_FILE_SIZE (50 MiB) but over Gmail's 35 MiB once in base64.
    let big = upload(&app, "cust-1", vec![b'a'; 27 << 20], "log.txt").await;
    let foreign = upload(&app, "cust-2", png(), "theirs.png").await;
    let before = written(&app).await;
    let email = |to: Value, subject: &str| json!({ "customer_id": "cust-1", "to": to, "subject": subject, "message": "Hello" });

    for bad in [
        json!("jane"),
        json!("jane@localhost"),
        json!("jane@example..com"),
        json!("Jane <jane@example.com"),
        json!("jane@example.com\r\nBcc: all@example.com"),
        json!(["ok@example.com", "not an address"]),
        json!(["ok@example.com", "Ok <ok@EXAMPLE.com>"]),
        json!([]),
        json!(7),
    ] {
        let response = app
            .post_json(EMAIL, &staff, &email(bad.clone(), "Hi"))
            .await;
        refused(response, 422, "to:").await;
    }
    for bad in ["", "Hi\r\nBcc: all@example.com", &"s".repeat(999)] {
        let response = app
            .post_json(EMAIL, &staff, &email(json!("jane@example.com"), bad))
            .await;
        refused(response, 422, "subject:").await;
    }
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &json!({ "customer_id": "cust-1", "to": "jane@example.com", "message": "no subject" }),
        )
        .await;
    refused(response, 422, "subject:").await;
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &json!({ "customer_id": "cust-1", "to": "jane@example.com", "subject": "Logs",
                     "message": "", "attachments": [big] }),
        )
        .await;
    let message = refused(response, 413, "attachments:").await;
    assert!(message.contains("35 MiB"), "{message}");
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &json!({ "customer_id": "cust-1", "to": "jane@example.com", "subject": "Theirs",
                     "message": "", "attachments": [foreign] }),
        )
        .await;
    refused(response, 422, &foreign).await;
    let response = app
        .post_json(
            EMAIL,
            &staff,
            &json!({ "customer_id": "cust-1", "to": "jane@example.com", "subject": "Hi",
                     "message": "x", "thread_id": "not/a/thread" }),
        )
        .await;
    refused(response, 422, "thread_id:").await;
    assert_eq!(written(&app).await, before, "nothing half-written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_is_logged_with_its_facts_and_bad_ones_are_refused() {
    let app = app().await;
    let staff = app.staff_token();
    let response = app
        .post_json(
            CALL_LOG,
            &staff,
            &json!({ "customer_id": "cust-1", "phone": "650.555.0103", "direction": "inbound",
                     "duration": 125, "notes": "Asked about Tuesday", "occurred_at": "2026-01-05T14:30:00-05:00" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    let row = communication(&app, id).await;
    assert_eq!(row["type"], "phone");
    assert_eq!(row["direction"], "inbound");
    assert_eq!(row["message"], "Asked about Tuesday");
    assert_eq!(row["duration_seconds"], 125);
    assert_eq!(row["remote_address"], "+16505550103");
    assert_eq!(row["local_address"], "+16505550100");
    let occurred: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(row["occurred_at"].clone()).unwrap();
    assert_eq!(occurred.to_rfc3339(), "2026-01-05T19:30:00+00:00");
    let (kind, payload) = job_of(&app, id).await;
    assert_eq!(kind, "call.log");
    assert_eq!(payload, json!({ "communication_id": id }));
    assert_eq!(
        contacts(&app).await,
        [("phone".into(), "+16505550103".into(), "cust-1".into())]
    );

    // No notes, no time: an empty text and now.
    let response = app
        .post_json(
            CALL_LOG,
            &staff,
            &json!({ "customer_id": "cust-1", "phone": "+16505550103", "direction": "outbound", "duration": 0 }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let row = communication(
        &app,
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap(),
    )
    .await;
    assert_eq!(row["message"], "");
    let occurred: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(row["occurred_at"].clone()).unwrap();
    assert!((chrono::Utc::now() - occurred).num_seconds().abs() < 60);

    let before = written(&app).await;
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for (change, field) in [
        (json!({ "phone": "12" }), "phone:"),
        (json!({ "phone": "+1 555 CALL-NOW" }), "phone:"),
        (json!({ "duration": -1 }), "duration:"),
        (json!({ "duration": 86_401 }), "duration:"),
        (json!({ "duration": 1.5 }), "duration"),
        (json!({ "direction": "sideways" }), "direction"),
        (json!({ "occurred_at": future }), "occurred_at:"),
        (json!({ "occurred_at": "yesterday" }), "occurred_at:"),
        (json!({ "notes": "ok\u{1B}[31m" }), "notes:"),
    ] {
        let mut body = json!({ "customer_id": "cust-1", "phone": "6505550103", "direction": "inbound", "duration": 10 });
        body.as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        let response = app.post_json(CALL_LOG, &staff, &body).await;
        refused(response, 422, field).await;
    }
    // NUL is refused where the body is read, before the route (400).
    let body = json!({ "customer_id": "cust-1", "phone": "6505550103", "direction": "inbound", "duration": 10, "notes": "a\u{0}b" });
    refused(app.post_json(CALL_LOG, &staff, &body).await, 400, "notes:").await;
    assert_eq!(written(&app).await, before, "nothing half-written");
}

fn notification(uuid: &str) -> Value {
    json!({
        "uuid": uuid,
        "event": "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS",
        "timestamp": "2026-11-24T10:00:00.000Z",
        "subscriptionId": "sub-1",
        "ownerId": "42",
        "body": { "id": "123", "messageStatus": "Received", "from": { "phoneNumber": "+16505550101" } }
    })
}

async fn post_webhook(app: &TestApp, token: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(WEBHOOK))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.header("Verification-Token", token);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_shakes_hands_checks_its_token_and_takes_each_notification_once() {
    let app = app().await;
    let token = app.settings.ringcentral.webhook_token.expose().to_owned();

    // The subscription handshake: the token echoed, nothing else.
    let response = app
        .client
        .post(app.url(WEBHOOK))
        .header("Validation-Token", "handshake-3f9a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["validation-token"], "handshake-3f9a");
    assert!(response.bytes().await.unwrap().is_empty());

    let good = serde_json::to_vec(&notification("n-1")).unwrap();
    assert_eq!(post_webhook(&app, None, good.clone()).await.status(), 401);
    assert_eq!(
        post_webhook(&app, Some("wrong"), good.clone())
            .await
            .status(),
        403
    );
    let longer = format!("{token}x");
    assert_eq!(
        post_webhook(&app, Some(&longer), good.clone())
            .await
            .status(),
        403
    );

    let malformed = [
        (b"{not json".to_vec(), "JSON"),
        (b"[1, 2]".to_vec(), "JSON"),
        (br#"{"event": "/x", "body": {}}"#.to_vec(), "uuid:"),
        (
            br#"{"uuid": "", "event": "/x", "body": {}}"#.to_vec(),
            "uuid:",
        ),
        (br#"{"uuid": "n-2", "body": {}}"#.to_vec(), "event:"),
        (br#"{"uuid": "n-2", "event": "/x"}"#.to_vec(), "body:"),
        (
            br#"{"uuid": "n-2", "event": "/x", "body": "text"}"#.to_vec(),
            "body:",
        ),
    ];
    for (body, field) in malformed {
        refused(post_webhook(&app, Some(&token), body).await, 400, field).await;
    }
    // Bounded like every body (MAX_BODY_BYTES), and refused in our error shape.
    let mut huge = notification("n-huge");
    huge["body"]["text"] = json!("x".repeat(100 * 1024));
    let response = post_webhook(&app, Some(&token), serde_json::to_vec(&huge).unwrap()).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large");
    assert_eq!(written(&app).await, [0; 6], "nothing taken in yet");

    let response = post_webhook(&app, Some(&token), good.clone()).await;
    assert_eq!(response.status(), 200);
    let jobs: Vec<(String, sqlx::types::Json<Value>)> =
        sqlx::query_as("SELECT kind, payload FROM jobs")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].0, "ringcentral.event");
    assert_eq!(
        jobs[0].1.0,
        json!({ "notification": notification("n-1") }),
        "the whole envelope is kept"
    );

    // RingCentral's retry of the same notification changes nothing.
    let response = post_webhook(&app, Some(&token), good).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.count("jobs").await, 1);
    assert_eq!(app.count("webhook_receipts").await, 1);
    let other = serde_json::to_vec(&notification("n-2")).unwrap();
    assert_eq!(post_webhook(&app, Some(&token), other).await.status(), 200);
    assert_eq!(app.count("jobs").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_credentials_the_providers_answer_503_and_write_nothing() {
    let app = app_with(false).await;
    let staff = app.staff_token();
    let requests = [
        (
            SMS,
            json!({ "customer_id": "cust-1", "to": "6505550101", "message": "hi" }),
        ),
        (
            EMAIL,
            json!({ "customer_id": "cust-1", "to": "jane@example.com", "subject": "Hi", "message": "hi" }),
        ),
        (
            CALL_LOG,
            json!({ "customer_id": "cust-1", "phone": "6505550101", "direction": "inbound", "duration": 30 }),
        ),
    ];
    for (path, body) in &requests {
        let response = app.post_json(path, &staff, body).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "provider_not_configured");
    }
    let response = post_webhook(
        &app,
        Some("anything"),
        serde_json::to_vec(&notification("n-1")).unwrap(),
    )
    .await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "provider_not_configured");
    assert_eq!(written(&app).await, [0; 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_idempotency_key_sends_once() {
    let app = app().await;
    let staff = app.staff_token();
    let requests = [
        (
            SMS,
            json!({ "customer_id": "cust-1", "to": "6505550101", "message": "hi" }),
        ),
        (
            EMAIL,
            json!({ "customer_id": "cust-1", "to": "jane@example.com", "subject": "Hi", "message": "hi" }),
        ),
        (
            CALL_LOG,
            json!({ "customer_id": "cust-1", "phone": "6505550101", "direction": "inbound", "duration": 30 }),
        ),
    ];
    for (i, (path, body)) in requests.iter().enumerate() {
        let key = format!("key-{i}");
        let send = |body: &Value| {
            app.client
                .post(app.url(path))
                .bearer_auth(&staff)
                .header("Idempotency-Key", &key)
                .json(body)
                .send()
        };
        let first = send(body).await.unwrap();
        assert_eq!(first.status(), 202);
        let first: Value = first.json().await.unwrap();
        let again = send(body).await.unwrap();
        assert_eq!(again.status(), 202);
        assert_eq!(again.json::<Value>().await.unwrap(), first, "{path}");
        let mut changed = body.clone();
        changed["customer_id"] = json!("cust-2");
        assert_eq!(send(&changed).await.unwrap().status(), 409, "{path}");
    }
    assert_eq!(app.count("communications").await, 3);
    assert_eq!(app.count("jobs").await, 3);
}
