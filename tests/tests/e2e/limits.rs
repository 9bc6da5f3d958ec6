//! Rate limits: per user and route group, and per address without a valid token; a
//! refusal is 429 in our JSON shape with `Retry-After`, and writes nothing.

use std::time::Duration;

use commcenter_shared::settings::{Rate, RateLimits};
use commcenter_tests::{TestOptions, spawn_app_with};
use serde_json::{Value, json};

fn per_minute(count: u32) -> Option<Rate> {
    Some(Rate {
        count,
        per: Duration::from_secs(60),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_over_the_send_limit_gets_429_and_nothing_is_written() {
    let app = spawn_app_with(TestOptions {
        rate_limits: RateLimits {
            sends: per_minute(3),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let alice = app.customer_token("cust-1");
    let mut remaining = Vec::new();
    for n in 0..3 {
        let response = app
            .send_message(&alice, "cust-1", &format!("message {n}"))
            .await;
        assert_eq!(response.status(), 202);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        remaining.push(
            response.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);

    let refused = app.send_message(&alice, "cust-1", "one too many").await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "too_many_requests");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sends")
    );

    // Reading is not limited, and shows three messages: the refused one was not written.
    let listed: Value = app
        .get("/api/communications?customer_id=cust-1", &app.staff_token())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["communications"].as_array().unwrap().len(), 3);
    // Another user has a bucket of their own.
    let staff = app
        .send_message(&app.staff_token(), "cust-1", "staff may still write")
        .await;
    assert_eq!(staff.status(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_valid_token_are_limited_per_address() {
    let app = spawn_app_with(TestOptions {
        rate_limits: RateLimits {
            anonymous: per_minute(2),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let statuses: Vec<u16> = futures_util::future::join_all((0..4).map(|_| async {
        app.post_json("/api/messages/send", "forged.token.here", &json!({}))
            .await
            .status()
            .as_u16()
    }))
    .await;
    let mut sorted = statuses.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [401, 401, 429, 429], "{statuses:?}");
    // A valid token is not counted against the address, nor are probes.
    assert_eq!(
        app.get("/api/communications/conversations", &app.staff_token())
            .await
            .status(),
        200
    );
    for _ in 0..3 {
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
    }
}
