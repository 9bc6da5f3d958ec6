//! `GET /api/communications`: newest first, filtered, cursor-paginated.

use commcenter_tests::spawn_app;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn pages_walk_newest_first_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    for i in 0..7 {
        assert_eq!(
            app.send_message(&staff, "cust-1", &format!("message {i}"))
                .await
                .status(),
            202
        );
    }
    assert_eq!(
        app.send_message(&staff, "cust-2", "elsewhere")
            .await
            .status(),
        202
    );

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/communications?customer_id=cust-1&limit=3&cursor={c}"),
            None => "/api/communications?customer_id=cust-1&limit=3".to_owned(),
        };
        let page: Value = app.get(&path, &staff).await.json().await.unwrap();
        for c in page["communications"].as_array().unwrap() {
            assert_eq!(c["customer_id"], "cust-1");
            seen.push(c["message"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("message {i}")).collect();
    assert_eq!(seen, expected);

    // Staff without a filter see every customer; a type filter narrows.
    let all: Value = app
        .get("/api/communications", &staff)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["communications"].as_array().unwrap().len(), 8);
    let in_app: Value = app
        .get("/api/communications?type=in_app", &staff)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(in_app["communications"].as_array().unwrap().len(), 8);
    let sms: Value = app
        .get("/api/communications?type=sms", &staff)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sms["communications"].as_array().unwrap().len(), 0);

    // A customer sees their own conversation only.
    let mine: Value = app
        .get("/api/communications", &app.customer_token("cust-2"))
        .await
        .json()
        .await
        .unwrap();
    let mine = mine["communications"].as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["message"], "elsewhere");
}
