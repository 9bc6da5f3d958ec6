//! The operators' API: finding, inspecting, replaying and discarding jobs, bulk actions
//! with progress, the audit, queue health, retention.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use commcenter_shared::{
    domain::Role,
    ledger::jobs::{Envelope, kinds, payloads::DeliverMessage},
    ledger::relay::{job_properties, job_properties_at},
};
use commcenter_tests::{TcpProxy, TestApp, TestOptions, broker_addr, eventually, spawn_app_with};
use commcenter_workers::{
    AnyHandler, Handler, JobContext, JobError, handlers::messages::DeliverMessageHandler,
};
use lapin::options::BasicPublishOptions;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::WAIT;

/// `message.deliver` that fails permanently while `failing` is set, then delivers as
/// the production handler does.
#[derive(Clone, Default)]
struct FailingDelivery {
    failing: Arc<AtomicBool>,
}

#[async_trait]
impl Handler<DeliverMessage> for FailingDelivery {
    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &DeliverMessage,
        job: &JobContext,
    ) -> Result<(), JobError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(JobError::permanent("the recipient refused it"));
        }
        DeliverMessageHandler.run(conn, payload, job).await
    }

    async fn on_dead(
        &self,
        conn: &mut PgConnection,
        payload: &DeliverMessage,
        job: &JobContext,
        reason: &str,
    ) -> anyhow::Result<()> {
        DeliverMessageHandler
            .on_dead(conn, payload, job, reason)
            .await
    }
}

/// `receipt.apply` that only counts its runs per job: the bulk tests' stand-in.
#[derive(Clone, Default)]
struct Counting {
    runs: Arc<Mutex<HashMap<Uuid, u32>>>,
}

#[async_trait]
impl AnyHandler for Counting {
    fn kind(&self) -> &'static str {
        kinds::RECEIPT_APPLY
    }

    async fn run(&self, _conn: &mut PgConnection, job: &JobContext) -> Result<(), JobError> {
        *self.runs.lock().unwrap().entry(job.id).or_default() += 1;
        Ok(())
    }
}

fn operator(app: &TestApp) -> String {
    app.token("ops-1", Role::Operator, None)
}

