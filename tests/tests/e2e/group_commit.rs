//! Group commit of plain sends (`api/src/group_commit.rs`): concurrent sends share a
//! transaction, each is answered with its own record, and a send that cannot be
//! written fails alone.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use axum::response::IntoResponse;
use commcenter_api::{error::ApiError, group_commit};
use commcenter_shared::domain::{
    CustomerId, Direction, Visibility,
    communications::{Channel, Composed, Outbound, Sender, outbound},
};
use commcenter_tests::spawn_app;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_sends_share_commits_and_each_gets_its_own_answer() {
    let app = spawn_app().await;
    let token = app.staff_token();
    const SENDS: usize = 64;
    let answers = futures_util::future::join_all((0..SENDS).map(|n| {
        let (app, token) = (&app, token.clone());
        async move {
            let response = app
                .post_json(
                    "/api/messages/send",
                    &token,
                    &json!({ "customer_id": format!("cust-{}", n % 4), "message": format!("group {n}") }),
                )
                .await;
            assert_eq!(response.status(), 202);
            (n, response.json::<Value>().await.unwrap())
        }
    }))
    .await;
    let mut ids = BTreeSet::new();
    for (n, answer) in &answers {
        assert_eq!(answer["message"], format!("group {n}"), "its own record");
        assert_eq!(answer["customer_id"], format!("cust-{}", n % 4));
        assert_eq!(answer["status"], "sent", "its commit delivered it");
        assert!(answer["job_id"].is_null());
        ids.insert(answer["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), SENDS);
    assert_eq!(
        app.count_events("message.new").await,
        SENDS as i64,
        "each announced once, by its commit"
    );
    let (rows, transactions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT xmin::text) FROM communications WHERE message LIKE 'group %'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, SENDS as i64);
    assert!(
        transactions < SENDS as i64,
        "{SENDS} concurrent sends took {transactions} transactions"
    );
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_that_cannot_be_written_fails_alone_and_its_batch_is_written() {
    let app = spawn_app().await;
    let texts = texts(5);
    // The third names a project that does not exist: its insert fails.
    let sends = plain_sends(&texts, Some(2));
    let recorded = group_commit::write_batch(&app.pool, &sends).await;
    let outcomes: Vec<bool> = recorded.iter().map(Result::is_ok).collect();
    assert_eq!(outcomes, vec![true, true, false, true, true]);
    let error = recorded[2].as_ref().unwrap_err().to_string();
    assert!(error.contains("foreign key"), "{error}");
    for (n, recorded) in recorded.iter().enumerate().filter(|(n, _)| *n != 2) {
        let (communication, _) = recorded.as_ref().unwrap();
        assert_eq!(communication.message, format!("batch {n}"));
    }
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.message,
                (SELECT count(*) FROM (SELECT payload FROM event_outbox
                                       UNION ALL SELECT payload FROM event_log) e
                 WHERE e.payload->>'communication_id' = c.id::text
                   AND e.payload->>'type' = 'message.new')
         FROM communications c ORDER BY c.message",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expected: Vec<(String, i64)> = [0, 1, 3, 4]
        .iter()
        .map(|n| (format!("batch {n}"), 1))
        .collect();
    assert_eq!(
        stored, expected,
        "the others are written, each with its message.new"
    );
    assert_eq!(
        app.count_events("message.new").await,
        4,
        "none for the one that failed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_answers_every_send_of_the_batch_as_unavailable() {
    // Nothing listens on port 1: every connection is refused.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://root@127.0.0.1:1/nowhere")
        .unwrap();
    let texts = texts(5);
    let recorded = group_commit::write_batch(&pool, &plain_sends(&texts, None)).await;
    assert_eq!(recorded.len(), 5);
    for outcome in recorded {
        let error = outcome.expect_err("nothing can be written");
        let status = ApiError::from(error).into_response().status();
        assert_eq!(status, 503, "each send is told to come back");
    }
}

fn texts(n: usize) -> Vec<Composed> {
    (0..n)
        .map(|n| Composed::text(format!("batch {n}")))
        .collect()
}

/// One plain in-app send per text to cust-1; the `bad` one names a missing project.
fn plain_sends(texts: &[Composed], bad: Option<usize>) -> Vec<outbound::Prepared> {
    static CUSTOMER: std::sync::LazyLock<CustomerId> =
        std::sync::LazyLock::new(|| CustomerId::parse("cust-1").unwrap());
    texts
        .iter()
        .enumerate()
        .map(|(n, composed)| {
            let send = Outbound {
                customer_id: &CUSTOMER,
                sender: Sender::system("test"),
                direction: Direction::Outbound,
                visibility: Visibility::Public,
                project_id: (Some(n) == bad).then(uuid::Uuid::now_v7),
                composed,
                attachments: json!([]),
                metadata: Map::new(),
                channel: Channel::InApp,
                customer_addresses: false,
            };
            outbound::prepare(&send, 3)
        })
        .collect()
}
