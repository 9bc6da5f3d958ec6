//! (a) Burn-down: N no-op jobs already in the ledger (`queued`) and on their work queue,
//! then the workers runtime is started and timed until every row is `succeeded`.
//! Also the ledger-only ceiling: the runtime's per-job transaction with no broker.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use serde_json::json;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use commcenter_shared::{
    ledger::jobs::{self, Attempt, Envelope},
    ledger::relay::job_properties,
};
use commcenter_tests::{TestApp, TestOptions, spawn_app_with};
use commcenter_workers::Registry;

use crate::{
    Options,
    ceiling::Confirms,
    probe::{CpuSnapshot, DbCounters},
    report::{Report, Row, Target, number},
    system::{self, NOOP, Noop, Workers},
};

/// The longest a burn-down may take before it is reported as timed out.
const BURN_TIMEOUT: Duration = Duration::from_secs(90);

pub async fn run(options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let n = options.jobs();
    // The baseline first: one job a transaction, as before batching.
    let single = burn_down(options, n, 1).await?;
    let single_rate = single.succeeded as f64 / single.elapsed.as_secs_f64();
    report.note(format!(
        "(a) baseline, one job a transaction (WORKER_BATCH_SIZE=1): {} jobs/s; {}",
        number(single_rate),
        single.db.describe_per(single.succeeded, "job")
    ));
    let burned = burn_down(options, n, options.batch_size).await?;

    let rate = burned.succeeded as f64 / burned.elapsed.as_secs_f64();
    report.set_baseline("a.jobs_per_s", rate);
    let beside = format!(
        "{}; {}; one job a transaction: {} jobs/s",
        report.baseline("d.msgs_per_s", "broker ceiling (d)", "msgs/s"),
        report.baseline("ledger.tx_per_s", "ledger tx alone", "tx/s"),
        number(single_rate),
    );
    let timed_out = if burned.succeeded < n {
        format!(" (TIMED OUT: {} of {n} done)", burned.succeeded)
    } else {
        String::new()
    };
    report.row(Row {
        scenario: "(a) burn-down",
        measure: format!(
            "{n} pre-enqueued no-op jobs to 'succeeded', batches of up to {}{timed_out}",
            options.batch_size
        ),
        value: rate,
        unit: "jobs/s",
        target: Target::AtLeast(5_000.0),
        beside,
    });
    if let Some(steady) = burned.steady_rate {
        report.note(format!(
            "(a) steady state (10% to 90% done): {} jobs/s; pre-enqueue published at {} msgs/s",
            number(steady),
            number(burned.publish_rate)
        ));
    }
    report.note(format!("(a) {}", burned.cpu.describe()));
    report.note(format!(
        "(a) {}",
        burned.db.describe_per(burned.succeeded, "job")
    ));
    report.detail(
        "burn_down",
        json!({
            "jobs": n, "succeeded": burned.succeeded, "elapsed_s": burned.elapsed.as_secs_f64(),
            "jobs_per_s": rate, "steady_jobs_per_s": burned.steady_rate,
            "publish_msgs_per_s": burned.publish_rate,
            "prefetch": options.prefetch, "db_connections": options.db_connections,
            "batch_size": options.batch_size, "single_jobs_per_s": single_rate,
            "single_db": single.db.to_json(single.succeeded),
            "cpu": burned.cpu.to_json(), "db": burned.db.to_json(burned.succeeded),
        }),
    );
    Ok(())
}

/// One burn-down of `n` no-op jobs by a runtime running batches of up to `batch_size`.
async fn burn_down(options: &Options, n: u64, batch_size: usize) -> anyhow::Result<Burned> {
    eprintln!(
        "(a) burn-down: {n} no-op jobs, prefetch {}, {} db connections, batches of up to {batch_size}",
        options.prefetch, options.db_connections
    );
    let ran = Arc::new(AtomicU64::new(0));
    let registry = Registry::default().with_any(Arc::new(Noop { ran: ran.clone() }));
    // No harness workers: ours start only once everything is enqueued, on a bigger pool.
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        // Known to the harness so its queue is deleted with the rest.
        handlers: vec![Arc::new(Noop { ran: ran.clone() })],
        prefetch: options.prefetch,
        ..Default::default()
    })
    .await;
    let result = burn(options, &app, registry, ran, n, batch_size).await;
    drop(app);
    result
}