/// `count` dead `receipt.apply` jobs written straight into the ledger, one second apart.
async fn dead_jobs(app: &TestApp, count: i32) -> Vec<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO jobs (id, kind, payload, state, attempts, max_attempts, last_error,
                           last_error_class, first_failed_at, last_failed_at, finished_at, created_at, updated_at)
         SELECT gen_random_uuid(), 'receipt.apply', '{}', 'dead', 1, 5, 'provider said no', 'permanent',
                now(), now(), now(), now() - make_interval(secs => g), now() - interval '1 second'
         FROM generate_series(1, $1) g
         RETURNING id",
    )
    .bind(count)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn job_of(app: &TestApp, communication_id: &str) -> String {
    let id: Uuid = sqlx::query_scalar("SELECT id FROM jobs WHERE communication_id = $1::uuid")
        .bind(communication_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    id.to_string()
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let response = app.get(path, token).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    let response = app.post_json(path, token, &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls a bulk action until it is done; returns it.
async fn wait_for_action(app: &TestApp, id: &str) -> Value {
    let token = operator(app);
    eventually(
        &format!("bulk action {id} to be done"),
        Duration::from_secs(30),
        || async {
            let (_, body) = get_json(app, &format!("/api/ops/actions/{id}"), &token).await;
            (body["action"]["state"] == "done").then(|| body["action"].clone())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn only_operators_reach_the_ops_endpoints() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let job = dead_jobs(&app, 1).await[0];
    let gets = [
        "/api/ops/jobs".to_owned(),
        format!("/api/ops/jobs/{job}"),
        "/api/ops/actions".to_owned(),
        format!("/api/ops/actions/{}", Uuid::now_v7()),
        "/api/ops/audit".to_owned(),
        "/api/ops/queues".to_owned(),
    ];
    let posts = [
        (
            format!("/api/ops/jobs/{job}/replay"),
            json!({"reason": "x"}),
        ),
        (
            format!("/api/ops/jobs/{job}/discard"),
            json!({"reason": "x"}),
        ),
        (
            "/api/ops/jobs/replay".to_owned(),
            json!({"filter": {}, "reason": "x"}),
        ),
        (
            "/api/ops/jobs/discard".to_owned(),
            json!({"filter": {}, "reason": "x"}),
        ),
    ];
    for token in [
        app.staff_token(),
        app.customer_token("cust-1"),
        app.token("crew-1", Role::Crew, None),
    ] {
        for path in &gets {
            let (status, body) = get_json(&app, path, &token).await;
            assert_eq!(status, 403, "GET {path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
        for (path, body) in &posts {
            let (status, answer) = post(&app, path, &token, body.clone()).await;
            assert_eq!(status, 403, "POST {path}: {answer}");
        }
    }
    let (status, _) = get_json(&app, "/api/ops/jobs", "not-a-token").await;
    assert_eq!(status, 401);
    // Nothing was acted on.
    assert_eq!(app.count("ops_audit").await, 0);
    assert_eq!(app.count("ops_actions").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_filters_are_refused_naming_the_field() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let token = operator(&app);
    for (query, field) in [
        ("state=zombie", "state"),
        ("kind=no.such.kind", "kind"),
        ("error_class=gremlins", "error_class"),
        ("communication_id=42", "communication_id"),
        ("customer_id=a/b", "customer_id"),
        ("older_than=3%20weeks", "older_than"),
        ("newer_than=5y", "newer_than"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("cursor=bogus", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = get_json(&app, &format!("/api/ops/jobs?{query}"), &token).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{query}: {message}");
    }
    for (filter, field) in [
        (json!({"state": "succeeded"}), "filter.state"),
        (json!({"kind": ["message.deliver", "nope"]}), "filter.kind"),
        (json!({"older_than": 5}), "filter.older_than"),
        (json!({"shape": "round"}), "filter.shape"),
    ] {
        let (status, body) = post(
            &app,
            "/api/ops/jobs/replay",
            &token,
            json!({"filter": filter, "reason": "clean-up"}),
        )
        .await;
        assert_eq!(status, 400, "{filter}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{filter}: {message}");
    }
    for path in [
        "/api/ops/audit?action=nuke",
        "/api/ops/audit?job_id=1",
        "/api/ops/actions?x=1",
    ] {
        let (status, body) = get_json(&app, path, &token).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    // A reason is required and bounded; the job id must be a UUID.
    let job = dead_jobs(&app, 1).await[0];
    for reason in ["", "   ", &"x".repeat(501)] {
        let (status, _) = post(
            &app,
            &format!("/api/ops/jobs/{job}/replay"),
            &token,
            json!({ "reason": reason }),
        )
        .await;
        assert_eq!(status, 422, "{reason:?}");
    }
    let (status, _) = post(
        &app,
        "/api/ops/jobs/42/replay",
        &token,
        json!({"reason": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &app,
        &format!("/api/ops/jobs/{}/replay", Uuid::now_v7()),
        &token,
        json!({"reason": "x"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(app.count("ops_audit").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_send_is_found_inspected_replayed_and_delivered_once() {
    let delivery = FailingDelivery::default();
    delivery.failing.store(true, Ordering::SeqCst);
    let app = spawn_app_with(TestOptions::with_typed(delivery.clone())).await;
    let token = operator(&app);
    let staff = app.staff_token();
    let sent = app.send_job_ok(&staff, "cust-1", "hello").await;
    let communication = sent["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&communication, "failed").await;
    let job = job_of(&app, &communication).await;
    app.wait_for_job_state(&job, "dead").await;

    // Findable by state, kind, error class, customer and communication, with counts.
    let query = format!(
        "/api/ops/jobs?state=dead&kind=message.deliver&error_class=permanent&customer_id=cust-1&communication_id={communication}&newer_than=1h"
    );
    let (status, listed) = get_json(&app, &query, &token).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(listed["jobs"][0]["id"], job);
    assert_eq!(listed["jobs"][0]["last_error"], "the recipient refused it");
    assert_eq!(listed["counts"]["total"], 1);
    assert_eq!(listed["counts"]["by_state"]["dead"], 1);
    assert_eq!(listed["counts"]["by_error_class"]["permanent"], 1);
    let (_, none) = get_json(&app, "/api/ops/jobs?state=dead&older_than=1h", &token).await;
    assert_eq!(none["counts"]["total"], 0, "{none}");

    let (status, shown) = get_json(&app, &format!("/api/ops/jobs/{job}"), &token).await;
    assert_eq!(status, 200);
    assert_eq!(shown["payload"]["communication_id"], communication.as_str());
    assert_eq!(shown["communication"]["status"], "failed");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "permanent");
    assert_eq!(attempts[0]["error_class"], "permanent");
    assert!(attempts[0]["duration_ms"].as_i64().unwrap() >= 0);

    // Replayed: the communication is queued again (and the conversation told), then sent.
    delivery.failing.store(false, Ordering::SeqCst);
    let (status, replayed) = post(
        &app,
        &format!("/api/ops/jobs/{job}/replay"),
        &token,
        json!({"reason": "recipient fixed their settings"}),
    )
    .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["previous_state"], "dead");
    assert_eq!(replayed["job"]["generation"], 1);
    assert!(replayed["job"]["last_error"].is_null());
    let requeued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM communications WHERE id = $1::uuid AND status IN ('queued', 'sent')
           AND failure_reason IS NULL",
    )
    .bind(&communication)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(requeued, 1);
    app.wait_for_job_state(&job, "succeeded").await;
    app.wait_for_status(&communication, "sent").await;

    // History kept: both attempts, the replay in the audit with the error it cleared.
    let (_, shown) = get_json(&app, &format!("/api/ops/jobs/{job}"), &token).await;
    let outcomes: Vec<&str> = shown["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["permanent", "succeeded"]);
    assert_eq!(shown["job"]["attempts"], 2);
    assert_eq!(shown["job"]["attempts_since_replay"], 1);
    let audit = shown["audit"].as_array().unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["operator"], "ops-1");
    assert_eq!(audit[0]["action"], "replay");
    assert_eq!(audit[0]["reason"], "recipient fixed their settings");
    assert_eq!(audit[0]["previous_state"], "dead");
    assert_eq!(audit[0]["previous_error"], "the recipient refused it");

    // A job that succeeded is not replayed again, and the answer says why.
    let (status, refused) = post(
        &app,
        &format!("/api/ops/jobs/{job}/replay"),
        &token,
        json!({"reason": "again"}),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already succeeded")
    );
    let (status, _) = post(
        &app,
        &format!("/api/ops/jobs/{job}/discard"),
        &token,
        json!({"reason": "tidy"}),
    )
    .await;
    assert_eq!(status, 409);
    let (_, audit) = get_json(&app, &format!("/api/ops/audit?job_id={job}"), &token).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_pages_with_a_cursor() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let token = operator(&app);
    let ids = dead_jobs(&app, 5).await;
    // Newest first: created one second apart, the first inserted is the newest.
    let mut seen = Vec::new();
    let mut path = "/api/ops/jobs?state=dead&limit=2".to_owned();
    loop {
        let (status, page) = get_json(&app, &path, &token).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["counts"]["total"], 5);
        for job in page["jobs"].as_array().unwrap() {
            seen.push(job["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/ops/jobs?state=dead&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every job once, newest first");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_replay_runs_in_batches_with_progress_to_done() {
    let counting = Counting::default();
    let app = spawn_app_with(TestOptions::with_handler(counting.clone())).await;
    let token = operator(&app);
    // More than one batch (500).
    let ids = dead_jobs(&app, 1100).await;

    let (status, started) = post(
        &app,
        "/api/ops/jobs/replay",
        &token,
        json!({"filter": {"kind": "receipt.apply", "error_class": ["permanent"]}, "reason": "provider outage over"}),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let action = &started["action"];
    assert_eq!(action["matched"], 1100);
    assert_eq!(action["filter"]["states"], json!(["dead"]));
    let done = wait_for_action(&app, action["id"].as_str().unwrap()).await;
    assert_eq!(done["done"], 1100, "{done}");
    assert_eq!(done["skipped"], 0);
    assert_eq!(done["errors"], 0);
    assert!(done["finished_at"].is_string());

    eventually(
        "every replayed job to run",
        Duration::from_secs(30),
        || async {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE kind = 'receipt.apply' AND state <> 'succeeded'",
            )
            .fetch_one(&app.pool)
            .await
            .ok()?;
            (left == 0).then_some(())
        },
    )
    .await;
    let runs = counting.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1100);
    assert!(ids.iter().all(|id| runs.get(id) == Some(&1)));
    // One audit entry for the action, one per job.
    let (_, audit) = get_json(&app, "/api/ops/audit?action=bulk_replay", &token).await;
    assert_eq!(audit["entries"][0]["matched"], 1100);
    assert_eq!(audit["entries"][0]["reason"], "provider outage over");
    let per_job: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ops_audit WHERE action = 'replay' AND action_id = $1::uuid",
    )
    .bind(action["id"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(per_job, 1100);
    let (_, listed) = get_json(&app, "/api/ops/actions", &token).await;
    assert_eq!(listed["actions"][0]["id"], action["id"]);
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_operators_replaying_one_filter_replay_each_job_once() {
    let counting = Counting::default();
    let app = spawn_app_with(TestOptions::with_handler(counting.clone())).await;
    let ids = dead_jobs(&app, 700).await;
    let first = app.token("ops-1", Role::Operator, None);
    let second = app.token("ops-2", Role::Operator, None);
    let body = json!({"filter": {"state": "dead"}, "reason": "both at once"});
    let ((s1, a), (s2, b)) = tokio::join!(
        post(&app, "/api/ops/jobs/replay", &first, body.clone()),
        post(&app, "/api/ops/jobs/replay", &second, body.clone()),
    );
    assert_eq!((s1, s2), (202, 202), "{a} {b}");
    let a = wait_for_action(&app, a["action"]["id"].as_str().unwrap()).await;
    let b = wait_for_action(&app, b["action"]["id"].as_str().unwrap()).await;
    assert_eq!(
        a["done"].as_i64().unwrap() + b["done"].as_i64().unwrap(),
        700,
        "{a} {b}"
    );
    app.assert_no_jobs_left().await;
    let runs = counting.runs.lock().unwrap().clone();
    assert!(
        ids.iter().all(|id| runs.get(id) == Some(&1)),
        "each job ran once"
    );
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT job_id FROM ops_audit WHERE action = 'replay'
                               GROUP BY job_id HAVING count(*) > 1) t",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(twice, 0);
    let generations: Vec<i32> =
        sqlx::query_scalar("SELECT DISTINCT generation FROM jobs WHERE kind = 'receipt.apply'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(generations, [1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn discards_cancel_jobs_and_fail_what_they_would_have_sent() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let token = operator(&app);
    // A message whose delivery never ran: discarding it fails the communication.
    let sent = app
        .send_job_ok(&app.staff_token(), "cust-1", "never mind")
        .await;
    let communication = sent["id"].as_str().unwrap().to_owned();
    let job = job_of(&app, &communication).await;
    let (status, discarded) = post(
        &app,
        &format!("/api/ops/jobs/{job}/discard"),
        &token,
        json!({"reason": "sent by mistake"}),
    )
    .await;
    assert_eq!(status, 200, "{discarded}");
    assert_eq!(discarded["job"]["state"], "cancelled");
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, failure_reason FROM communications WHERE id = $1::uuid")
            .bind(&communication)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert_eq!(reason.unwrap(), "discarded by an operator: sent by mistake");
    let (status, again) = post(
        &app,
        &format!("/api/ops/jobs/{job}/discard"),
        &token,
        json!({"reason": "twice"}),
    )
    .await;
    assert_eq!(status, 409, "{again}");

    // In bulk: only what the filter names.
    let dead = dead_jobs(&app, 3).await;
    let (status, started) = post(
        &app,
        "/api/ops/jobs/discard",
        &token,
        json!({"filter": {"kind": "receipt.apply", "state": "dead"}, "reason": "obsolete receipts"}),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let mut app = app;
    app.start_workers();
    let done = wait_for_action(&app, started["action"]["id"].as_str().unwrap()).await;
    assert_eq!(done["done"], 3);
    let cancelled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = ANY($1) AND state = 'cancelled'")
            .bind(&dead)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(cancelled, 3);
    let (_, audit) = get_json(&app, "/api/ops/audit?operator=ops-1&action=discard", &token).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_while_the_broker_is_down_is_carried_out_when_it_returns() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let counting = Counting::default();
    let app = spawn_app_with(TestOptions {
        api_amqp_url: Some(proxy.amqp_url()),
        workers_amqp_url: Some(proxy.amqp_url()),
        ..TestOptions::with_handler(counting.clone())
    })
    .await;
    let token = operator(&app);
    let job = dead_jobs(&app, 1).await[0];

    proxy.cut();
    let (status, replayed) = post(
        &app,
        &format!("/api/ops/jobs/{job}/replay"),
        &token,
        json!({"reason": "during the outage"}),
    )
    .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["job"]["state"], "pending");
    // Queue health still answers, from the ledger, and says the broker is away.
    let (status, health) = get_json(&app, "/api/ops/queues", &token).await;
    assert_eq!(status, 200);
    assert_eq!(health["broker"]["reachable"], false, "{health}");
    assert!(health["broker"]["error"].is_string());
    assert_eq!(health["ledger"]["outbox"]["pending"], 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(counting.runs.lock().unwrap().is_empty());

    proxy.restore();
    app.wait_for_job_state(&job.to_string(), "succeeded").await;
    assert_eq!(counting.runs.lock().unwrap()[&job], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_from_before_a_replay_is_ignored() {
    let counting = Counting::default();
    let mut app = spawn_app_with(TestOptions {
        start_workers: false,
        ..TestOptions::with_handler(counting.clone())
    })
    .await;
    let job = dead_jobs(&app, 1).await[0];
    // Replayed once and published: the row is generation 1.
    sqlx::query(
        "UPDATE jobs SET state = 'queued', generation = 1, attempt_base = attempts WHERE id = $1",
    )
    .bind(job)
    .execute(&app.pool)
    .await
    .unwrap();
    let envelope = serde_json::to_vec(&Envelope {
        job_id: job,
        kind: kinds::RECEIPT_APPLY.into(),
        payload: json!({}),
    })
    .unwrap();
    let (connection, channel) = app.broker_channel().await;
    let exchange = app.topology.jobs_exchange();
    let publish = |properties| {
        let channel = channel.clone();
        let envelope = envelope.clone();
        let exchange = exchange.clone();
        async move {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    kinds::RECEIPT_APPLY.into(),
                    BasicPublishOptions::default(),
                    &envelope,
                    properties,
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    // The stale copy (generation 0) first: acked and ignored.
    publish(job_properties(job)).await;
    app.start_workers();
    let queue = app.topology.work_queue(kinds::RECEIPT_APPLY);
    eventually("the stale copy to be consumed", WAIT, || async {
        (app.queue_depth(&queue).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(counting.runs.lock().unwrap().is_empty());
    assert!(app.attempts(&job.to_string()).await.is_empty());
    assert_eq!(
        app.wait_for_job_state(&job.to_string(), "queued").await["generation"],
        1
    );
    // The replay's own copy runs it.
    publish(job_properties_at(job, 1)).await;
    app.wait_for_job_state(&job.to_string(), "succeeded").await;
    assert_eq!(counting.runs.lock().unwrap()[&job], 1);
    connection.close(200, "bye".into()).await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_health_counts_the_broker_and_the_ledger() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let token = operator(&app);
    for text in ["one", "two", "three"] {
        app.send_job_ok(&app.staff_token(), "cust-1", text).await;
    }
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, state, attempts, max_attempts, next_attempt_at, first_failed_at, last_error)
         VALUES ($1, 'receipt.apply', '{}', 'retrying', 2, 5, now() + interval '1 hour', now() - interval '5 minutes', 'slow')",
    )
    .bind(Uuid::now_v7())
    .execute(&app.pool)
    .await
    .unwrap();
    dead_jobs(&app, 2).await;
    let health = eventually("the three messages to reach their queue", WAIT, || async {
        let (_, health) = get_json(&app, "/api/ops/queues", &token).await;
        let work = health["broker"]["queues"]["work"].as_array()?.clone();
        let deliver = work.iter().find(|q| q["kind"] == "message.deliver")?;
        // The relay marks them queued once the broker confirmed them.
        (deliver["messages"] == 3 && health["ledger"]["by_state"]["queued"] == 3).then_some(health)
    })
    .await;
    assert_eq!(health["broker"]["reachable"], true);
    let work = health["broker"]["queues"]["work"].as_array().unwrap();
    assert_eq!(work.len(), kinds::ALL.len());
    assert!(work.iter().all(|q| q["consumers"] == 0), "no workers run");
    let delay = health["broker"]["queues"]["delay"].as_array().unwrap();
    let tiers: Vec<&str> = delay.iter().map(|q| q["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["100ms", "200ms", "400ms", "1s"]);
    assert_eq!(health["broker"]["queues"]["dead"]["exists"], true);
    let ledger = &health["ledger"];
    assert_eq!(ledger["by_state"]["queued"], 3);
    assert_eq!(ledger["by_state"]["retrying"], 1);
    assert_eq!(ledger["by_state"]["dead"], 2);
    assert_eq!(ledger["by_state"]["succeeded"], 0);
    assert_eq!(ledger["outbox"]["pending"], 0);
    assert_eq!(ledger["oldest_retrying"]["last_error"], "slow");
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_prunes_finished_jobs_and_keeps_dead_ones() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let ids: Vec<(Uuid, &str, i64)> = vec![
        (Uuid::now_v7(), "succeeded", 200),
        (Uuid::now_v7(), "cancelled", 200),
        (Uuid::now_v7(), "dead", 2000),
        (Uuid::now_v7(), "succeeded", 1),
    ];
    for (id, state, hours_ago) in &ids {
        sqlx::query(
            "INSERT INTO jobs (id, kind, payload, state, attempts, max_attempts, finished_at)
             VALUES ($1, 'receipt.apply', '{}', $2, 1, 5, now() - make_interval(hours => $3::int))",
        )
        .bind(id)
        .bind(state)
        .bind(*hours_ago as i32)
        .execute(&app.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, started_at, outcome, worker)
             VALUES ($1, 1, now(), 'succeeded', 'w')",
        )
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, response_body, created_at)
         VALUES ('u', 'old', 'h', 202, '{}', now() - interval '25 hours'),
                ('u', 'new', 'h', 202, '{}', now())",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO webhook_receipts (provider, notification_id, event, job_id, received_at)
         VALUES ('ringcentral', 'old', 'e', gen_random_uuid(), now() - interval '25 hours'),
                ('ringcentral', 'new', 'e', gen_random_uuid(), now())",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let pruned = commcenter_workers::retention::prune(
        &app.pool,
        &commcenter_workers::retention::Keep {
            jobs: Duration::from_secs(168 * 3600),
            idempotency_keys: Duration::from_secs(24 * 3600),
            events: Duration::from_secs(24 * 3600),
            locations: Duration::from_secs(72 * 3600),
        },
        1,
    )
    .await
    .unwrap();
    assert_eq!(pruned.jobs, 2);
    assert_eq!(pruned.idempotency_keys, 1);
    assert_eq!(pruned.webhook_receipts, 1);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        left,
        [ids[2].0, ids[3].0],
        "the dead and the recent job stay"
    );
    let attempts: Vec<Uuid> = sqlx::query_scalar("SELECT job_id FROM job_attempts ORDER BY job_id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(attempts, left, "attempts go with their jobs");
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, ["new"]);
    let receipts: Vec<String> = sqlx::query_scalar("SELECT notification_id FROM webhook_receipts")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(receipts, ["new"]);
}
