//! Analytics (`/api/analytics/…`) checked against figures worked out by hand: a day of
//! four customers with a conversation reopened, a message never answered, one answered
//! by a crew member, an answer deleted (its message falls to the next answer), an
//! edit (which changes nothing), a customer's deleted message, an internal note and a
//! system text (which answer nobody), and a read receipt that arrives late.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, spawn_app};

use crate::WAIT;

/// One message as a provider or the api would have written it, at `at`.
struct Message<'a> {
    customer: &'a str,
    channel: &'a str,
    direction: &'a str,
    sender: &'a str,
    role: &'a str,
    at: DateTime<Utc>,
    internal: bool,
}

async fn insert(app: &TestApp, m: Message<'_>) -> String {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role,
             message, status, visibility, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'text', $7, $8, $9)",
    )
    .bind(id)
    .bind(m.customer)
    .bind(m.channel)
    .bind(m.direction)
    .bind(m.sender)
    .bind(m.role)
    .bind(if m.direction == "inbound" {
        "delivered"
    } else {
        "sent"
    })
    .bind(if m.internal { "internal" } else { "public" })
    .bind(m.at)
    .execute(&app.pool)
    .await
    .unwrap();
    id.to_string()
}

fn from_customer<'a>(customer: &'a str, channel: &'a str, at: DateTime<Utc>) -> Message<'a> {
    Message {
        customer,
        channel,
        direction: "inbound",
        sender: customer,
        role: "customer",
        at,
        internal: false,
    }
}

fn answer<'a>(
    customer: &'a str,
    channel: &'a str,
    sender: &'a str,
    role: &'a str,
    at: DateTime<Utc>,
) -> Message<'a> {
    Message {
        customer,
        channel,
        direction: "outbound",
        sender,
        role,
        at,
        internal: false,
    }
}

