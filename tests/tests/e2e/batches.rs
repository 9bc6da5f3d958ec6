//! Batched execution: deliveries of a batching kind that are ready together run in one
//! transaction, each handler in its own savepoint, and a batch whose transaction fails
//! runs its jobs again one at a time.

use std::time::Duration;

use async_trait::async_trait;
use commcenter_tests::{TestApp, TestOptions, eventually, spawn_app_with};
use commcenter_workers::{AnyHandler, JobContext, JobError};
use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::{WAIT, retries::enqueue};

const KIND: &str = "test.batched";

/// Does what its payload's `mode` says, leaving a marker row (job id and the id of
/// the transaction it ran in) for what it did.
struct Batched;

#[async_trait]
impl AnyHandler for Batched {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn batches(&self) -> bool {
        true
    }

    async fn run(&self, conn: &mut PgConnection, job: &JobContext) -> Result<(), JobError> {
        sqlx::query("INSERT INTO batch_markers (job_id, txid) VALUES ($1, txid_current())")
            .bind(job.id)
            .execute(&mut *conn)
            .await?;
        match job.payload["mode"].as_str() {
            Some("permanent") => Err(JobError::permanent("refused on purpose")),
            // A failing statement: its savepoint is undone, the batch goes on.
            Some("bad_sql") if job.attempt == 1 => {
                sqlx::query("SELECT 1 / 0").execute(&mut *conn).await?;
                Ok(())
            }
            // Passes its savepoint, but the transaction cannot commit (a deferred
            // unique constraint): the whole batch's commit fails.
            Some("poison") => {
                sqlx::query("INSERT INTO batch_poison (id) VALUES (1), (1)")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

async fn app_with_batches() -> TestApp {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        handlers: vec![std::sync::Arc::new(Batched)],
        ..Default::default()
    })
    .await;
    sqlx::raw_sql(
        "CREATE TABLE batch_markers (job_id uuid NOT NULL, txid bigint NOT NULL);
         CREATE TABLE batch_poison (id int, CONSTRAINT once UNIQUE (id) DEFERRABLE INITIALLY DEFERRED);",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    app
}

/// Enqueues one job per mode and waits until all are on the work queue, so that the
/// workers, started next, find them ready together.
async fn enqueue_ready(app: &TestApp, modes: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for mode in modes {
        ids.push(enqueue(app, KIND, json!({ "mode": mode })).await);
    }
    let queue = app.topology.work_queue(KIND);
    eventually("the jobs on their queue", WAIT, || async {
        (app.queue_depth(&queue).await as usize == modes.len()).then_some(())
    })
    .await;
    ids
}

async fn markers(app: &TestApp, job_id: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT txid FROM batch_markers WHERE job_id = $1::uuid")
        .bind(job_id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_jobs_run_in_one_transaction_and_a_failure_undoes_only_itself() {
    let mut app = app_with_batches().await;
    let modes = ["ok", "permanent", "ok", "bad_sql", "ok", "ok"];
    let ids = enqueue_ready(&app, &modes).await;
    app.start_workers();
    for (id, mode) in ids.iter().zip(modes) {
        let state = if mode == "permanent" {
            "dead"
        } else {
            "succeeded"
        };
        app.wait_for_job_state(id, state).await;
    }
    // The successes of the first pass share one transaction: they ran as one batch.
    let mut first = Vec::new();
    for i in [0, 2, 4, 5] {
        let m = markers(&app, &ids[i]).await;
        assert_eq!(m.len(), 1, "one effect per job: {m:?}");
        first.push(m[0]);
    }
    assert!(first.iter().all(|t| *t == first[0]), "one batch: {first:?}");
    // The refused job's write and the failed statement's were undone with their savepoints.
    assert!(markers(&app, &ids[1]).await.is_empty());
    let retried = markers(&app, &ids[3]).await;
    assert_eq!(retried.len(), 1, "only the retry's effect: {retried:?}");
    assert_ne!(
        retried[0], first[0],
        "the retry ran later, in a transaction of its own"
    );
    let attempts = app.attempts(&ids[3]).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "transient");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("division by zero"),
        "{}",
        attempts[0]["error"]
    );
    let dead = app.attempts(&ids[1]).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["outcome"], "permanent");
    for id in [&ids[0], &ids[2]] {
        let attempts = app.attempts(id).await;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["outcome"], "succeeded");
        assert_eq!(attempts[0]["attempt"], 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_that_cannot_commit_runs_its_jobs_one_at_a_time() {
    let mut app = app_with_batches().await;
    let modes = ["ok", "ok", "poison", "ok"];
    let ids = enqueue_ready(&app, &modes).await;
    app.start_workers();
    let good = [0, 1, 3];
    for &i in &good {
        app.wait_for_job_state(&ids[i], "succeeded").await;
    }
    // Each good job's effect is there once, from a transaction of its own; the failed
    // batch's effects are gone with it.
    let mut txids = Vec::new();
    for &i in &good {
        let m = markers(&app, &ids[i]).await;
        assert_eq!(m.len(), 1, "one effect per job: {m:?}");
        txids.push(m[0]);
    }
    txids.sort();
    txids.dedup();
    assert_eq!(txids.len(), good.len(), "one transaction each");
    // The poison job never committed: it waits for its own retry of the bookkeeping.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let poison: Value = sqlx::query_scalar("SELECT to_jsonb(jobs) FROM jobs WHERE id = $1::uuid")
        .bind(&ids[2])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_ne!(poison["state"], "succeeded", "{poison}");
    assert!(markers(&app, &ids[2]).await.is_empty());
}

/// An operator's replay beside a stale copy of the same job, ready together: the stale
/// copy is ignored in the batch, and the replay's copy still runs the job (after the
/// batch, alone).
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_copy_beside_its_replay_in_one_batch_does_not_swallow_the_replay() {
    use commcenter_shared::{
        ledger::jobs::Envelope,
        ledger::relay::{job_properties, job_properties_at},
    };
    use lapin::options::BasicPublishOptions;

    let mut app = app_with_batches().await;
    let ids = enqueue_ready(&app, &["ok", "ok"]).await;
    let job: uuid::Uuid = ids[1].parse().unwrap();
    // Replayed meanwhile: the row is generation 1, and the queue holds the generation-0
    // copy (published by the relay) before the replay's own.
    sqlx::query("UPDATE jobs SET generation = 1 WHERE id = $1")
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
    let envelope = serde_json::to_vec(&Envelope {
        job_id: job,
        kind: KIND.into(),
        payload: json!({ "mode": "ok" }),
    })
    .unwrap();
    let (connection, channel) = app.broker_channel().await;
    // Confirmed, so both copies are on the queue before the connection closes.
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    for properties in [job_properties(job), job_properties_at(job, 1)] {
        channel
            .basic_publish(
                app.topology.jobs_exchange().as_str().into(),
                KIND.into(),
                BasicPublishOptions::default(),
                &envelope,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    connection.close(200, "bye".into()).await.ok();
    let queue = app.topology.work_queue(KIND);
    eventually("four copies on the queue", WAIT, || async {
        (app.queue_depth(&queue).await == 4).then_some(())
    })
    .await;
    app.start_workers();
    for id in &ids {
        app.wait_for_job_state(id, "succeeded").await;
    }
    assert_eq!(markers(&app, &ids[1]).await.len(), 1, "run once");
    let attempts = app.attempts(&ids[1]).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
}
