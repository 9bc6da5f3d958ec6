//! The reliability contract against the real broker: accepted means durable, one
//! effect per job however often it is delivered, poison contained, graceful stop,
//! reconnection.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use commcenter_shared::{ledger::jobs::Envelope, ledger::relay::job_properties};
use commcenter_tests::{TcpProxy, TestApp, TestOptions, broker_addr, spawn_app_with};
use commcenter_workers::{AnyHandler, JobContext, JobError};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions},
};
use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::{WAIT, retries::enqueue};

async fn publish_raw(app: &TestApp, routing_key: &str, body: &[u8], properties: BasicProperties) {
    let (connection, channel) = app.broker_channel().await;
    channel.confirm_select(Default::default()).await.unwrap();
    let confirmation = channel
        .basic_publish(
            app.topology.jobs_exchange().as_str().into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirmation.is_ack());
    assert!(
        confirmation.take_message().is_none(),
        "no queue took the message"
    );
    connection.close(200, "bye".into()).await.ok();
}

async fn envelope_of(app: &TestApp, job_id: &str) -> Envelope {
    let (id, kind, payload): (uuid::Uuid, String, Value) =
        sqlx::query_as("SELECT id, kind, payload FROM jobs WHERE id = $1::uuid")
            .bind(job_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    Envelope {
        job_id: id,
        kind,
        payload,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_broker_down_a_send_is_still_accepted_and_delivered_when_it_returns() {
    // The broker is gone for everyone: the api and the workers (whose relays would
    // otherwise publish what the api could not).
    let proxy = TcpProxy::start(broker_addr()).await;
    let app = spawn_app_with(TestOptions {
        api_amqp_url: Some(proxy.amqp_url()),
        workers_amqp_url: Some(proxy.amqp_url()),
        ..Default::default()
    })
    .await;
    let staff = app.staff_token();

    proxy.cut();
    commcenter_tests::eventually("the api to notice the outage", WAIT, || async {
        let response = app.client.get(app.url("/readyz")).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        (body["broker"] == "unreachable").then_some(())
    })
    .await;

    // Accepted (202: RabbitMQ being down must not make the api refuse).
    let sent = app
        .send_job_ok(&staff, "cust-1", "sent during the outage")
        .await;
    let job_id = sent["job_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1::uuid")
        .bind(job_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "pending", "the job waits in the outbox");

    proxy.restore();
    app.wait_for_status(sent["id"].as_str().unwrap(), "sent")
        .await;
    app.wait_for_job_state(job_id, "succeeded").await;
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_delivered_again_after_it_ran_has_one_effect_and_one_event() {
    let app = spawn_app_with(TestOptions::default()).await;
    let mut staff_ws = app.ws("staff-1", &app.staff_token()).await;
    let sent = app
        .send_job_ok(&app.staff_token(), "cust-1", "once only")
        .await;
    let job_id = sent["job_id"].as_str().unwrap();
    app.wait_for_job_state(job_id, "succeeded").await;
    staff_ws
        .next_of_type("message.new", WAIT)
        .await
        .expect("the first event");

    // What a worker that died after committing but before its ack leaves behind: the
    // same delivery, again (twice, for good measure).
    let envelope = envelope_of(&app, job_id).await;
    for _ in 0..2 {
        publish_raw(
            &app,
            &envelope.kind,
            &serde_json::to_vec(&envelope).unwrap(),
            job_properties(envelope.job_id),
        )
        .await;
    }
    commcenter_tests::eventually("the duplicates to be consumed", WAIT, || async {
        (app.queue_depth(&app.topology.work_queue(&envelope.kind))
            .await
            == 0)
            .then_some(())
    })
    .await;
    let frames = staff_ws.drain(Duration::from_millis(500)).await;
    assert!(
        frames.iter().all(|f| f["type"] != "message.new"),
        "no second event: {frames:?}"
    );
    assert_eq!(
        app.attempts(job_id).await.len(),
        1,
        "the redelivery did not run the job again"
    );
    assert_eq!(app.count("communications").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_deliveries_of_one_job_at_once_have_one_effect() {
    let mut app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let mut staff_ws = app.ws("staff-1", &app.staff_token()).await;
    let sent = app.send_job_ok(&app.staff_token(), "cust-1", "race").await;
    let job_id = sent["job_id"].as_str().unwrap();
    // The relay publishes it; a duplicate (a relay that crashed before marking it
    // queued) goes right behind it, and both wait for a worker.
    app.wait_for_job_state(job_id, "queued").await;
    let envelope = envelope_of(&app, job_id).await;
    publish_raw(
        &app,
        &envelope.kind,
        &serde_json::to_vec(&envelope).unwrap(),
        job_properties(envelope.job_id),
    )
    .await;
    app.start_workers();

    app.wait_for_job_state(job_id, "succeeded").await;
    let frames = staff_ws.drain(Duration::from_millis(700)).await;
    let news = frames.iter().filter(|f| f["type"] == "message.new").count();
    assert_eq!(news, 1, "{frames:?}");
    assert_eq!(app.attempts(job_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_is_dead_at_once_with_the_reason_and_the_worker_keeps_going() {
    let app = spawn_app_with(TestOptions::default()).await;
    publish_raw(
        &app,
        "message.deliver",
        b"\x00this is not json",
        BasicProperties::default(),
    )
    .await;
    let not_in_ledger =
        json!({ "job_id": uuid::Uuid::new_v4(), "kind": "message.deliver", "payload": {} });
    publish_raw(
        &app,
        "message.deliver",
        not_in_ledger.to_string().as_bytes(),
        BasicProperties::default(),
    )
    .await;

    let dead: Vec<(String, String, String)> = commcenter_tests::eventually("the poison to be recorded", WAIT, || async {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT kind, last_error_class, last_error FROM jobs WHERE state = 'dead' ORDER BY created_at",
        )
        .fetch_all(&app.pool)
        .await
        .ok()?;
        (rows.len() == 2).then_some(rows)
    })
    .await;
    let garbage = dead
        .iter()
        .find(|d| d.2.contains("not a job envelope"))
        .expect("the garbage is recorded");
    assert_eq!(
        garbage.0, "message.deliver",
        "under the routing key it came with"
    );
    assert_eq!(garbage.1, "unparseable");
    let unknown = dead
        .iter()
        .find(|d| d.2.contains("not in the ledger"))
        .expect("the unknown job is recorded");
    assert_eq!(unknown.1, "unparseable");
    let raw: Value =
        sqlx::query_scalar("SELECT payload FROM jobs WHERE last_error LIKE '%not a job envelope%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        raw["raw"].as_str().unwrap().contains("this is not json"),
        "the raw payload is kept: {raw}"
    );
    assert_eq!(
        raw["raw_base64"], "AHRoaXMgaXMgbm90IGpzb24=",
        "exactly, NUL included"
    );

    let sent = app
        .send_job_ok(&app.staff_token(), "cust-1", "after the poison")
        .await;
    app.wait_for_status(sent["id"].as_str().unwrap(), "sent")
        .await;
    assert_eq!(
        app.queue_depth(&app.topology.work_queue("message.deliver"))
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_keeps_killing_its_worker_is_dead_lettered_by_the_broker_and_recorded() {
    // No worker here runs `test.crashy`: the test plays a worker that takes the job and
    // dies (closes its channel without an ack), again and again.
    let app = spawn_app_with(TestOptions {
        delivery_limit: 2,
        ..Default::default()
    })
    .await;
    let (connection, _channel) = app.broker_channel().await;
    app.declare_kinds(&["test.crashy"]).await;
    let job_id = enqueue(&app, "test.crashy", json!({ "why": "crashes its worker" })).await;
    app.wait_for_job_state(&job_id, "queued").await;

    let queue = app.topology.work_queue("test.crashy");
    for _ in 0..10 {
        let channel = connection.create_channel().await.unwrap();
        let taken = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap();
        channel.close(200, "the worker died".into()).await.ok();
        if taken.is_none() {
            break;
        }
    }
    let job = app.wait_for_job_state(&job_id, "dead").await;
    assert_eq!(job["last_error_class"], "delivery_limit");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("delivery limit"),
        "{}",
        job["last_error"]
    );
    assert_eq!(
        job["broker_death"][0]["reason"], "delivery_limit",
        "{}",
        job["broker_death"]
    );
    connection.close(200, "bye".into()).await.ok();
}

/// Takes its time, counting how often it starts.
struct Slow {
    started: Arc<AtomicUsize>,
}

#[async_trait]
impl AnyHandler for Slow {
    fn kind(&self) -> &'static str {
        "test.slow"
    }
    async fn run(&self, _conn: &mut PgConnection, _job: &JobContext) -> Result<(), JobError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(800)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_lets_in_flight_jobs_finish_and_ack_and_nothing_is_redelivered() {
    let started = Arc::new(AtomicUsize::new(0));
    let mut app = spawn_app_with(TestOptions::with_handler(Slow {
        started: started.clone(),
    }))
    .await;
    let mut job_ids = Vec::new();
    for _ in 0..3 {
        job_ids.push(enqueue(&app, "test.slow", json!({})).await);
    }
    commcenter_tests::eventually("the jobs to start", WAIT, || async {
        (started.load(Ordering::SeqCst) == 3).then_some(())
    })
    .await;

    // SIGTERM, as the binary maps it: stop consuming, finish, ack, close.
    app.stop_workers().await;
    for job_id in &job_ids {
        let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1::uuid")
            .bind(job_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(
            state, "succeeded",
            "in-flight jobs finish before the stop completes"
        );
    }
    assert_eq!(
        app.queue_depth(&app.topology.work_queue("test.slow")).await,
        0,
        "and were acked"
    );

    app.start_workers();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(started.load(Ordering::SeqCst), 3, "nothing ran twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_reconnect_after_losing_the_broker_and_resume() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let app = spawn_app_with(TestOptions {
        workers_amqp_url: Some(proxy.amqp_url()),
        ..Default::default()
    })
    .await;
    let staff = app.staff_token();
    let first = app.send_job_ok(&staff, "cust-1", "before").await;
    app.wait_for_status(first["id"].as_str().unwrap(), "sent")
        .await;

    proxy.cut();
    let during = app.send_job_ok(&staff, "cust-1", "during").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.communication_status(during["id"].as_str().unwrap())
            .await,
        "queued",
        "no worker can reach it"
    );

    proxy.restore();
    app.wait_for_status(during["id"].as_str().unwrap(), "sent")
        .await;
    let after = app.send_job_ok(&staff, "cust-1", "after").await;
    app.wait_for_status(after["id"].as_str().unwrap(), "sent")
        .await;
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_loses_the_database_keeps_its_jobs_until_it_returns() {
    let postgres = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    // A low delivery limit: were the worker to nack on a database outage, the broker
    // would dead-letter the job within a few seconds.
    let app = spawn_app_with(TestOptions {
        workers_database_proxy: Some(postgres.addr),
        delivery_limit: 2,
        ..Default::default()
    })
    .await;
    postgres.cut();
    let sent = app
        .send_job_ok(&app.staff_token(), "cust-1", "through the outage")
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        app.communication_status(sent["id"].as_str().unwrap()).await,
        "queued"
    );

    postgres.restore();
    app.wait_for_status(sent["id"].as_str().unwrap(), "sent")
        .await;
    let job = app
        .wait_for_job_state(sent["job_id"].as_str().unwrap(), "succeeded")
        .await;
    assert_eq!(job["attempts"], 1, "the outage cost no attempt");
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_api_alone_loses_the_broker_another_relay_publishes_its_jobs() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let app = spawn_app_with(TestOptions {
        api_amqp_url: Some(proxy.amqp_url()),
        ..Default::default()
    })
    .await;
    proxy.cut();
    // The workers' relay, still connected, picks up what the api committed.
    let sent = app
        .send_job_ok(&app.staff_token(), "cust-1", "relayed by another process")
        .await;
    app.wait_for_status(sent["id"].as_str().unwrap(), "sent")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_whose_bookkeeping_keeps_failing_ends_dead_not_looping() {
    let postgres = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let app = spawn_app_with(TestOptions {
        workers_database_proxy: Some(postgres.addr),
        max_deferral: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    postgres.cut();
    let sent = app
        .send_job_ok(&app.staff_token(), "cust-1", "never recorded in time")
        .await;
    // Deferred through the delay tier for longer than allowed: rejected to the
    // dead-letter queue, whose consumer records it once the database is back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres.restore();
    let job = app
        .wait_for_job_state(sent["job_id"].as_str().unwrap(), "dead")
        .await;
    assert_eq!(job["last_error_class"], "broker");
    assert!(
        job["last_error"].as_str().unwrap().contains("rejected"),
        "{}",
        job["last_error"]
    );
    assert_eq!(
        app.communication_status(sent["id"].as_str().unwrap()).await,
        "failed"
    );
    assert_eq!(
        app.queue_depth(&app.topology.work_queue("message.deliver"))
            .await,
        0
    );
}

/// A poll that found nothing is kept as an idle row, not deleted: a second copy of its
/// broker message (a relay that published it twice, a worker that died before its ack)
/// finds it finished and is skipped, where a missing row would be recorded as a dead
/// orphan that no operator could act on.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_copy_of_an_idle_poll_is_skipped_never_a_dead_orphan() {
    use commcenter_shared::ledger::jobs::payloads::SyncMailbox;

    let app = spawn_app_with(TestOptions::default()).await;
    let sync = || async {
        let enqueued =
            commcenter_workers::schedule::enqueue_unless_open(&app.pool, &SyncMailbox {}, 8)
                .await
                .unwrap();
        assert!(enqueued);
        app.assert_no_jobs_left().await;
    };
    sync().await; // notes where the mailbox stands
    sync().await; // finds nothing: idle
    let idle: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM jobs WHERE kind = 'email.sync' AND idle")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let envelope = envelope_of(&app, &idle.to_string()).await;
    publish_raw(
        &app,
        &envelope.kind,
        &serde_json::to_vec(&envelope).unwrap(),
        job_properties(envelope.job_id),
    )
    .await;
    let metrics = app.workers_metrics();
    let skipped = r#"commcenter_jobs_total{kind="email.sync",outcome="skipped"} 1"#;
    commcenter_tests::eventually("the copy to be skipped", WAIT, || async {
        metrics.render().contains(skipped).then_some(())
    })
    .await;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'dead'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "no orphan was recorded");
}
