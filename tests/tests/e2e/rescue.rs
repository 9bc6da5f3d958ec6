//! The rescuer: a job left `queued` because its broker message was lost is published
//! again and runs; one whose message was only slow runs its effect once all the same.

use std::time::Duration;

use serde_json::{Value, json};

use commcenter_shared::{ledger::jobs::kinds, ops};
use commcenter_tests::{TestApp, TestOptions, eventually, spawn_app_with};

use crate::WAIT;

const MARGIN: Duration = Duration::from_secs(15 * 60);

/// An SMS accepted while no worker runs: its job is on the broker's queue, `queued`.
async fn queued_sms(app: &TestApp) -> (String, String) {
    let response = app
        .post_json(
            "/api/integrations/ringcentral/sms",
            &app.staff_token(),
            &json!({ "customer_id": "cust-1", "to": "+14155550123", "message": "Crew at 9" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let communication = body["id"].as_str().unwrap().to_owned();
    let job = body["job_id"].as_str().unwrap().to_owned();
    app.wait_for_job_state(&job, "queued").await;
    let queue = app.topology.work_queue(kinds::SMS_SEND);
    eventually("the job on its queue", WAIT, || async {
        (app.queue_depth(&queue).await == 1).then_some(())
    })
    .await;
    (communication, job)
}

/// As if it had been queued an hour ago.
async fn age(app: &TestApp, job: &str) {
    sqlx::query("UPDATE jobs SET queued_at = now() - interval '1 hour' WHERE id = $1::uuid")
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
}

fn idle_app() -> TestOptions {
    TestOptions {
        start_workers: false,
        ..Default::default()
    }
}

async fn audit(app: &TestApp, job: &str) -> Vec<(String, String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT operator, action, reason, previous_state FROM ops_audit WHERE job_id = $1::uuid",
    )
    .bind(job)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_message_was_lost_is_published_again_and_runs() {
    let mut app = spawn_app_with(idle_app()).await;
    let (communication, job) = queued_sms(&app).await;
    // The broker loses the message (a queue purged by hand).
    let (connection, channel) = app.broker_channel().await;
    channel
        .queue_purge(
            app.topology.work_queue(kinds::SMS_SEND).as_str().into(),
            Default::default(),
        )
        .await
        .unwrap();
    connection.close(200, "bye".into()).await.ok();

    // Not overdue yet: left alone.
    let early = ops::rescue_overdue(&app.pool, MARGIN, 100).await.unwrap();
    assert!(early.ran);
    assert!(early.jobs.is_empty());

    age(&app, &job).await;
    let rescued = ops::rescue_overdue(&app.pool, MARGIN, 100).await.unwrap();
    let ids: Vec<String> = rescued.jobs.iter().map(|j| j.to_string()).collect();
    assert_eq!(ids, [job.as_str()]);
    // Through the relay, like any job: back on its queue.
    app.wait_for_job_state(&job, "queued").await;
    app.start_workers();
    app.wait_for_job_state(&job, "succeeded").await;
    app.wait_for_status(&communication, "sent").await;
    assert_eq!(app.ringcentral.sent().len(), 1);
    assert_eq!(app.attempts(&job).await.len(), 1);
    let trail = audit(&app, &job).await;
    assert_eq!(trail.len(), 1, "{trail:?}");
    let (operator, action, reason, previous) = &trail[0];
    assert_eq!(
        (operator.as_str(), action.as_str(), previous.as_deref()),
        ("rescuer", "rescue", Some("queued"))
    );
    assert!(
        reason.starts_with("its broker message was overdue: queued since "),
        "{reason}"
    );
    // Rescued once: a second pass finds nothing.
    let again = ops::rescue_overdue(&app.pool, MARGIN, 100).await.unwrap();
    assert!(again.jobs.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_rescued_while_its_message_still_exists_sends_once() {
    let mut app = spawn_app_with(idle_app()).await;
    let (communication, job) = queued_sms(&app).await;
    age(&app, &job).await;
    // The message was only slow: after the rescue, two copies wait on the queue.
    let rescued = ops::rescue_overdue(&app.pool, MARGIN, 100).await.unwrap();
    assert_eq!(rescued.jobs.len(), 1);
    let queue = app.topology.work_queue(kinds::SMS_SEND);
    eventually("both copies on the queue", WAIT, || async {
        (app.queue_depth(&queue).await == 2).then_some(())
    })
    .await;
    app.start_workers();
    app.wait_for_job_state(&job, "succeeded").await;
    app.wait_for_status(&communication, "sent").await;
    eventually("both copies taken", WAIT, || async {
        (app.queue_depth(&queue).await == 0).then_some(())
    })
    .await;
    // The stale copy ran nothing: one attempt, one SMS.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.ringcentral.sent().len(), 1);
    assert_eq!(app.attempts(&job).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_process_rescues_at_a_time_and_running_or_recent_jobs_are_left_alone() {
    let app = spawn_app_with(idle_app()).await;
    let (_, job) = queued_sms(&app).await;
    age(&app, &job).await;
    // Another process is rescuing: this pass does nothing.
    let mut other = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ops::RESCUE_LOCK)
        .execute(&mut *other)
        .await
        .unwrap();
    let blocked = ops::rescue_overdue(&app.pool, MARGIN, 100).await.unwrap();
    assert!(!blocked.ran);
    assert!(blocked.jobs.is_empty());
    other.rollback().await.unwrap();
    // A worker holds the row (running it): skipped, not waited for.
    let mut holder = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1::uuid FOR UPDATE")
        .bind(&job)
        .execute(&mut *holder)
        .await
        .unwrap();
    let skipped = ops::rescue_overdue(&app.pool, MARGIN, 100).await.unwrap();
    assert!(skipped.ran);
    assert!(skipped.jobs.is_empty(), "a locked row is skipped");
    holder.rollback().await.unwrap();
    // Released: rescued.
    let rescued = ops::rescue_overdue(&app.pool, MARGIN, 100).await.unwrap();
    assert_eq!(rescued.jobs.len(), 1);
}
