//! `GET /api/communications/conversations`: one row per conversation, newest activity
//! first, with its latest message and the caller's unread count.

use commcenter_shared::domain::Role;
use commcenter_tests::{TestApp, spawn_app};
use serde_json::Value;

async fn listing(app: &TestApp, token: &str, query: &str) -> Value {
    let response = app.conversations(token, query).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn rows(body: &Value) -> Vec<(String, i64)> {
    body["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["customer_id"].as_str().unwrap().to_owned(),
                c["unread_count"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_see_every_conversation_newest_first_with_what_they_have_not_read() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let one = app.customer_token("cust-1");
    let two = app.customer_token("cust-2");
    app.send_ok(&one, "cust-1", "first question").await;
    let second = app.send_ok(&one, "cust-1", "second question").await;
    app.send_ok(&staff, "cust-2", "hello two").await;
    app.send_ok(&two, "cust-2", "thanks").await;
    app.send_ok(&staff, "cust-3", "hello three").await;

    let body = listing(&app, &staff, "").await;
    assert_eq!(
        rows(&body),
        [
            ("cust-3".into(), 0),
            ("cust-2".into(), 1),
            ("cust-1".into(), 2)
        ]
    );
    let first = &body["conversations"][0];
    assert_eq!(first["status"], "open");
    assert_eq!(first["last_message"]["message"], "hello three");
    assert_eq!(first["last_message"]["type"], "inapp");
    assert_eq!(first["last_message"]["direction"], "outbound");

    // Reading one leaves one unread.
    let id = second["id"].as_str().unwrap();
    app.wait_for_status(id, "sent").await;
    app.mark_read(&staff, id).await;
    app.wait_for_status(id, "read").await;
    let body = listing(&app, &staff, "").await;
    assert_eq!(rows(&body)[2], ("cust-1".into(), 1));

    // A customer sees their own, counting what staff sent them and they have not read.
    assert_eq!(rows(&listing(&app, &two, "").await), [("cust-2".into(), 1)]);
    assert_eq!(rows(&listing(&app, &one, "").await), [("cust-1".into(), 0)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn filtered_by_status_and_paged_by_cursor() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    for i in 0..5 {
        app.send_ok(&staff, &format!("cust-{i}"), "hello").await;
    }
    let response = app
        .post_json(
            "/api/communications/conversation/cust-1/status",
            &staff,
            &serde_json::json!({ "status": "closed" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let mut closed = Vec::new();
    for _ in 0..100 {
        closed = rows(&listing(&app, &staff, "?status=closed").await);
        if !closed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(closed, [("cust-1".into(), 0)]);
    assert_eq!(rows(&listing(&app, &staff, "?status=open").await).len(), 4);

    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let body = listing(&app, &staff, &query).await;
        seen.extend(rows(&body).into_iter().map(|(c, _)| c));
        match body["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["cust-4", "cust-3", "cust-2", "cust-1", "cust-0"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_listings_are_refused_and_crews_see_none() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    for (query, names) in [
        ("?status=lost", "status"),
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?cursor=nope", "cursor"),
        ("?colour=red", "colour"),
    ] {
        let response = app.conversations(&staff, query).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains(names),
            "{query}: {body}"
        );
    }
    let crew = app.token("crew-1", Role::Crew, None);
    assert_eq!(app.conversations(&crew, "").await.status(), 403);
    let anonymous = app
        .client
        .get(app.url("/api/communications/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
