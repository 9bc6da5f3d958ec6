//! SMS, MMS, calls and RingCentral's webhook, end to end: the portal's request, the
//! workers, this test's fake RingCentral, and back through the webhook.

use std::time::Duration;

use commcenter_fakes::{Endpoint, Fault, RingCentralConfig};
use commcenter_providers::ringcentral::RingCentral;
use commcenter_tests::{TestApp, TestOptions, spawn_app_with};
use serde_json::{Value, json};

use crate::WAIT;

const SMS: &str = "/api/integrations/ringcentral/sms";
const CALL_LOG: &str = "/api/integrations/ringcentral/call-log";
const WEBHOOK: &str = "/api/integrations/ringcentral/webhook";

async fn app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

/// Sends an SMS as staff; returns the communication id.
async fn send_sms(app: &TestApp, to: &str, message: &str) -> String {
    let response = app
        .post_json(
            SMS,
            &app.staff_token(),
            &json!({ "customer_id": "cust-1", "to": to, "message": message }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn row(app: &TestApp, id: &str) -> Value {
    sqlx::query_scalar::<_, sqlx::types::Json<Value>>(
        "SELECT to_jsonb(c) FROM communications c WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
    .0
}

async fn job_of(app: &TestApp, communication: &str) -> String {
    sqlx::query_scalar::<_, uuid::Uuid>(
        "SELECT id FROM jobs WHERE communication_id = $1::uuid ORDER BY created_at LIMIT 1",
    )
    .bind(communication)
    .fetch_one(&app.pool)
    .await
    .unwrap()
    .to_string()
}

fn copies_of(app: &TestApp, text: &str) -> usize {
    app.ringcentral
        .sent()
        .iter()
        .filter(|m| m["subject"] == text)
        .count()
}

/// Subscribes our webhook at the fake, as `commcenterctl ringcentral subscribe` does at
/// RingCentral: the fake performs the `Validation-Token` handshake against our endpoint.
async fn subscribe(app: &TestApp) {
    let client = RingCentral::new(&app.settings.ringcentral).unwrap();
    let subscription = client
        .subscribe(
            &app.url(WEBHOOK),
            app.settings.ringcentral.webhook_token.expose(),
        )
        .await
        .unwrap();
    assert_eq!(subscription["status"], "Active", "{subscription}");
    // The longest a webhook may live (10 years): RingCentral's default is a week, after
    // which texts' statuses and inbound SMS would silently stop coming.
    assert_eq!(subscription["expiresIn"], 315_360_000, "{subscription}");
    assert_eq!(app.ringcentral.subscriptions().len(), 1);
}

#[tokio::test]
async fn an_sms_goes_out_once_and_its_delivery_comes_back_through_the_webhook() {
    let app = app().await;
    subscribe(&app).await;
    let id = send_sms(&app, "(415) 555-0100", "Your crew arrives at 9").await;
    app.wait_for_status(&id, "sent").await;

    let sent = app.ringcentral.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["to"][0]["phoneNumber"], "+14155550100");
    assert_eq!(sent[0]["from"]["phoneNumber"], "+16505550100");
    let provider_id = sent[0]["id"].to_string();
    let communication = row(&app, &id).await;
    assert_eq!(communication["provider_message_id"], provider_id.as_str());
    let attempts = app.attempts(&job_of(&app, &id).await).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["provider_id"], provider_id.as_str());
    assert_eq!(attempts[0]["http_status"], 200);

    // The carrier delivers; RingCentral says "a message changed"; we re-fetch it.
    assert!(app.ringcentral.set_status(&provider_id, "Delivered"));
    app.wait_for_status(&id, "delivered").await;
    assert_eq!(row(&app, &id).await["provider_status"], "Delivered");

    // A late "Sent" never moves it back.
    assert!(app.ringcentral.set_status(&provider_id, "Sent"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.communication_status(&id).await, "delivered");
    assert_eq!(copies_of(&app, "Your crew arrives at 9"), 1);
    app.assert_no_jobs_left().await;
}

#[tokio::test]
async fn a_delivery_failure_reported_by_the_carrier_shows_as_failed_with_the_reason() {
    let app = app().await;
    subscribe(&app).await;
    let id = send_sms(&app, "+14155550101", "Gate code is 4411").await;
    app.wait_for_status(&id, "sent").await;
    let provider_id = app.ringcentral.sent()[0]["id"].to_string();
    assert!(app.ringcentral.set_status(&provider_id, "DeliveryFailed"));
    app.wait_for_status(&id, "failed").await;
    let reason = row(&app, &id).await["failure_reason"].clone();
    assert!(
        reason.as_str().unwrap().contains("DeliveryFailed"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_inbound_sms_lands_in_the_conversation_of_the_customer_with_that_number_once() {
    let app = app().await;
    subscribe(&app).await;
    // Sending to the number teaches us whose it is.
    let id = send_sms(&app, "+14155550102", "Reply YES to confirm").await;
    app.wait_for_status(&id, "sent").await;

    app.ringcentral.inbound_sms("+14155550102", "YES").await;
    let inbound = commcenter_tests::eventually("the inbound SMS", WAIT, || async {
        sqlx::query_scalar::<_, sqlx::types::Json<Value>>(
            "SELECT to_jsonb(c) FROM communications c WHERE direction = 'inbound'",
        )
        .fetch_optional(&app.pool)
        .await
        .ok()
        .flatten()
    })
    .await
    .0;
    assert_eq!(inbound["customer_id"], "cust-1");
    assert_eq!(inbound["type"], "sms");
    assert_eq!(inbound["message"], "YES");
    assert_eq!(inbound["remote_address"], "+14155550102");
    // Both events (instant and message-store) name it; it is recorded once.
    app.assert_no_jobs_left().await;
    assert_eq!(
        app.count("communications WHERE direction = 'inbound'")
            .await,
        1
    );

    // A stranger's text gets a conversation of its own, for staff to see.
    app.ringcentral
        .inbound_sms("+14155550199", "Who is this?")
        .await;
    commcenter_tests::eventually("the stranger's SMS", WAIT, || async {
        let customer: Option<String> = sqlx::query_scalar(
            "SELECT customer_id FROM communications WHERE remote_address = '+14155550199'",
        )
        .fetch_optional(&app.pool)
        .await
        .ok()?;
        (customer.as_deref() == Some("unknown:14155550199")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_number_that_cannot_take_sms_fails_at_once_with_ringcentrals_reason() {
    let app = spawn_app_with(TestOptions {
        ringcentral: RingCentralConfig {
            no_sms_numbers: vec!["+14155550103".into()],
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let id = send_sms(&app, "+14155550103", "Hello landline").await;
    app.wait_for_status(&id, "failed").await;
    let job = app
        .wait_for_job_state(&job_of(&app, &id).await, "dead")
        .await;
    assert_eq!(job["attempts"], 1, "a permanent refusal is not retried");
    assert_eq!(job["last_error_class"], "permanent");
    let reason = row(&app, &id).await["failure_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("RingCentral refused"), "{reason}");
    assert!(
        reason.contains("MSG-246") || reason.contains("SMS"),
        "{reason}"
    );
}

#[tokio::test]
async fn ringcentral_down_for_the_whole_retry_window_ends_dead_and_failed_with_the_reason() {
    let app = app().await;
    app.ringcentral
        .fail_next(Endpoint::Send, Fault::ServerError(503), 100);
    let id = send_sms(&app, "+14155550104", "Are you there?").await;
    let job = job_of(&app, &id).await;
    let dead = app.wait_for_job_state(&job, "dead").await;
    assert_eq!(dead["last_error_class"], "exhausted");
    assert_eq!(dead["attempts"], 5);
    app.wait_for_status(&id, "failed").await;
    let reason = row(&app, &id).await["failure_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("503"), "{reason}");
    let attempts = app.attempts(&job).await;
    assert!(
        attempts.iter().all(|a| a["http_status"] == 503),
        "{attempts:?}"
    );
    assert_eq!(copies_of(&app, "Are you there?"), 0);
}

#[tokio::test]
async fn a_rate_limited_send_waits_as_long_as_ringcentral_asks_then_goes_out_once() {
    let app = app().await;
    app.ringcentral.fail_next(
        Endpoint::Send,
        Fault::RateLimited {
            retry_after: Some(1),
        },
        1,
    );
    let id = send_sms(&app, "+14155550105", "Slow down").await;
    app.wait_for_status(&id, "sent").await;
    let attempts = app.attempts(&job_of(&app, &id).await).await;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["http_status"], 429);
    assert!(
        attempts[0]["retry_in_ms"].as_i64().unwrap() >= 1000,
        "Retry-After is honoured: {attempts:?}"
    );
    assert_eq!(copies_of(&app, "Slow down"), 1);
}

#[tokio::test]
async fn a_send_whose_answer_is_lost_is_found_in_the_message_store_not_sent_again() {
    let app = app().await;
    app.ringcentral
        .fail_next(Endpoint::Send, Fault::AcceptThenDrop, 1);
    let id = send_sms(&app, "+14155550106", "Only once please").await;
    app.wait_for_status(&id, "sent").await;
    assert_eq!(copies_of(&app, "Only once please"), 1);
    let states: Vec<String> = sqlx::query_scalar(
        "SELECT state FROM provider_sends WHERE communication_id = $1::uuid ORDER BY started_at",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(states, ["accepted"], "the unknown send was reconciled");
    let attempts = app.attempts(&job_of(&app, &id).await).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
}

#[tokio::test]
async fn a_revoked_jwt_fails_the_send_permanently_without_a_token_storm() {
    let app = app().await;
    app.ringcentral.revoke();
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(send_sms(&app, "+14155550107", &format!("Revoked {n}")).await);
    }
    for id in &ids {
        app.wait_for_status(id, "failed").await;
    }
    assert!(
        app.ringcentral.token_requests() <= 3,
        "{} token requests for 20 sends",
        app.ringcentral.token_requests()
    );
    let reason = row(&app, &ids[0]).await["failure_reason"].clone();
    assert!(reason.as_str().unwrap().contains("RingCentral"), "{reason}");
}

#[tokio::test]
async fn a_thousand_sends_across_an_expired_token_refresh_it_once() {
    let app = app().await;
    let first = send_sms(&app, "+14155550108", "warm up").await;
    app.wait_for_status(&first, "sent").await;
    let before = app.ringcentral.token_requests();
    app.ringcentral.expire_tokens();

    // 64 requests in flight, as a client would send (a thousand at once may overload
    // the test's small pool, which is answered 503 by design); the workers still have
    // the whole thousand queued across the token's expiry.
    use futures_util::StreamExt as _;
    let ids: Vec<String> = futures_util::stream::iter(0..1000)
        .map(|n| {
            let app = &app;
            async move { send_sms(app, "+14155550108", &format!("bulk {n}")).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    commcenter_tests::eventually("a thousand sends", Duration::from_secs(120), || async {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM communications WHERE status = 'sent' AND message LIKE 'bulk %'",
        )
        .fetch_one(&app.pool)
        .await
        .ok()?;
        (sent == ids.len() as i64).then_some(())
    })
    .await;
    assert_eq!(
        app.ringcentral.token_requests() - before,
        1,
        "one refresh for a thousand sends"
    );
    assert_eq!(app.ringcentral.sent().len(), 1001);
}

#[tokio::test]
async fn an_mms_carries_its_photo_shrunk_to_ringcentrals_limit() {
    let app = app().await;
    // A noisy 1,600×1,200 photo: far over 1.5 MB as PNG.
    let image = image::RgbImage::from_fn(1600, 1200, |x, y| {
        let v = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) as u8;
        image::Rgb([v, v.wrapping_add(x as u8), v ^ (y as u8)])
    });
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner();
    assert!(png.len() > 1_500_000);
    let form = reqwest::multipart::Form::new()
        .text("customer_id", "cust-1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(png).file_name("driveway.png"),
        );
    let upload: Value = app
        .client
        .post(app.url("/api/communications/upload"))
        .bearer_auth(app.staff_token())
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file_id = upload["files"][0]["file_id"].as_str().unwrap();
    let response = app
        .post_json(
            SMS,
            &app.staff_token(),
            &json!({ "customer_id": "cust-1", "to": "+14155550109", "message": "Your driveway", "attachments": [file_id] }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&id, "sent").await;
    let sent = app.ringcentral.sent();
    // RingCentral lists the text as an attachment of its own, beside the files.
    let files: Vec<&Value> = sent[0]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "MmsAttachment")
        .collect();
    assert_eq!(files.len(), 1, "{sent:?}");
    assert_eq!(
        files[0]["contentType"], "image/jpeg",
        "recompressed to JPEG"
    );
    assert!(files[0]["size"].as_u64().unwrap() < 1_500_000);
    let total: u64 = app
        .ringcentral
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/sms") && r.method == "POST")
        .map(|r| r.body.len() as u64)
        .sum();
    assert!(total < 1_600_000, "the MMS body is {total} bytes");
}

#[tokio::test]
async fn a_logged_call_joins_the_conversation_and_the_call_log_import_adds_each_call_once() {
    let app = app().await;
    let response = app
        .post_json(
            CALL_LOG,
            &app.staff_token(),
            &json!({ "customer_id": "cust-1", "phone": "+14155550110", "direction": "outbound", "duration": 95, "notes": "Confirmed Tuesday" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&id, "delivered").await;

    // The number is now the customer's: an imported call from it files under them.
    app.ringcentral.add_call(json!({
        "direction": "Inbound", "duration": 42, "result": "Accepted", "type": "Voice",
        "action": "Phone Call",
        "from": { "phoneNumber": "+14155550110" }, "to": { "phoneNumber": "+16505550100" }
    }));
    for _ in 0..2 {
        assert!(
            commcenter_workers::schedule::enqueue_unless_open(
                &app.pool,
                &commcenter_shared::ledger::jobs::payloads::ImportCallLog::default(),
                3
            )
            .await
            .unwrap()
        );
        app.assert_no_jobs_left().await;
    }
    let imported: Vec<(String, String, Option<i32>)> = sqlx::query_as(
        "SELECT customer_id, direction, duration_seconds FROM communications
         WHERE type = 'phone' AND provider_message_id IS NOT NULL",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        imported,
        [("cust-1".to_owned(), "inbound".to_owned(), Some(42))],
        "imported once, however often the import runs"
    );
}

#[tokio::test]
async fn the_webhook_refuses_notifications_without_our_verification_token() {
    let app = app().await;
    let response = app
        .client
        .post(app.url(WEBHOOK))
        .header("Verification-Token", "not-ours")
        .json(&json!({ "uuid": "u-1", "event": "/restapi/v1.0/account/~/extension/~/message-store", "body": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(app.count("jobs").await, 0);
}
