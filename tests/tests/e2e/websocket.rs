//! The live feed: authenticated per user, several connections each, heartbeats, and a
//! slow client that is cut off without slowing the others.

use std::time::Duration;

use commcenter_shared::{
    domain::{CommunicationStatus, CustomerId},
    ledger::events::{Event, EventBody},
};
use commcenter_tests::{TestOptions, WsClient, spawn_app, spawn_app_with};
use lapin::{BasicProperties, options::BasicPublishOptions};
use serde_json::Value;

use crate::WAIT;

#[tokio::test(flavor = "multi_thread")]
async fn a_token_must_be_present_valid_and_the_users_own() {
    let app = spawn_app().await;
    let token = app.staff_token();
    let url = |user: &str, token: &str| format!("ws://{}/api/ws/{user}?token={token}", app.addr);
    assert!(
        WsClient::connect(&url("staff-1", "")).await.is_err(),
        "an empty token is refused"
    );
    assert!(
        WsClient::connect(&url("staff-1", "forged.token.here"))
            .await
            .is_err()
    );
    assert!(
        WsClient::connect(&url("someone-else", &token))
            .await
            .is_err(),
        "another user's feed is refused"
    );
    let plain = app
        .client
        .get(app.url("/api/ws/staff-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401, "no token: 401 before any upgrade");
    let wrong_user = app
        .client
        .get(app.url(&format!("/api/ws/someone-else?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_user.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_connection_of_a_user_gets_the_event() {
    let app = spawn_app().await;
    let customer = app.customer_token("cust-1");
    let mut phone = app.ws("user-of-cust-1", &customer).await;
    let mut laptop = app.ws("user-of-cust-1", &customer).await;
    assert_eq!(
        app.send_message(&app.staff_token(), "cust-1", "to both")
            .await
            .status(),
        202
    );
    for ws in [&mut phone, &mut laptop] {
        let frame = ws
            .next_of_type("message.new", WAIT)
            .await
            .expect("each connection gets it");
        assert_eq!(frame["message"], "to both");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_is_dropped_after_two_missed_heartbeats() {
    let app = spawn_app_with(TestOptions {
        ws_ping: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let staff = app.staff_token();
    // This client never reads, so it never answers a ping.
    let _silent = app
        .ws(
            "staff-silent",
            &app.token("staff-silent", commcenter_shared::domain::Role::Staff, None),
        )
        .await;
    let online = || async {
        let body: Value = app
            .get("/api/communications/online-users", &staff)
            .await
            .json()
            .await
            .unwrap();
        body["online_users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user_id"] == "staff-silent")
    };
    assert!(online().await);
    commcenter_tests::eventually("the silent client to be dropped", WAIT, || async {
        (!online().await).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_cut_off_and_the_others_get_everything() {
    let app = spawn_app_with(TestOptions {
        ws_buffer: 256,
        ..Default::default()
    })
    .await;
    let staff = app.staff_token();
    let _stalled = app
        .ws(
            "staff-stalled",
            &app.token(
                "staff-stalled",
                commcenter_shared::domain::Role::Staff,
                None,
            ),
        )
        .await;
    let mut reader = app.ws("staff-1", &staff).await;

    // A flood of large events, straight onto the events exchange: far more than the
    // stalled client's socket buffers and its 256-frame queue can hold.
    let (connection, channel) = app.broker_channel().await;
    let exchange = app.topology.events_exchange();
    let total = 2_000;
    let publisher = tokio::spawn(async move {
        let padding = "x".repeat(8 * 1024);
        for i in 0..total {
            let event = Event::now(
                CustomerId::parse("cust-1").unwrap(),
                EventBody::CommunicationStatus {
                    communication_id: uuid::Uuid::new_v4(),
                    status: CommunicationStatus::Sent,
                    previous: CommunicationStatus::Queued,
                    reason: Some(format!("{i} {padding}")),
                },
            );
            if i % 10 == 9 {
                // Paced so a client that reads keeps up (about 4 MB/s, even on a machine
                // busy with other tests); the stalled one falls further behind.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(&event).unwrap(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
        }
        connection.close(200, "bye".into()).await.ok();
    });

    let mut received = 0;
    while received < total {
        let frame = reader
            .next_json(WAIT)
            .await
            .unwrap_or_else(|| panic!("the reading client stopped receiving after {received}"));
        if frame["type"] == "communication.status" {
            received += 1;
        }
    }
    publisher.await.unwrap();
    let online: Value = app
        .get("/api/communications/online-users", &staff)
        .await
        .json()
        .await
        .unwrap();
    let users: Vec<&str> = online["online_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert!(
        !users.contains(&"staff-stalled"),
        "the stalled client was disconnected: {users:?}"
    );
    assert!(users.contains(&"staff-1"));
}
