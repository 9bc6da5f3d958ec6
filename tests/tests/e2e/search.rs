//! `POST /api/communications/search`: web-search syntax, stemming, file names,
//! highlights, filters, cursor pages, tenants, and the refusals.

use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, spawn_app};
use serde_json::{Value, json};

async fn found(app: &TestApp, token: &str, body: Value) -> Vec<Value> {
    let response = app.search(token, &body).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}: {answer}");
    answer["communications"].as_array().unwrap().clone()
}

fn texts(rows: &[Value]) -> Vec<String> {
    let mut texts: Vec<String> = rows
        .iter()
        .map(|r| r["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    texts.sort();
    texts
}

async fn refused(app: &TestApp, token: &str, body: Value, status: u16, names: &str) {
    let response = app.search(token, &body).await;
    assert_eq!(response.status(), status, "{body}");
    let answer: Value = response.json().await.unwrap();
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains(names), "{body}: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn words_phrases_exclusions_or_and_stems_find_the_right_messages() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    for text in [
        "Your invoice for the new roof is attached",
        "The roof is new and the gutters too",
        "Invoices are sent monthly",
        "Quote for gutter cleaning",
        "Nothing to see here",
    ] {
        app.send_ok(&staff, "cust-1", text).await;
    }
    let search = |query: &str| found(&app, &staff, json!({ "query": query }));
    // Stemming: "invoices" and "invoice" are one word.
    assert_eq!(
        texts(&search("invoice").await),
        [
            "Invoices are sent monthly",
            "Your invoice for the new roof is attached"
        ]
    );
    // Two words: both.
    assert_eq!(texts(&search("new roof").await).len(), 2);
    // A phrase: in that order.
    assert_eq!(
        texts(&search("\"new roof\"").await),
        ["Your invoice for the new roof is attached"]
    );
    // An exclusion.
    assert_eq!(
        texts(&search("roof -invoice").await),
        ["The roof is new and the gutters too"]
    );
    // OR.
    assert_eq!(texts(&search("quote OR monthly").await).len(), 2);
    // Case does not matter.
    assert_eq!(texts(&search("INVOICE").await).len(), 2);
    assert!(search("plumbing").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn part_of_a_file_name_finds_its_message_and_highlights_are_escaped() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let uploaded: Value = app
        .upload_file(
            &staff,
            "cust-1",
            b"%PDF-1.4\n%\xe2\xe3\n".to_vec(),
            "roof-estimate.pdf",
            false,
        )
        .await
        .json()
        .await
        .unwrap();
    let file_id = uploaded["files"][0]["file_id"].as_str().unwrap().to_owned();
    let sent: Value = app
        .post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-1", "message": "See attached", "attachments": [file_id] }),
        )
        .await
        .json()
        .await
        .unwrap();
    for query in ["roof-estimate", "estimate", "roof-estimate.pdf"] {
        let rows = found(&app, &staff, json!({ "query": query })).await;
        assert_eq!(rows.len(), 1, "{query}");
        assert_eq!(rows[0]["id"], sent["id"]);
    }

    app.send_ok(&staff, "cust-1", "<script>alert('invoice')</script> & more")
        .await;
    let rows = found(&app, &staff, json!({ "query": "invoice" })).await;
    let highlight = rows[0]["highlight"].as_str().unwrap();
    assert!(!highlight.contains("<script>"), "{highlight}");
    assert!(highlight.contains("&lt;/script&gt;"), "{highlight}");
    assert!(highlight.contains("<mark>invoice</mark>"), "{highlight}");
    assert!(highlight.contains("&amp;"), "{highlight}");
}

#[tokio::test(flavor = "multi_thread")]
async fn customers_find_only_their_own_and_staff_find_everything() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    app.send_ok(&staff, "cust-1", "invoice for cust one").await;
    app.send_ok(&staff, "cust-2", "invoice for cust two").await;
    let one = app.customer_token("cust-1");
    let rows = found(&app, &one, json!({ "query": "invoice" })).await;
    assert_eq!(texts(&rows), ["invoice for cust one"]);
    refused(
        &app,
        &one,
        json!({ "query": "invoice", "customer_id": "cust-2" }),
        404,
        "cust-2",
    )
    .await;
    assert_eq!(
        found(&app, &staff, json!({ "query": "invoice" }))
            .await
            .len(),
        2
    );
    let rows = found(
        &app,
        &staff,
        json!({ "query": "invoice", "customer_id": "cust-2" }),
    )
    .await;
    assert_eq!(texts(&rows), ["invoice for cust two"]);
    let crew = app.token("crew-1", Role::Crew, None);
    refused(&app, &crew, json!({ "query": "invoice" }), 403, "crew").await;
    let response = app
        .client
        .post(app.url("/api/communications/search"))
        .json(&json!({ "query": "invoice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_narrow_and_cursor_pages_cover_every_match_once() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let customer = app.customer_token("cust-1");
    let mut ids = Vec::new();
    for i in 0..7 {
        let sent = app
            .send_ok(&staff, "cust-1", &format!("schedule update {i}"))
            .await;
        ids.push(sent["id"].as_str().unwrap().to_owned());
    }
    app.send_ok(&customer, "cust-1", "schedule question").await;

    let inbound = found(
        &app,
        &staff,
        json!({ "query": "schedule", "direction": "inbound" }),
    )
    .await;
    assert_eq!(texts(&inbound), ["schedule question"]);
    assert_eq!(
        found(&app, &staff, json!({ "query": "schedule", "type": "sms" }))
            .await
            .len(),
        0
    );
    assert_eq!(
        found(
            &app,
            &staff,
            json!({ "query": "schedule", "type": "in_app" })
        )
        .await
        .len(),
        8
    );
    assert_eq!(
        found(
            &app,
            &staff,
            json!({ "query": "schedule", "has_attachments": true })
        )
        .await
        .len(),
        0
    );
    let today = chrono::Utc::now().date_naive();
    let tomorrow = today.succ_opt().unwrap();
    assert_eq!(
        found(
            &app,
            &staff,
            json!({ "query": "schedule", "from": today.to_string(), "to": today.to_string() })
        )
        .await
        .len(),
        8
    );
    assert_eq!(
        found(
            &app,
            &staff,
            json!({ "query": "schedule", "from": tomorrow.to_string() })
        )
        .await
        .len(),
        0
    );

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({ "query": "schedule update", "limit": 3 });
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let answer: Value = app.search(&staff, &body).await.json().await.unwrap();
        for row in answer["communications"].as_array().unwrap() {
            seen.push(row["id"].as_str().unwrap().to_owned());
        }
        match answer["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "every match once, across pages");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_searches_are_refused_naming_the_problem() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    for (body, names) in [
        (json!({ "query": "" }), "query"),
        (json!({ "query": "   " }), "query"),
        (json!({ "query": "x".repeat(501) }), "query"),
        (json!({ "query": "the and of" }), "no words"),
        (json!({ "query": "roof", "type": "fax" }), "type"),
        (
            json!({ "query": "roof", "direction": "sideways" }),
            "direction",
        ),
        (json!({ "query": "roof", "status": "lost" }), "status"),
        (json!({ "query": "roof", "from": "30/11/2026" }), "from"),
        (
            json!({ "query": "roof", "from": "2026-12-02", "to": "2026-12-01" }),
            "to",
        ),
        (json!({ "query": "roof", "limit": 0 }), "limit"),
        (json!({ "query": "roof", "limit": 101 }), "limit"),
        (json!({ "query": "roof", "cursor": "nope" }), "cursor"),
        (
            json!({ "query": "roof", "customer_id": "a/b" }),
            "customer_id",
        ),
    ] {
        refused(&app, &staff, body, 400, names).await;
    }
    // Unknown fields and a missing query are the body's problem.
    let response = app.search(&staff, &json!({ "q": "roof" })).await;
    assert_eq!(response.status(), 422);
}
