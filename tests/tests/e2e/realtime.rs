//! The WebSocket protocol across api instances: presence, typing, client frames and
//! their limits, recovery of missed events, and `message.new` with its attachments.

use std::time::Duration;

use commcenter_shared::{domain::Role, ledger::relay::Relay};
use commcenter_tests::{TestApp, TestOptions, WsClient, eventually, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::WAIT;

/// The `presence` frames for `user` among `frames`, as their statuses.
fn presence_of<'a>(frames: &'a [Value], user: &str) -> Vec<&'a str> {
    frames
        .iter()
        .filter(|f| f["type"] == "presence" && f["user_id"] == user)
        .map(|f| f["status"].as_str().unwrap_or_default())
        .collect()
}

async fn status_on(app: &TestApp, base: &str, token: &str, user: &str) -> String {
    let body: Value = app
        .client
        .get(format!("{base}/api/communications/user/{user}/status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["status"].as_str().unwrap().to_owned()
}

async fn online_on(app: &TestApp, base: &str, token: &str) -> Vec<String> {
    let body: Value = app
        .client
        .get(format!("{base}/api/communications/online-users"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["online_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The next `presence` frame about `user`.
async fn next_presence(ws: &mut WsClient, user: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = ws.next_of_type("presence", left).await?;
        if frame["user_id"] == user {
            return frame["status"].as_str().map(str::to_owned);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_is_the_same_on_every_instance_and_announced_to_those_allowed() {
    let app = spawn_app().await;
    let b = app.spawn_instance().await;
    let a_url = app.base_url.clone();
    let b_url = format!("http://{}", b.addr);
    let staff = app.staff_token();
    let bob = app.customer_token("cust-2");
    let mut staff_watch = app.ws("staff-1", &staff).await;
    let mut bob_watch = app.ws("user-of-cust-2", &bob).await;

    // Alice connects to B: online on A too, announced to staff, not to another customer.
    let alice = app.customer_token("cust-1");
    let alice_ws = b.ws("user-of-cust-1", &alice).await;
    assert_eq!(
        next_presence(&mut staff_watch, "user-of-cust-1")
            .await
            .as_deref(),
        Some("online")
    );
    for base in [&a_url, &b_url] {
        assert_eq!(
            status_on(&app, base, &staff, "user-of-cust-1").await,
            "online"
        );
        let online = online_on(&app, base, &staff).await;
        assert!(
            online.contains(&"user-of-cust-1".to_owned()),
            "{base}: {online:?}"
        );
    }
    // A customer sees support, never other customers, whichever way they ask.
    let seen_by_bob = online_on(&app, &a_url, &bob).await;
    assert!(
        seen_by_bob.contains(&"staff-1".to_owned()),
        "{seen_by_bob:?}"
    );
    assert!(
        !seen_by_bob.iter().any(|u| u.starts_with("user-of-")),
        "{seen_by_bob:?}"
    );
    // Asking about one user is for themselves and staff: a customer asking about
    // anyone else, customer or staff, is refused (the online users are their way).
    for about in ["user-of-cust-1", "staff-1"] {
        let asked = app
            .client
            .get(format!("{b_url}/api/communications/user/{about}/status"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        assert_eq!(asked.status(), 403, "{about}");
    }

    // Staff arriving on B is announced to the customer on A.
    let other_staff = app.token("staff-2", Role::Staff, None);
    let staff_two = b.ws("staff-2", &other_staff).await;
    assert_eq!(
        next_presence(&mut bob_watch, "staff-2").await.as_deref(),
        Some("online")
    );
    let frames = bob_watch.drain(Duration::from_millis(500)).await;
    assert!(
        presence_of(&frames, "user-of-cust-1").is_empty(),
        "{frames:?}"
    );

    // The last connection closing is announced once; a second one does not re-announce.
    let alice_again = app.ws("user-of-cust-1", &alice).await;
    drop(alice_ws);
    let frames = staff_watch.drain(Duration::from_millis(800)).await;
    assert!(
        presence_of(&frames, "user-of-cust-1").is_empty(),
        "still connected on A: {frames:?}"
    );
    drop(alice_again);
    assert_eq!(
        next_presence(&mut staff_watch, "user-of-cust-1")
            .await
            .as_deref(),
        Some("offline")
    );
    assert_eq!(
        status_on(&app, &b_url, &staff, "user-of-cust-1").await,
        "offline"
    );
    drop(staff_two);
    let crew = app.token("crew-1", Role::Crew, None);
    let response = app.get("/api/communications/online-users", &crew).await;
    assert_eq!(response.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_instances_users_go_offline_everywhere() {
    let app = spawn_app().await;
    let mut b = app.spawn_instance().await;
    let staff = app.staff_token();
    let mut staff_watch = app.ws("staff-1", &staff).await;
    let carol = app.customer_token("cust-3");
    let _carol_ws = b.ws("user-of-cust-3", &carol).await;
    assert_eq!(
        next_presence(&mut staff_watch, "user-of-cust-3")
            .await
            .as_deref(),
        Some("online")
    );

    b.kill();
    // Offline within the TTL (5 s here) and one heartbeat, announced by A's sweep. (An
    // `online` may come again first: killed between publishing it and committing, B
    // leaves its outbox row for A's relay, which publishes it once more.)
    let started = std::time::Instant::now();
    loop {
        match next_presence(&mut staff_watch, "user-of-cust-3")
            .await
            .as_deref()
        {
            Some("offline") => break,
            Some("online") => continue,
            other => panic!("expected offline, got {other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "offline after {took:?}");
    assert_eq!(
        status_on(&app, &app.base_url, &staff, "user-of-cust-3").await,
        "offline"
    );
    let instances: i64 = sqlx::query_scalar("SELECT count(*) FROM presence_instances")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(instances, 1, "the dead instance is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn typing_reaches_the_other_parties_on_every_instance_at_most_every_two_seconds() {
    let app = spawn_app().await;
    let b = app.spawn_instance().await;
    let staff = app.staff_token();
    let alice = app.customer_token("cust-1");
    let mut staff_ws = app.ws("staff-1", &staff).await;
    let mut other_customer = app
        .ws("user-of-cust-2", &app.customer_token("cust-2"))
        .await;
    let mut alice_ws = b.ws("user-of-cust-1", &alice).await;
    let mut alice_tab = app.ws("user-of-cust-1", &alice).await;

    // Five in a row: one goes through.
    for _ in 0..5 {
        alice_ws.send(&json!({ "type": "typing" })).await;
    }
    let frame = staff_ws
        .next_of_type("typing", WAIT)
        .await
        .expect("staff sees alice typing");
    assert_eq!(frame["customer_id"], "cust-1");
    assert_eq!(frame["user_id"], "user-of-cust-1");
    assert_eq!(frame["role"], "customer");
    assert!(
        frame.get("seq").is_none(),
        "typing is never stored: {frame}"
    );
    let more = staff_ws.drain(Duration::from_millis(1000)).await;
    assert!(
        more.iter().all(|f| f["type"] != "typing"),
        "rate limited: {more:?}"
    );
    // A stop always goes.
    alice_ws
        .send(&json!({ "type": "typing", "state": "stop" }))
        .await;
    let frame = staff_ws
        .next_of_type("typing", WAIT)
        .await
        .expect("the stop");
    assert_eq!(frame["state"], "stop");
    // Neither the typist (any tab) nor another customer sees it.
    for ws in [&mut alice_tab, &mut other_customer] {
        let frames = ws.drain(Duration::from_millis(300)).await;
        assert!(frames.iter().all(|f| f["type"] != "typing"), "{frames:?}");
    }

    // Staff typing reaches the customer on the other instance.
    staff_ws
        .send(&json!({ "type": "typing", "customer_id": "cust-1" }))
        .await;
    let frame = alice_ws
        .next_of_type("typing", WAIT)
        .await
        .expect("alice sees staff typing");
    assert_eq!(frame["user_id"], "staff-1");
    assert_eq!(frame["role"], "staff");

    // Typing where one may not: an error frame, nothing relayed.
    alice_ws
        .send(&json!({ "type": "typing", "customer_id": "cust-2" }))
        .await;
    let error = alice_ws.next_of_type("error", WAIT).await.unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("own conversation"),
        "{error}"
    );
    staff_ws.send(&json!({ "type": "typing" })).await;
    let error = staff_ws.next_of_type("error", WAIT).await.unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("customer_id"),
        "{error}"
    );
    let frames = other_customer.drain(Duration::from_millis(300)).await;
    assert!(frames.iter().all(|f| f["type"] != "typing"), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_frames_get_answers_and_bad_ones_an_error_the_connection_stays() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let mut ws = app.ws("staff-1", &staff).await;
    assert_eq!(ws.hello["limits"]["max_message_bytes"], 65536);
    ws.send(&json!({ "type": "ping" })).await;
    assert_eq!(
        ws.next_of_type("pong", WAIT).await.unwrap(),
        json!({ "type": "pong" })
    );
    for (frame, names) in [
        (Message::Text("not json".into()), "not JSON"),
        (
            Message::Text(json!({ "type": "dance" }).to_string().into()),
            "dance",
        ),
        (
            Message::Text(json!({ "hello": 1 }).to_string().into()),
            "type",
        ),
        (
            Message::Text(
                json!({ "type": "typing", "customer_id": 7 })
                    .to_string()
                    .into(),
            ),
            "typing",
        ),
        (Message::Binary(vec![1, 2, 3].into()), "binary"),
    ] {
        ws.send_raw(frame).await;
        let answer = ws.next_of_type("error", WAIT).await.expect("an answer");
        assert!(
            answer["message"].as_str().unwrap().contains(names),
            "{answer}"
        );
    }
    ws.send(&json!({ "type": "ping" })).await;
    assert_eq!(
        ws.next_json(WAIT).await.unwrap()["type"],
        "pong",
        "still open"
    );
}

/// An attack that never finishes its message: a text frame without FIN, then endless
/// continuation frames, each far below the frame limit. The api counts the fragments
/// against WS_MAX_MESSAGE_BYTES and closes at the limit, holding no more than it.
#[tokio::test(flavor = "multi_thread")]
async fn an_unfinished_fragmented_message_is_cut_off_at_the_message_limit() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let app = spawn_app().await;
    let staff = app.staff_token();
    let mut attacker = app.ws("staff-1", &staff).await;
    let fragment = vec![b'x'; 8 * 1024];
    let mut sent = 0usize;
    let mut opcode = OpCode::Data(Data::Text);
    // 1 MiB at most, 16 times the limit: the server closes long before.
    while sent < 1024 * 1024 {
        let frame = Frame::message(fragment.clone(), opcode, false);
        if !attacker.try_send_raw(Message::Frame(frame)).await {
            break;
        }
        opcode = OpCode::Data(Data::Continue);
        sent += fragment.len();
    }
    assert_eq!(attacker.close_code(WAIT).await, Some(1009));
    // The same user connects again and is served: the api is unharmed.
    let mut again = app.ws("staff-1", &staff).await;
    again.send(&json!({"type": "ping"})).await;
    assert!(again.next_json(WAIT).await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_the_limit_closes_with_1009_and_connections_per_user_are_bounded() {
    let app = spawn_app_with(TestOptions {
        ws_max_per_user: 2,
        ..Default::default()
    })
    .await;
    let staff = app.staff_token();
    let mut big = app.ws("staff-1", &staff).await;
    big.send_raw(Message::Text("x".repeat(64 * 1024 + 1).into()))
        .await;
    assert_eq!(big.close_code(WAIT).await, Some(1009));
    // Its presence went with it: two more may connect, not three.
    let user = app.token("user-9", Role::Staff, None);
    let _one = app.ws("user-9", &user).await;
    let _two = app.ws("user-9", &user).await;
    let url = format!("ws://{}/api/ws/user-9?token={user}", app.addr);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("WS_MAX_PER_USER"), "{body}");
        }
        other => panic!("a third connection is refused, not {:?}", other.map(|_| ())),
    }
    let response = app
        .client
        .get(app.url("/api/ws/user-9?token=x&since=-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "authentication comes first");
    let response = app
        .client
        .get(app.url(&format!("/api/ws/staff-1?token={staff}&since=abc")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_reconnects_gets_what_it_missed_in_order_once() {
    let app = spawn_app().await;
    let b = app.spawn_instance().await;
    let staff = app.staff_token();
    let alice = app.customer_token("cust-1");
    let first = app.ws("staff-1", &staff).await;
    let alice_first = app.ws("user-of-cust-1", &alice).await;
    let staff_at = first.hello["seq"].as_i64().unwrap();
    let alice_at = alice_first.hello["seq"].as_i64().unwrap();
    drop(first);
    drop(alice_first);

    let mut sent = Vec::new();
    for (customer, text) in [("cust-1", "one"), ("cust-2", "two"), ("cust-1", "three")] {
        let body = app.send_ok(&staff, customer, text).await;
        let id = body["id"].as_str().unwrap().to_owned();
        app.wait_for_status(&id, "sent").await;
        sent.push(id);
    }
    eventually("the events are logged", WAIT, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM event_log WHERE payload ->> 'type' = 'message.new'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (n == 3).then_some(())
    })
    .await;

    // Staff, on the other instance: all three, in order, then `recovered`.
    let url = format!(
        "ws://{}/api/ws/staff-1?token={staff}&since={staff_at}",
        b.addr
    );
    let mut staff_ws = WsClient::connect(&url).await.unwrap();
    let mut replayed = Vec::new();
    let mut last = staff_at;
    loop {
        let frame = staff_ws.next_json(WAIT).await.expect("a frame");
        if frame["type"] == "recovered" {
            assert_eq!(frame["recovered"], true);
            break;
        }
        let seq = frame["seq"]
            .as_i64()
            .expect("every replayed event has a seq");
        assert!(seq > last, "in order, once: {seq} after {last}");
        last = seq;
        if frame["type"] == "message.new" {
            replayed.push(frame["communication_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(replayed, sent);
    // Live events go on after the replay, numbered after it.
    app.send_ok(&staff, "cust-1", "four").await;
    let live = staff_ws.next_of_type("message.new", WAIT).await.unwrap();
    assert!(live["seq"].as_i64().unwrap() > last);

    // The customer: only their own conversation's.
    let url = format!(
        "ws://{}/api/ws/user-of-cust-1?token={alice}&since={alice_at}",
        app.addr
    );
    let mut alice_ws = WsClient::connect(&url).await.unwrap();
    let mut texts = Vec::new();
    loop {
        let frame = alice_ws.next_json(WAIT).await.expect("a frame");
        match frame["type"].as_str() {
            Some("recovered") => break,
            Some("message.new") => texts.push(frame["message"].as_str().unwrap().to_owned()),
            _ => {}
        }
        assert_ne!(frame["customer_id"], "cust-2", "{frame}");
    }
    assert_eq!(texts[..2], ["one", "three"]);

    // Too far back (pruned) or from elsewhere: not recovered, refetch.
    sqlx::query("DELETE FROM event_log WHERE seq <= $1")
        .bind(last - 1)
        .execute(&app.pool)
        .await
        .unwrap();
    for since in [staff_at, i64::MAX / 2] {
        let url = format!(
            "ws://{}/api/ws/staff-1?token={staff}&since={since}",
            app.addr
        );
        let mut ws = WsClient::connect(&url).await.unwrap();
        let frame = ws.next_of_type("recovered", WAIT).await.unwrap();
        assert_eq!(frame["recovered"], false, "since {since}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn positions_are_in_commit_order_whatever_relays_race() {
    // The outbox trap: ids taken at insert are not in commit order. Three relays (the
    // api's and two more) publish concurrently while writers commit events; a reader
    // that tails the log from the last position it saw must never miss one.
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    for _ in 0..2 {
        let relay = Relay {
            pool: app.pool.clone(),
            broker: app.settings.broker.clone(),
            topology: app.topology.clone(),
            settings: commcenter_shared::platform::settings::RelaySettings {
                batch: 7,
                poll: Duration::from_millis(5),
            },
            kinds: Vec::new(),
            wake: Default::default(),
        };
        tokio::spawn(relay.run(shutdown.clone()));
    }
    let total = 600;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let pool = app.pool.clone();
            tokio::spawn(async move {
                for i in 0..total / 4 {
                    let mut tx = pool.begin().await.unwrap();
                    let event = commcenter_shared::ledger::events::Event::now(
                        commcenter_shared::domain::CustomerId::parse("cust-1").unwrap(),
                        commcenter_shared::ledger::events::EventBody::ConversationStatus {
                            status: commcenter_shared::domain::ConversationStatus::Open,
                            updated_by: format!("writer-{w}-{i}"),
                        },
                    );
                    commcenter_shared::ledger::events::record(&mut tx, &event)
                        .await
                        .unwrap();
                    // Some commit late, holding a lower outbox id.
                    if i % 5 == 0 {
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    let mut seen: Vec<i64> = Vec::new();
    let mut last = 0i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < total && std::time::Instant::now() < deadline {
        let batch: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM event_log WHERE seq > $1 ORDER BY seq")
                .bind(last)
                .fetch_all(&app.pool)
                .await
                .unwrap();
        if let Some(max) = batch.last() {
            last = *max;
        }
        seen.extend(batch);
    }
    for writer in writers {
        writer.await.unwrap();
    }
    shutdown.cancel();
    let all: Vec<i64> = sqlx::query_scalar("SELECT seq FROM event_log ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(all.len(), total, "every event is logged once");
    assert_eq!(seen, all, "a tailing reader saw every position, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn message_new_carries_its_attachments_and_the_originals_fields() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let mut customer_ws = app
        .ws("user-of-cust-1", &app.customer_token("cust-1"))
        .await;
    let uploaded: Value = app
        .upload_file(
            &staff,
            "cust-1",
            b"%PDF-1.4\n%\xe2\xe3\n".to_vec(),
            "quote.pdf",
            false,
        )
        .await
        .json()
        .await
        .unwrap();
    let file_id = uploaded["files"][0]["file_id"].as_str().unwrap().to_owned();
    let response = app
        .post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-1", "message": "Your quote", "attachments": [file_id] }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let frame = customer_ws.next_of_type("message.new", WAIT).await.unwrap();
    assert!(frame["seq"].as_i64().is_some());
    assert_eq!(frame["content"], "Your quote");
    assert_eq!(frame["user_id"], "staff-1");
    assert_eq!(frame["communication_type"], "inapp");
    assert_eq!(frame["direction"], "outbound");
    assert!(frame["timestamp"].is_string());
    let attachment = &frame["attachments"][0];
    assert_eq!(attachment["file_id"], file_id.as_str());
    assert_eq!(attachment["filename"], "quote.pdf");
    assert_eq!(attachment["file_type"], "application/pdf");
    assert!(
        attachment["url"]
            .as_str()
            .unwrap()
            .starts_with("/api/communications/file/")
    );
    assert!(attachment["file_size"].as_i64().unwrap() > 0);
}

/// The next `presence` frame about `user`, whole.
async fn next_presence_frame(ws: &mut WsClient, user: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = ws
            .next_of_type("presence", left)
            .await
            .expect("a presence frame");
        if frame["user_id"] == user {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customers_presence_names_their_conversation_for_staff() {
    let app = spawn_app().await;
    let b = app.spawn_instance().await;
    let staff = app.staff_token();
    let mut staff_watch = app.ws("staff-1", &staff).await;

    // Staff learn which conversation an online customer belongs to, from the frame and
    // from the list, before that customer has written anything.
    let alice = app.customer_token("cust-1");
    let alice_ws = b.ws("user-of-cust-1", &alice).await;
    let online = next_presence_frame(&mut staff_watch, "user-of-cust-1").await;
    assert_eq!(online["status"], "online");
    assert_eq!(online["customer_id"], "cust-1");
    let listed: Value = app
        .get("/api/communications/online-users", &staff)
        .await
        .json()
        .await
        .unwrap();
    let alice_listed = listed["online_users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == "user-of-cust-1")
        .cloned()
        .unwrap();
    assert_eq!(alice_listed["customer_id"], "cust-1");

    // Staff's own presence names no conversation; a customer sees only staff.
    let staff_two = b
        .ws("staff-2", &app.token("staff-2", Role::Staff, None))
        .await;
    let staff_online = next_presence_frame(&mut staff_watch, "staff-2").await;
    assert!(staff_online.get("customer_id").is_none(), "{staff_online}");
    let seen_by_alice: Value = app
        .get("/api/communications/online-users", &alice)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        seen_by_alice["online_users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["role"] != "customer" && u.get("customer_id").is_none()),
        "{seen_by_alice}"
    );

    // Going offline names it too.
    drop(alice_ws);
    let offline = next_presence_frame(&mut staff_watch, "user-of-cust-1").await;
    assert_eq!(offline["status"], "offline");
    assert_eq!(offline["customer_id"], "cust-1");
    drop(staff_two);
}

/// What one follower of the feed saw: how often each message's `message.new` came.
#[derive(Default)]
struct Followed {
    seen: std::collections::HashMap<String, usize>,
    last_seq: Option<i64>,
    resumes: usize,
    not_recovered: usize,
}

/// Follows the staff feed in a task of its own, reading every frame; when the server
/// closes the connection, or `drop_now` is notified, it reconnects with `since=` the
/// last position it saw, as docs/websocket.md tells clients to.
fn follow(
    addr: std::net::SocketAddr,
    token: String,
    drop_now: std::sync::Arc<tokio::sync::Notify>,
) -> (
    std::sync::Arc<std::sync::Mutex<Followed>>,
    tokio::task::JoinHandle<()>,
) {
    let followed = std::sync::Arc::new(std::sync::Mutex::new(Followed::default()));
    let record = followed.clone();
    let task = tokio::spawn(async move {
        loop {
            let since = record.lock().unwrap().last_seq;
            let url = match since {
                Some(seq) => format!("ws://{addr}/api/ws/staff-1?token={token}&since={seq}"),
                None => format!("ws://{addr}/api/ws/staff-1?token={token}"),
            };
            let Some(mut ws) = WsClient::try_connect(&url).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            {
                let mut record = record.lock().unwrap();
                if record.last_seq.is_none() {
                    record.last_seq = ws.hello["seq"].as_i64();
                }
            }
            loop {
                let frame = tokio::select! {
                    frame = ws.next_json(Duration::from_secs(3600)) => frame,
                    () = drop_now.notified() => None,
                };
                let Some(frame) = frame else { break };
                let mut record = record.lock().unwrap();
                match frame["type"].as_str() {
                    Some("recovered") => {
                        record.resumes += 1;
                        if frame["recovered"] != true {
                            record.not_recovered += 1;
                        }
                    }
                    Some("message.new") => {
                        let id = frame["communication_id"].as_str().unwrap().to_owned();
                        *record.seen.entry(id).or_default() += 1;
                    }
                    _ => {}
                }
                if frame["type"] != "connected"
                    && let Some(seq) = frame["seq"].as_i64()
                {
                    record.last_seq = Some(seq);
                }
            }
        }
    });
    (followed, task)
}

/// The probe's fault sequence, three times over, under a steady 20 sends a second: the
/// api loses RabbitMQ (its relay and its notifier), then PostgreSQL is stopped for
/// real and started again. A staff client that stays connected, and one that drops
/// and resumes with `since=` after each fault, each get every accepted message's
/// `message.new` exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn through_broker_and_database_outages_each_event_reaches_a_client_exactly_once() {
    let server = commcenter_tests::ScratchPostgres::start();
    let broker = commcenter_tests::TcpProxy::start(commcenter_tests::broker_addr()).await;
    let app = std::sync::Arc::new(
        spawn_app_with(TestOptions {
            database_server: Some(server.admin_url()),
            api_amqp_url: Some(broker.amqp_url()),
            acquire_timeout: Duration::from_millis(1500),
            ..Default::default()
        })
        .await,
    );
    let staff = app.staff_token();
    let stay = std::sync::Arc::new(tokio::sync::Notify::new());
    let (staying, staying_task) = follow(app.addr, staff.clone(), stay.clone());
    let resume = std::sync::Arc::new(tokio::sync::Notify::new());
    let (resuming, resuming_task) = follow(app.addr, staff.clone(), resume.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sender = {
        let (app, staff, sending) = (app.clone(), staff.clone(), sending.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut n = 0;
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let response = app
                    .send_message(&staff, &format!("cust-{}", n % 5), &format!("fault {n}"))
                    .await;
                if response.status() == 202 {
                    let body: Value = response.json().await.unwrap();
                    accepted.push(body["id"].as_str().unwrap().to_owned());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            accepted
        })
    };

    let server = std::sync::Arc::new(server);
    for _ in 0..3 {
        broker.cut();
        tokio::time::sleep(Duration::from_secs(2)).await;
        broker.restore();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        resume.notify_one();
        let stopped = server.clone();
        tokio::task::spawn_blocking(move || stopped.stop())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = server.clone();
        tokio::task::spawn_blocking(move || started.start_again())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        resume.notify_one();
    }
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let accepted = sender.await.unwrap();
    assert!(accepted.len() > 100, "{} sends accepted", accepted.len());

    for (name, followed) in [("staying", &staying), ("resuming", &resuming)] {
        eventually(
            &format!("the {name} client to see every send"),
            WAIT,
            || async {
                let followed = followed.lock().unwrap();
                accepted
                    .iter()
                    .all(|id| followed.seen.contains_key(id))
                    .then_some(())
            },
        )
        .await;
        // Late copies would come within moments.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let followed = followed.lock().unwrap();
        let twice: Vec<_> = followed.seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{name}: seen more than once: {twice:?}");
        assert_eq!(followed.not_recovered, 0, "{name}: every resume recovered");
    }
    assert!(
        resuming.lock().unwrap().resumes >= 6,
        "the resuming client resumed after each fault"
    );
    staying_task.abort();
    resuming_task.abort();
    drop(app);
}
