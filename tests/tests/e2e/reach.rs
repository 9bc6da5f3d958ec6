//! Reaching customers outside the portal: their contact preferences, and the fallback
//! of unread in-app messages to SMS or email (swept here with a clock the test sets).

use chrono::{DateTime, Duration as Span, Utc};
use commcenter_shared::{domain::Role, domain::communications::writes, domain::reach};
use commcenter_tests::{TestApp, spawn_app};
use serde_json::{Value, json};

async fn answer(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    body
}

fn message_of(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

/// One fallback sweep as of `now`; answers how many fallbacks it wrote.
async fn sweep(app: &TestApp, now: DateTime<Utc>) -> usize {
    reach::send_due_fallbacks(
        &app.pool,
        now,
        &commcenter_workers::schedule::fallback_settings(&app.settings),
    )
    .await
    .unwrap()
}

async fn set_contact(app: &TestApp, customer: &str, body: Value) -> Value {
    answer(
        app.put_json(
            &format!("/api/customers/{customer}/contact"),
            &app.staff_token(),
            &body,
        )
        .await,
        200,
    )
    .await
}

/// A staff message to `customer`, delivered (status `sent`): the id.
async fn delivered(app: &TestApp, customer: &str, text: &str) -> String {
    let sent = app.send_ok(&app.staff_token(), customer, text).await;
    let id = sent["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "sent").await;
    id
}

async fn record(app: &TestApp, id: &str, token: &str) -> Value {
    let listing = answer(
        app.get("/api/communications?customer_id=cust-1&limit=50", token)
            .await,
        200,
    )
    .await;
    listing["communications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

fn texts_to(app: &TestApp, number: &str) -> Vec<String> {
    app.ringcentral
        .sent()
        .iter()
        .filter(|s| s["to"][0]["phoneNumber"] == number)
        .map(|s| s["subject"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn contacts_are_set_by_staff_or_their_customer_and_checked() {
    let app = spawn_app().await;
    let path = "/api/customers/cust-1/contact";
    let customer = app.customer_token("cust-1");
    answer(app.get(path, &customer).await, 404).await;

    let saved = set_contact(
        &app,
        "cust-1",
        json!({ "email": "Jane@Example.COM", "phone": "(415) 555-0110", "fallback": "sms",
                "quiet_hours": { "start": "22:00", "end": "07:00", "time_zone": "Europe/Paris" },
                "fallback_after_secs": 600 }),
    )
    .await;
    assert_eq!(saved["email"], "Jane@example.com");
    assert_eq!(saved["phone"], "+14155550110");
    assert_eq!(saved["fallback"], "sms");
    assert_eq!(saved["quiet_hours"]["start"], "22:00");
    assert_eq!(saved["updated_by"], "staff-1");
    let read = answer(app.get(path, &customer).await, 200).await;
    assert_eq!(read["phone"], "+14155550110");
    // The addresses are remembered as the customer's (inbound SMS and email match them).
    let owner: String = sqlx::query_scalar(
        "SELECT customer_id FROM customer_contacts WHERE kind = 'phone' AND address = '+14155550110'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(owner, "cust-1");

    // The customer sets their own; not another's; crews neither.
    let put = |token: String, path: &'static str, body: Value| {
        let request = app.client.put(app.url(path)).bearer_auth(token).json(&body);
        async move { request.send().await.unwrap() }
    };
    answer(
        put(customer.clone(), path, json!({ "fallback": "none" })).await,
        200,
    )
    .await;
    answer(
        put(
            customer.clone(),
            "/api/customers/cust-2/contact",
            json!({ "fallback": "none" }),
        )
        .await,
        404,
    )
    .await;
    answer(
        app.get("/api/customers/cust-2/contact", &customer).await,
        404,
    )
    .await;
    let crew = app.token("crew-1", Role::Crew, None);
    answer(app.get(path, &crew).await, 403).await;

    let staff = app.staff_token();
    for (body, field) in [
        (json!({ "email": "not an address" }), "email"),
        (json!({ "phone": "12" }), "phone"),
        (json!({ "fallback": "pigeon" }), "fallback"),
        (json!({ "fallback": "sms" }), "fallback"),
        (
            json!({ "fallback": "email", "phone": "+14155550110" }),
            "fallback",
        ),
        (json!({ "fallback_after_secs": 5 }), "fallback_after_secs"),
        (
            json!({ "quiet_hours": { "start": "25:00", "end": "07:00", "time_zone": "UTC" } }),
            "quiet_hours.start",
        ),
        (
            json!({ "quiet_hours": { "start": "07:00", "end": "07:00", "time_zone": "UTC" } }),
            "quiet_hours",
        ),
        (
            json!({ "quiet_hours": { "start": "22:00", "end": "07:00", "time_zone": "Mars/Olympus" } }),
            "quiet_hours.time_zone",
        ),
    ] {
        let body = answer(put(staff.clone(), path, body).await, 422).await;
        assert!(message_of(&body).starts_with(field), "{field}: {body}");
    }
    // Nothing of the refused ones was written.
    let read = answer(app.get(path, &staff).await, 200).await;
    assert_eq!(read["fallback"], "none");
    assert_eq!(read["email"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unread_message_falls_back_once_and_a_read_one_or_a_note_never() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let customer = app.customer_token("cust-1");
    set_contact(
        &app,
        "cust-1",
        json!({ "phone": "+14155550111", "fallback": "sms", "fallback_after_secs": 60 }),
    )
    .await;
    let first = delivered(&app, "cust-1", "Your crew arrives at 9").await;
    let now = Utc::now();
    assert_eq!(sweep(&app, now).await, 0, "not unread long enough");
    assert_eq!(sweep(&app, now + Span::minutes(2)).await, 1);
    let fallback = record(&app, &first, &customer).await["fallback"].clone();
    assert_eq!(fallback["channel"], "sms");
    let fallback_id = fallback["communication_id"].as_str().unwrap().to_owned();
    app.wait_for_status(&fallback_id, "sent").await;
    assert_eq!(
        texts_to(&app, "+14155550111"),
        vec!["Your crew arrives at 9"]
    );
    // Never twice.
    assert_eq!(sweep(&app, now + Span::minutes(10)).await, 0);

    // One read, one internal note, one unread: only the unread one falls back.
    let read = delivered(&app, "cust-1", "Read this one").await;
    app.mark_read(&customer, &read).await;
    app.wait_for_status(&read, "read").await;
    let note = app
        .post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-1", "message": "Internal: VIP", "visibility": "internal" }),
        )
        .await;
    let note = answer(note, 202).await["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&note, "sent").await;
    let unread = delivered(&app, "cust-1", "Bring the gate key").await;
    assert_eq!(sweep(&app, Utc::now() + Span::minutes(2)).await, 1);
    let carried = record(&app, &unread, &customer).await["fallback"]["communication_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&carried, "sent").await;
    assert_eq!(
        texts_to(&app, "+14155550111"),
        vec!["Your crew arrives at 9", "Bring the gate key"]
    );
    assert_eq!(
        record(&app, &read, &customer).await["fallback"],
        Value::Null
    );
    assert_eq!(record(&app, &note, &staff).await["fallback"], Value::Null);
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn several_unread_messages_go_as_one_email_digest() {
    let app = spawn_app().await;
    set_contact(
        &app,
        "cust-1",
        json!({ "email": "jane@example.com", "fallback": "email" }),
    )
    .await;
    for text in ["First", "Second", "Third"] {
        delivered(&app, "cust-1", text).await;
    }
    // The default delay (FALLBACK_AFTER_SECS, 300 s).
    assert_eq!(sweep(&app, Utc::now() + Span::minutes(4)).await, 0);
    assert_eq!(sweep(&app, Utc::now() + Span::minutes(6)).await, 1);
    let deadline = tokio::time::Instant::now() + crate::WAIT;
    while app.gmail.sent().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no email went");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let sent = app.gmail.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, vec!["jane@example.com"]);
    assert_eq!(sent[0].subject, "You have 3 unread messages");
    let raw = String::from_utf8_lossy(&sent[0].raw);
    assert!(raw.contains("1) First"), "{raw}");
    assert!(raw.contains("3) Third"), "{raw}");
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_hours_hold_a_fallback_until_they_end() {
    let app = spawn_app().await;
    // Tokyo has no daylight saving: 22:00-07:00 there is 13:00-22:00 UTC.
    set_contact(
        &app,
        "cust-1",
        json!({ "phone": "+14155550112", "fallback": "sms", "fallback_after_secs": 60,
                "quiet_hours": { "start": "22:00", "end": "07:00", "time_zone": "Asia/Tokyo" } }),
    )
    .await;
    let id = delivered(&app, "cust-1", "Tomorrow at 8").await;
    let tomorrow = (Utc::now() + Span::days(1)).date_naive();
    let at = |h: u32, m: u32| tomorrow.and_hms_opt(h, m, 0).unwrap().and_utc();
    assert_eq!(sweep(&app, at(13, 30)).await, 0, "22:30 in Tokyo");
    assert_eq!(sweep(&app, at(21, 59)).await, 0, "06:59 in Tokyo");
    assert_eq!(
        sweep(&app, at(22, 0)).await,
        1,
        "07:00 in Tokyo: quiet hours are over"
    );
    let fallback = record(&app, &id, &app.staff_token()).await["fallback"]["communication_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&fallback, "sent").await;
    assert_eq!(texts_to(&app, "+14155550112"), vec!["Tomorrow at 8"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_read_just_before_its_fallback_goes_is_not_sent() {
    let mut app = spawn_app().await;
    set_contact(
        &app,
        "cust-1",
        json!({ "phone": "+14155550113", "fallback": "sms", "fallback_after_secs": 60 }),
    )
    .await;
    let id = delivered(&app, "cust-1", "Are you home?").await;
    // The fallback is written while no worker runs; the message is read before one does.
    app.stop_workers().await;
    assert_eq!(sweep(&app, Utc::now() + Span::minutes(2)).await, 1);
    let fallback: String =
        sqlx::query_scalar("SELECT fallback_id::text FROM communications WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    sqlx::query(
        "UPDATE communications SET status = 'read', read_at = now(), read_by = 'user-of-cust-1'
         WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let mut staff_ws = app.ws("staff-1", &app.staff_token()).await;
    app.start_workers();
    app.wait_for_status(&fallback, "failed").await;
    let frame = staff_ws
        .next_of_type("communication.status", crate::WAIT)
        .await
        .expect("staff hear why");
    assert_eq!(frame["communication_id"], fallback.as_str());
    assert!(
        frame["reason"].as_str().unwrap().contains("read first"),
        "{frame}"
    );
    assert!(
        texts_to(&app, "+14155550113").is_empty(),
        "nothing was sent"
    );
    assert_eq!(
        record(&app, &id, &app.staff_token()).await["fallback"],
        Value::Null
    );
    app.assert_no_jobs_left().await;
}

/// Two deliveries of one fallback may both find its messages read (the check runs
/// before the job's lock): the fallback fails once, and is announced once.
#[tokio::test(flavor = "multi_thread")]
async fn a_fallback_cancelled_twice_is_announced_once() {
    let mut app = spawn_app().await;
    set_contact(
        &app,
        "cust-1",
        json!({ "phone": "+14155550114", "fallback": "sms", "fallback_after_secs": 60 }),
    )
    .await;
    let id = delivered(&app, "cust-1", "Gate code?").await;
    app.stop_workers().await;
    assert_eq!(sweep(&app, Utc::now() + Span::minutes(2)).await, 1);
    let fallback: uuid::Uuid =
        sqlx::query_scalar("SELECT fallback_id FROM communications WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let mut cancelled = Vec::new();
    for _ in 0..2 {
        let mut tx = app.pool.begin().await.unwrap();
        cancelled.push(writes::cancel_fallback(&mut tx, fallback).await.unwrap());
        tx.commit().await.unwrap();
    }
    assert_eq!(
        cancelled,
        vec![true, false],
        "the second finds it failed already"
    );
    let announced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT payload FROM event_outbox
                               UNION ALL SELECT payload FROM event_log) e
         WHERE payload->>'type' = 'communication.status'
           AND payload->>'communication_id' = $1::text",
    )
    .bind(fallback)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(announced, 1);
    let reason: String =
        sqlx::query_scalar("SELECT failure_reason FROM communications WHERE id = $1")
            .bind(fallback)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(reason.contains("read first"), "{reason}");
}