struct Burned {
    succeeded: u64,
    elapsed: Duration,
    steady_rate: Option<f64>,
    publish_rate: f64,
    cpu: crate::probe::CpuUsage,
    db: DbCounters,
}

async fn burn(
    options: &Options,
    app: &TestApp,
    registry: Registry,
    ran: Arc<AtomicU64>,
    n: u64,
    batch_size: usize,
) -> anyhow::Result<Burned> {
    // The work queue must exist before anything is published to it.
    let (connection, channel) = app.broker_channel().await;
    app.topology.declare(&channel, &[NOOP]).await?;

    let ids = insert_queued(&app.pool, n).await?;
    let publish_start = Instant::now();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = app.topology.jobs_exchange();
    let mut confirms = Confirms::new();
    for id in &ids {
        let envelope = Envelope {
            job_id: *id,
            kind: NOOP.into(),
            payload: json!({}),
        };
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                NOOP.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &serde_json::to_vec(&envelope)?,
                job_properties(*id),
            )
            .await?;
        confirms.push(confirm).await?;
    }
    confirms.finish().await?;
    let publish_rate = n as f64 / publish_start.elapsed().as_secs_f64();
    connection.close(200, "bye".into()).await.ok();
    let depth = app.queue_depth(&app.topology.work_queue(NOOP)).await;
    anyhow::ensure!(
        u64::from(depth) == n,
        "expected {n} jobs on the work queue, found {depth}"
    );
    eprintln!(
        "    {n} jobs in the ledger and on the queue (published at {publish_rate:.0} msgs/s); starting the workers"
    );

    let db_before = DbCounters::read(&app.pool).await;
    let pool = system::pool(app, options.db_connections).await?;
    let runtime = system::runtime(app, pool.clone(), registry, options.prefetch, batch_size);
    let cpu = CpuSnapshot::take();
    let start = Instant::now();
    let workers = Workers::start(runtime);

    let (mut at_10, mut at_90) = (None, None);
    let mut last_progress = Instant::now();
    let succeeded = loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let done = ran.load(Ordering::Relaxed);
        if at_10.is_none() && done >= n / 10 {
            at_10 = Some((Instant::now(), done));
        }
        if at_90.is_none() && done >= n * 9 / 10 {
            at_90 = Some((Instant::now(), done));
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!(
                "    {done} of {n} run after {:.1}s",
                start.elapsed().as_secs_f64()
            );
        }
        // Every handler has run: now wait for the ledger to show every commit.
        if done >= n {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE kind = $1 AND state <> 'succeeded'",
            )
            .bind(NOOP)
            .fetch_one(&app.pool)
            .await?;
            if open == 0 {
                break n;
            }
        }
        if start.elapsed() > BURN_TIMEOUT {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE kind = $1 AND state = 'succeeded'",
            )
            .bind(NOOP)
            .fetch_one(&app.pool)
            .await?;
            break done as u64;
        }
    };
    let elapsed = start.elapsed();
    let cpu = cpu.usage_since();
    workers.stop().await;
    // Closing the pool ends its backends, which publishes their statistics.
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let db = DbCounters::read(&app.pool).await.since(db_before);
    let steady_rate = match (at_10, at_90) {
        (Some((t10, d10)), Some((t90, d90))) if t90 > t10 => {
            Some((d90 - d10) as f64 / (t90 - t10).as_secs_f64())
        }
        _ => None,
    };
    Ok(Burned {
        succeeded,
        elapsed,
        steady_rate,
        publish_rate,
        cpu,
        db,
    })
}

/// Writes `n` job rows already `queued` (as the relay leaves them) in a few bulk
/// statements; returns their ids in order.
async fn insert_queued(pool: &PgPool, n: u64) -> anyhow::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    for chunk in ids.chunks(25_000) {
        sqlx::query(
            "INSERT INTO jobs (id, kind, payload, state, max_attempts, queued_at)
             SELECT id, $2, '{}'::jsonb, 'queued', 5, now() FROM UNNEST($1::uuid[]) AS t(id)",
        )
        .bind(chunk)
        .bind(NOOP)
        .execute(pool)
        .await
        .context("inserting the jobs")?;
    }
    sqlx::query("ANALYZE jobs").execute(pool).await?;
    Ok(ids)
}