async fn get_ok(app: &TestApp, path: &str) -> Value {
    let response = app.get(path, &app.staff_token()).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn set_status(app: &TestApp, customer: &str, status: &str) {
    let path = format!("/api/communications/conversation/{customer}/status");
    let response = app
        .post_json(&path, &app.staff_token(), &json!({ "status": status }))
        .await;
    assert_eq!(response.status(), 202);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = get_ok(app, &path).await;
        if now["status"] == status {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits median and p90 as JSON numbers, or null.
fn waits(answered: i64, median: Option<f64>, p90: Option<f64>, unanswered: i64) -> Value {
    json!({
        "answered": answered, "median": median, "p90": p90, "unanswered": unanswered,
        "closed_unanswered": 0,
    })
}

/// The day: `t` is 09:00 UTC a week ago. Returns the id of staff-1's answer to A
/// (marked read later) for the test to use.
async fn write_the_day(app: &TestApp, t: DateTime<Utc>) -> String {
    let s = Duration::seconds;
    // A (in-app): opens at t, writes again at +60; an internal note at +30 answers
    // nothing; staff-1 answers at +300 (and later edits it); a call at +3000.
    insert(app, from_customer("cust-a", "inapp", t)).await;
    let note = Message {
        internal: true,
        ..answer("cust-a", "inapp", "staff-1", "staff", t + s(30))
    };
    insert(app, note).await;
    insert(app, from_customer("cust-a", "inapp", t + s(60))).await;
    let to_a = insert(
        app,
        answer("cust-a", "inapp", "staff-1", "staff", t + s(300)),
    )
    .await;
    insert(app, from_customer("cust-a", "phone", t + s(3000))).await;
    // B (SMS): opens at t; the system's own text at +10 answers nothing; crew-7 answers
    // at +120; B writes at +1000, staff-2 answers in-app at +1600.
    insert(app, from_customer("cust-b", "sms", t)).await;
    insert(
        app,
        answer("cust-b", "sms", "dispatch", "system", t + s(10)),
    )
    .await;
    insert(app, answer("cust-b", "sms", "crew-7", "crew", t + s(120))).await;
    insert(app, from_customer("cust-b", "sms", t + s(1000))).await;
    insert(
        app,
        answer("cust-b", "inapp", "staff-2", "staff", t + s(1600)),
    )
    .await;
    // C (email): opens at t; staff-2 answers in-app at +100 but deletes it; staff-1's
    // email at +900 is the answer that counts.
    insert(app, from_customer("cust-c", "email", t)).await;
    let deleted = insert(
        app,
        answer("cust-c", "inapp", "staff-2", "staff", t + s(100)),
    )
    .await;
    insert(
        app,
        answer("cust-c", "email", "staff-1", "staff", t + s(900)),
    )
    .await;
    let staff2 = app.token("staff-2", Role::Staff, None);
    assert_eq!(app.delete_message(&staff2, &deleted).await.status(), 200);
    // D: writes at +50 and deletes it: counted nowhere (but D's conversation began).
    let from_d = Message {
        sender: "user-of-cust-d",
        ..from_customer("cust-d", "inapp", t + s(50))
    };
    let from_d = insert(app, from_d).await;
    let d = app.customer_token("cust-d");
    assert_eq!(app.delete_message(&d, &from_d).await.status(), 200);
    // The edit changes no figure.
    let staff1 = app.staff_token();
    assert_eq!(
        app.edit_message(&staff1, &to_a, "edited").await.status(),
        200
    );
    // Staff close A's conversation; A writes at +7200, reopening it, and waits.
    set_status(app, "cust-a", "closed").await;
    insert(app, from_customer("cust-a", "inapp", t + s(7200))).await;
    to_a
}

#[tokio::test(flavor = "multi_thread")]
async fn figures_match_a_day_worked_out_by_hand() {
    let app = spawn_app().await;
    let day = (Utc::now() - Duration::days(7))
        .duration_trunc(Duration::days(1))
        .unwrap();
    let t = day + Duration::hours(9);
    let to_a = write_the_day(&app, t).await;
    let date = day.format("%Y-%m-%d");

    let summary = get_ok(&app, &format!("/api/analytics/summary?from={date}")).await;
    assert_eq!(summary["inbound"], 7, "{summary}");
    assert_eq!(summary["outbound"], 5);
    // Waits: A 300 and 240, B 120 and 600, C 900; A's last unanswered.
    assert_eq!(
        summary["response_seconds"],
        waits(5, Some(300.0), Some(780.0), 1)
    );
    // Openings: A (300), B (120), C (900), and A's reopening (unanswered).
    assert_eq!(
        summary["first_response_seconds"],
        waits(3, Some(300.0), Some(780.0), 1)
    );
    let bands: Vec<(Value, i64)> = summary["first_response_distribution"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["under_seconds"].clone(), b["answered"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        bands,
        [
            (json!(60), 0),
            (json!(300), 1),
            (json!(900), 1),
            (json!(3600), 1),
            (json!(14400), 0),
            (json!(86400), 0),
            (Value::Null, 0)
        ]
    );
    assert_eq!(
        summary["conversations"],
        json!({ "opened": 4, "closed": 1, "archived": 0, "reopened": 1 })
    );
    assert_eq!(
        summary["read_rate"],
        json!({ "outbound": 5, "read": 0, "rate": 0.0 })
    );
    let inapp = &summary["channels"]["inapp"];
    assert_eq!(
        (inapp["inbound"].as_i64(), inapp["outbound"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        inapp["response_seconds"],
        waits(2, Some(270.0), Some(294.0), 1)
    );
    assert_eq!(
        inapp["first_response_seconds"],
        waits(1, Some(300.0), Some(300.0), 1)
    );
    let sms = &summary["channels"]["sms"];
    assert_eq!(
        sms["response_seconds"],
        waits(2, Some(360.0), Some(552.0), 0)
    );
    assert_eq!(
        sms["first_response_seconds"],
        waits(1, Some(120.0), Some(120.0), 0)
    );
    assert_eq!(sms["outbound"], 2);
    let email = &summary["channels"]["email"];
    assert_eq!(
        email["response_seconds"],
        waits(1, Some(900.0), Some(900.0), 0)
    );
    let phone = &summary["channels"]["phone"];
    assert_eq!(
        (phone["inbound"].as_i64(), phone["outbound"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(phone["response_seconds"], waits(0, None, None, 0));

    // One channel only.
    let only = get_ok(
        &app,
        &format!("/api/analytics/summary?from={date}&channel=sms"),
    )
    .await;
    assert_eq!(only["inbound"], 2);
    assert_eq!(only["response_seconds"], sms["response_seconds"]);
    assert_eq!(
        only["channels"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["sms"]
    );

    // Per staff member: whoever answered.
    let groups = get_ok(
        &app,
        &format!("/api/analytics/response-times?from={date}&group_by=staff"),
    )
    .await;
    let groups = groups["groups"].as_array().unwrap();
    let keys: Vec<&str> = groups.iter().map(|g| g["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["staff-1", "crew-7", "staff-2"]);
    assert_eq!(groups[0]["messages"], 3);
    assert_eq!(
        groups[0]["response_seconds"],
        waits(3, Some(300.0), Some(780.0), 0)
    );
    assert_eq!(
        groups[0]["first_response_seconds"],
        waits(2, Some(600.0), Some(840.0), 0)
    );
    assert_eq!(
        groups[1]["response_seconds"],
        waits(1, Some(120.0), Some(120.0), 0)
    );
    assert_eq!(groups[2]["first_response_seconds"], waits(0, None, None, 0));
    // Per customer: A's unanswered message is A's.
    let groups = get_ok(
        &app,
        &format!("/api/analytics/response-times?from={date}&group_by=customer&limit=1"),
    )
    .await;
    assert_eq!(groups["groups"].as_array().unwrap().len(), 1);
    assert_eq!(groups["groups"][0]["key"], "cust-a");
    assert_eq!(
        groups["groups"][0]["response_seconds"],
        waits(2, Some(270.0), Some(294.0), 1)
    );

    // Volume by hour: everything but A's last message is in t's hour.
    let from = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (t + Duration::hours(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let volume = get_ok(
        &app,
        &format!("/api/analytics/volume?from={from}&to={to}&bucket=hour"),
    )
    .await;
    let counts: Vec<(i64, i64)> = volume["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["inbound"].as_i64().unwrap(),
                p["outbound"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [(6, 5), (0, 0), (1, 0)]);
    assert_eq!(volume["points"][0]["start"], from.as_str());
    // By day on Kiritimati's clock (UTC+14): t is 23:00 there, A's last message the
    // next day. Empty days around it are present.
    let (before, after) = (
        (day - Duration::days(1)).format("%Y-%m-%d"),
        (day + Duration::days(2)).format("%Y-%m-%d"),
    );
    let volume = get_ok(
        &app,
        &format!(
            "/api/analytics/volume?from={before}&to={after}&bucket=day&tz=Pacific/Kiritimati&direction=inbound"
        ),
    )
    .await;
    let points = volume["points"].as_array().unwrap();
    let totals: Vec<i64> = points
        .iter()
        .map(|p| p["total"].as_i64().unwrap())
        .collect();
    assert_eq!(totals, [0, 6, 1, 0], "{volume}");
    assert_eq!(points[1]["local"], format!("{date}T00:00:00"));
    assert!(points.iter().all(|p| p["outbound"] == 0));

    // The read receipt arrives late: the read rate follows.
    let a = app.customer_token("cust-a");
    app.mark_read(&a, &to_a).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let summary = get_ok(&app, &format!("/api/analytics/summary?from={date}")).await;
        if summary["read_rate"]["read"] == 1 {
            assert_eq!(summary["read_rate"]["rate"], 0.2);
            assert_eq!(summary["channels"]["inapp"]["read_rate"]["rate"], 0.5);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{summary}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_through_the_api_are_answered_and_reopened_as_they_happen() {
    let app = spawn_app().await;
    let customer = app.customer_token("cust-9");
    app.send_ok(&customer, "cust-9", "Is the crew coming today?")
        .await;
    let before: Value = get_ok(&app, "/api/analytics/summary").await;
    assert_eq!(before["response_seconds"]["unanswered"], 1, "{before}");
    assert_eq!(before["first_response_seconds"]["unanswered"], 1);

    app.send_ok(&app.staff_token(), "cust-9", "Yes, at 2pm")
        .await;
    let after: Value = get_ok(&app, "/api/analytics/summary").await;
    assert_eq!(after["response_seconds"]["answered"], 1, "{after}");
    assert_eq!(after["response_seconds"]["unanswered"], 0);
    let seconds = after["response_seconds"]["median"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&seconds), "{after}");
    let staff = app
        .get(
            "/api/analytics/response-times?group_by=staff",
            &app.staff_token(),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(staff["groups"][0]["key"], "staff-1");

    // The customer's "thanks" waits until staff close the conversation; then it waits
    // no more, and a later answer is not its answer.
    app.send_ok(&customer, "cust-9", "Thanks!").await;
    let thanked = get_ok(&app, "/api/analytics/summary").await;
    assert_eq!(thanked["response_seconds"]["unanswered"], 1, "{thanked}");
    set_status(&app, "cust-9", "closed").await;
    let closed = get_ok(&app, "/api/analytics/summary").await;
    assert_eq!(closed["response_seconds"]["unanswered"], 0, "{closed}");
    assert_eq!(closed["response_seconds"]["closed_unanswered"], 1);
    assert_eq!(closed["response_seconds"]["answered"], 1);

    // Closed, then the customer writes: open again, and a new first response waits.
    let mut staff_ws = app.ws("staff-1", &app.staff_token()).await;
    app.send_ok(&customer, "cust-9", "One more thing").await;
    // The close's own frame may reach this new connection first (its event can be
    // published just after the connection subscribed): the reopening is the next.
    let frame = loop {
        let frame = staff_ws
            .next_of_type("conversation.status", WAIT)
            .await
            .unwrap();
        if frame["status"] != "closed" {
            break frame;
        }
    };
    assert_eq!(frame["customer_id"], "cust-9");
    assert_eq!(frame["status"], "open");
    assert_eq!(frame["updated_by"], "user-of-cust-9");
    let status = get_ok(&app, "/api/communications/conversation/cust-9/status").await;
    assert_eq!(status["status"], "open");
    let reopened: Value = get_ok(&app, "/api/analytics/summary").await;
    assert_eq!(
        reopened["conversations"],
        json!({ "opened": 1, "closed": 1, "archived": 0, "reopened": 1 })
    );
    assert_eq!(reopened["first_response_seconds"]["unanswered"], 1);
    assert_eq!(reopened["first_response_seconds"]["answered"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_staff_and_operators_see_analytics() {
    let app = spawn_app().await;
    for path in [
        "/api/analytics/summary",
        "/api/analytics/volume",
        "/api/analytics/response-times",
    ] {
        for (token, status) in [
            (app.staff_token(), 200),
            (app.token("ops-1", Role::Operator, None), 200),
            (app.customer_token("cust-1"), 403),
            (app.token("crew-1", Role::Crew, None), 403),
        ] {
            let response = app.get(path, &token).await;
            assert_eq!(response.status(), status, "{path}");
        }
        let anonymous = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ranges_and_parameters_are_refused_by_name() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    for (query, names) in [
        (
            "summary?from=2026-12-10&to=2026-12-01",
            "to: the range ends",
        ),
        (
            "summary?from=2024-01-01&to=2025-12-31",
            "from: the range spans 731 days",
        ),
        (
            "summary?from=yesterday",
            "from: \"yesterday\" is not an ISO date",
        ),
        (
            "summary?to=2026-02-30",
            "to: \"2026-02-30\" is not an ISO date",
        ),
        (
            "summary?tz=Mars/Olympus",
            "tz: \"Mars/Olympus\" is not a time zone",
        ),
        (
            "summary?channel=fax",
            "channel: type must be inapp, sms, email or phone",
        ),
        ("summary?bucket=day", "bucket: summary does not take it"),
        ("summary?colour=red", "unknown field `colour`"),
        (
            "volume?bucket=month",
            "bucket: bucket must be hour, day or week",
        ),
        ("volume?direction=sideways", "direction:"),
        (
            "response-times?group_by=crew",
            "group_by: group_by must be staff, channel or customer",
        ),
        (
            "response-times?limit=0",
            "limit must be a whole number from 1 to 1000",
        ),
        (
            "response-times?limit=ten",
            "limit must be a whole number from 1 to 1000",
        ),
    ] {
        let response = app.get(&format!("/api/analytics/{query}"), &staff).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{query}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{query}: {message}");
    }
    // A date's whole day is in the range; a range of exactly 400 days is fine.
    let day = app
        .get(
            "/api/analytics/summary?from=2026-01-01&to=2026-01-01",
            &staff,
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(day["from"], "2026-01-01T00:00:00Z");
    assert_eq!(day["to"], "2026-01-02T00:00:00Z");
    let local = app
        .get(
            "/api/analytics/summary?from=2026-01-01&to=2026-01-01&tz=America/Chicago",
            &staff,
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(local["from"], "2026-01-01T06:00:00Z");
    let longest = app
        .get(
            "/api/analytics/summary?from=2025-01-01T00:00:00Z&to=2026-02-05T00:00:00Z",
            &staff,
        )
        .await;
    assert_eq!(longest.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_read_the_charts_in_the_browser_and_the_range_picker_redraws_them() {
    let app = spawn_app().await;
    let first_day = (Utc::now() - Duration::days(6))
        .duration_trunc(Duration::days(1))
        .unwrap();
    // Inbound per day over five days, each answered ten minutes later: staff-1 the
    // first four, staff-2 the other two.
    let inbound = [2, 0, 3, 1, 0];
    let mut n = 0;
    for (day, count) in inbound.iter().enumerate() {
        for i in 0..*count {
            let at = first_day + Duration::days(day as i64) + Duration::hours(10 + i);
            let customer = format!("cust-{n}");
            insert(&app, from_customer(&customer, "sms", at)).await;
            let staff = if n < 4 { "staff-1" } else { "staff-2" };
            let reply = answer(&customer, "sms", staff, "staff", at + Duration::minutes(10));
            insert(&app, reply).await;
            n += 1;
        }
    }
    let day = |d: i64| {
        (first_day + Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    let stdout = crate::browser::run_spec(
        "analytics.spec.mjs",
        &[
            ("CONSOLE_URL", app.base_url.clone()),
            ("STAFF_TOKEN", app.staff_token()),
            ("FROM", day(0)),
            ("TO", day(4)),
            ("SHORT_TO", day(2)),
            ("INBOUND", inbound.map(|n| n.to_string()).join(",")),
            ("STAFF", "staff-1,staff-2".to_owned()),
        ],
        std::time::Duration::from_secs(120),
    )
    .await;
    assert!(stdout.contains("5 days drawn, then 3"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_last_hour_counts_what_the_ledger_finished_and_samples_the_queues() {
    let app = spawn_app().await;
    let operator = app.token("ops-1", Role::Operator, None);
    for i in 0..3 {
        app.send_job_ok(&app.staff_token(), "cust-1", &format!("hello {i}"))
            .await;
    }
    crate::console::dead_sms(&app, "cust-2", 1).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let activity = loop {
        let response = app.get("/api/ops/activity?minutes=5", &operator).await;
        assert_eq!(response.status(), 200);
        let activity: Value = response.json().await.unwrap();
        let sum = |field: &str| {
            activity["minutes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m[field].as_i64().unwrap())
                .sum::<i64>()
        };
        let ledger: (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'dead')
             FROM jobs",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let has_depths = !activity["queues"].as_array().unwrap().is_empty();
        if (sum("succeeded"), sum("dead")) == ledger && ledger.0 >= 3 && ledger.1 == 1 && has_depths
        {
            break activity;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{activity} vs the ledger {ledger:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let minutes = activity["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 5);
    let last: DateTime<Utc> = minutes[4]["at"].as_str().unwrap().parse().unwrap();
    assert!(Utc::now() - last < Duration::seconds(61), "{last}");
    for queue in activity["queues"].as_array().unwrap() {
        assert_eq!(queue["depths"].as_array().unwrap().len(), 5, "{queue}");
    }
    let names: Vec<&str> = activity["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".jobs.sms.send")),
        "{names:?}"
    );

    // Operators only; the window is bounded.
    let staff = app.get("/api/ops/activity", &app.staff_token()).await;
    assert_eq!(staff.status(), 403);
    for bad in ["0", "1441", "an-hour"] {
        let response = app
            .get(&format!("/api/ops/activity?minutes={bad}"), &operator)
            .await;
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("minutes: must be 1 to 1440"),
            "{body}"
        );
    }
}
