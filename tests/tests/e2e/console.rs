//! The operators' console at `/ops`: how it is served, and an operator using it in real
//! headless Chromium (`tests/browser/console.spec.mjs`) to find a customer's dead SMS,
//! read why it failed, replay it and watch it succeed.

use std::time::Duration;

use commcenter_fakes::{Endpoint, Fault};
use commcenter_shared::{domain::Role, ledger::jobs::kinds};
use commcenter_tests::{TestApp, spawn_app_with};
use serde_json::{Value, json};
use uuid::Uuid;

/// What the fake RingCentral answers while the sending number cannot send SMS.
pub const REFUSAL: &str = "SMS is not enabled for the sending number";

/// Sends an SMS to `customer` that RingCentral refuses (400, permanent) `refusals`
/// times, and waits until its job is dead; returns (communication id, job id).
pub async fn dead_sms(app: &TestApp, customer: &str, refusals: usize) -> (String, String) {
    let body = json!({
        "errorCode": "FeatureNotAvailable",
        "message": REFUSAL,
        "errors": [{ "errorCode": "FeatureNotAvailable", "message": REFUSAL }],
    });
    app.ringcentral.fail_next(
        Endpoint::Send,
        Fault::Status {
            status: 400,
            body,
            retry_after: None,
        },
        refusals,
    );
    let response = app
        .post_json(
            "/api/integrations/ringcentral/sms",
            &app.staff_token(),
            &json!({ "customer_id": customer, "to": "+14155550123", "message": "Your crew arrives at 9" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let communication = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job: Uuid =
        sqlx::query_scalar("SELECT id FROM jobs WHERE communication_id = $1::uuid AND kind = $2")
            .bind(&communication)
            .bind(kinds::SMS_SEND)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let job = job.to_string();
    app.wait_for_job_state(&job, "dead").await;
    app.wait_for_status(&communication, "failed").await;
    (communication, job)
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn console_app() -> commcenter_tests::TestOptions {
    commcenter_tests::TestOptions {
        start_workers: false,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_is_served_with_a_strict_content_security_policy_and_no_inline_code() {
    let app = spawn_app_with(console_app()).await;
    let response = get(&app, "/ops").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    let csp = header(&response, "content-security-policy").to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "x-frame-options"), "DENY");
    assert_eq!(header(&response, "referrer-policy"), "no-referrer");

    let page = response.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="/ops/app.js"></script>"#));
    assert!(page.contains(r#"<link rel="stylesheet" href="/ops/app.css">"#));
    // Every script is a file (the policy would block inline ones); no inline styles or
    // handlers either.
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script type=\"module\" src=").count()
    );
    for inline in [
        "<style",
        " style=",
        " onclick=",
        " onsubmit=",
        "javascript:",
    ] {
        assert!(!page.contains(inline), "the page has {inline}");
    }
    // Accessible controls: every input and select sits in a label.
    assert!(page.contains(r#"<label for="token">Operator token</label>"#));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_script_and_stylesheet_are_served_with_their_types_and_the_same_policy() {
    let app = spawn_app_with(console_app()).await;
    for (path, content_type, marker) in [
        (
            "/ops/app.js",
            "text/javascript; charset=utf-8",
            "sessionStorage",
        ),
        ("/ops/app.css", "text/css; charset=utf-8", ":root"),
    ] {
        let response = get(&app, path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), content_type);
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert!(header(&response, "content-security-policy").contains("default-src 'none'"));
        assert!(response.text().await.unwrap().contains(marker), "{path}");
    }
    // The script sends the token in a header; it never builds a URL with it.
    let script = get(&app, "/ops/app.js").await.text().await.unwrap();
    assert!(script.contains("Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`"));
    assert!(
        !script.contains("innerHTML"),
        "API values must go in as text"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn other_paths_under_ops_are_not_found_and_the_page_holds_no_data() {
    let app = spawn_app_with(console_app()).await;
    for path in [
        "/ops/",
        "/ops/app.js.map",
        "/ops/index.html",
        "/ops/api/ops/jobs",
    ] {
        let response = get(&app, path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    // The assets are public; everything they show comes from /api/ops/ with a token.
    let staff = app.staff_token();
    let response = app.get("/api/ops/jobs", &staff).await;
    assert_eq!(response.status(), 403);
    let response = app
        .client
        .post(app.url("/ops"))
        .bearer_auth(app.token("ops-1", Role::Operator, None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_replays_a_customers_dead_sms_in_the_browser_and_watches_it_succeed() {
    let app = spawn_app_with(Default::default()).await;
    // Another customer's dead SMS: not shown under the filter, then discarded in bulk.
    let (other, _) = dead_sms(&app, "cust-other", 1).await;
    let (communication, job) = dead_sms(&app, "cust-42", 1).await;
    let token = app.token("ops-console", Role::Operator, None);
    let reason = "SMS enabled on the sending number";

    let stdout = crate::browser::run_spec(
        "console.spec.mjs",
        &[
            ("CONSOLE_URL", app.base_url.clone()),
            ("OPERATOR_TOKEN", token.clone()),
            ("CUSTOMER_ID", "cust-42".to_owned()),
            ("OTHER_CUSTOMER", "cust-other".to_owned()),
            ("EXPECT_ERROR", REFUSAL.to_owned()),
            ("REASON", reason.to_owned()),
        ],
        Duration::from_secs(120),
    )
    .await;
    assert!(stdout.contains(&format!("replayed job {job}")), "{stdout}");

    // The ledger agrees with what the page showed.
    let row = app.wait_for_job_state(&job, "succeeded").await;
    assert_eq!(row["generation"], 1);
    app.wait_for_status(&communication, "sent").await;
    let audit: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT operator, action, reason, previous_state FROM ops_audit WHERE job_id = $1::uuid",
    )
    .bind(&job)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        [(
            "ops-console".to_owned(),
            "replay".to_owned(),
            reason.to_owned(),
            Some("dead".to_owned())
        )]
    );
    // Sent once, on the replay; the other customer's job was discarded, not sent.
    let sent = app.ringcentral.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let states: Vec<(String, String)> = sqlx::query_as(
        "SELECT customer_id, state FROM jobs WHERE kind = 'sms.send' ORDER BY customer_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        [
            ("cust-42".to_owned(), "succeeded".to_owned()),
            ("cust-other".to_owned(), "cancelled".to_owned())
        ]
    );
    assert_eq!(app.communication_status(&other).await, "failed");
    let bulk: (String, i64, String) = sqlx::query_as(
        "SELECT operator, matched, reason FROM ops_audit WHERE action = 'bulk_discard'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        bulk,
        (
            "ops-console".to_owned(),
            1,
            "customer asked us to stop".to_owned()
        )
    );
}