/// The workers' per-job transaction alone (lock the row, savepoint, record the
/// attempt, mark succeeded, commit), with the burn-down's concurrency and no broker:
/// how fast the ledger alone lets jobs finish. Run with the server's
/// `synchronous_commit` and with it off, to show what commit flushes cost.
pub async fn ledger_only(options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let n = (options.jobs() / 2).max(1000);
    eprintln!(
        "ledger-only: {n} job transactions x2 (synchronous_commit on, then off), {} in flight",
        options.prefetch
    );
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let result = async {
        let on = ledger_run(options, &app, n, false).await?;
        let off = ledger_run(options, &app, n, true).await?;
        anyhow::Ok((on, off))
    }
    .await;
    drop(app);
    let (on, off) = result?;
    report.set_baseline("ledger.tx_per_s", on.rate);
    report.row(Row {
        scenario: "ledger tx alone",
        measure: "workers' per-job transaction, no broker".into(),
        value: on.rate,
        unit: "tx/s",
        target: Target::None,
        beside: "ceiling of (a) set by PostgreSQL".into(),
    });
    report.row(Row {
        scenario: "ledger tx alone",
        measure: "same, synchronous_commit=off".into(),
        value: off.rate,
        unit: "tx/s",
        target: Target::None,
        beside: format!(
            "x{:.1} without waiting for the WAL flush",
            off.rate / on.rate
        ),
    });
    report.note(format!("ledger tx alone: {}", on.cpu.describe()));
    report.note(format!("ledger tx alone: {}", on.db.describe_per(n, "job")));
    report.detail(
        "ledger_only",
        json!({
            "jobs": n, "in_flight": options.prefetch, "db_connections": options.db_connections,
            "tx_per_s": on.rate, "cpu": on.cpu.to_json(), "db": on.db.to_json(n),
            "async_commit_tx_per_s": off.rate, "async_commit_cpu": off.cpu.to_json(),
        }),
    );
    Ok(())
}

struct LedgerRun {
    rate: f64,
    cpu: crate::probe::CpuUsage,
    db: DbCounters,
}

async fn ledger_run(
    options: &Options,
    app: &TestApp,
    n: u64,
    async_commit: bool,
) -> anyhow::Result<LedgerRun> {
    let ids = Arc::new(insert_queued(&app.pool, n).await?);
    let mut connect = PgConnectOptions::from_str(app.settings.database.url.expose())?;
    if async_commit {
        connect = connect.options([("synchronous_commit", "off")]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(options.db_connections)
        .acquire_timeout(Duration::from_secs(120))
        .connect_with(connect)
        .await?;
    let db_before = DbCounters::read(&app.pool).await;
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = CpuSnapshot::take();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..options.prefetch {
        let (pool, ids, next) = (pool.clone(), ids.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return anyhow::Ok(());
                };
                job_transaction(&pool, *id).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = start.elapsed();
    let cpu = cpu.usage_since();
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let db = DbCounters::read(&app.pool).await.since(db_before);
    // The rows are done with: the next run starts from the same table size.
    sqlx::query("DELETE FROM jobs").execute(&app.pool).await?;
    Ok(LedgerRun {
        rate: n as f64 / elapsed.as_secs_f64(),
        cpu,
        db,
    })
}

/// What `Runtime::run_job` does to the database for a job that succeeds.
async fn job_transaction(pool: &PgPool, id: Uuid) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let row = jobs::lock(&mut tx, id).await?.context("the job row")?;
    let attempt = row.attempts + 1;
    let started_at = Utc::now();
    let effects = sqlx::Connection::begin(&mut *tx).await?;
    effects.commit().await?;
    let record = Attempt {
        job_id: id,
        attempt,
        started_at,
        outcome: "succeeded",
        error_class: None,
        error: None,
        retry_in_ms: None,
        worker: "bench-ledger",
        provider: Default::default(),
    };
    jobs::record_successes(&mut tx, &[record]).await?;
    tx.commit().await?;
    Ok(())
}
