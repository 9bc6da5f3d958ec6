//! The system under test, built on the test harness: `spawn_app_with` gives a database
//! and a queue prefix of its own (dropped afterwards); the workers, and optionally the
//! api, are built here with production-sized PostgreSQL pools, since the harness fixes
//! its pool at 8 connections shared by its api, relay and workers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use clap::ValueEnum;
use sqlx::{PgConnection, PgPool, postgres::PgPoolOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use commcenter_api::App;
use commcenter_shared::{ledger::retry::RetryPolicy, platform::settings::Secret};
use commcenter_tests::{TestApp, broker_url};
use commcenter_workers::{AnyHandler, JobContext, JobError, Registry, Runtime};

/// The job kind of the burn-down: its handler does nothing, so what is measured is
/// the runtime and the ledger.
pub const NOOP: &str = "bench.noop";

pub struct Noop {
    /// Jobs run so far: progress without querying the ledger (a count over the jobs
    /// table would cost the database more than the jobs do).
    pub ran: Arc<AtomicU64>,
}

#[async_trait]
impl AnyHandler for Noop {
    fn kind(&self) -> &'static str {
        NOOP
    }

    /// It stands for the quick database-only kinds, which batch.
    fn batches(&self) -> bool {
        true
    }

    async fn run(&self, _conn: &mut PgConnection, _job: &JobContext) -> Result<(), JobError> {
        self.ran.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A pool on the app's database, sized like production's `DATABASE_MAX_CONNECTIONS`.
pub async fn pool(app: &TestApp, connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(connections)
        // Prefetch may exceed the pool: jobs then queue for a connection, which is
        // what production does too; they must not time out doing so.
        .acquire_timeout(Duration::from_secs(120))
        .connect(app.settings.database.url.expose())
        .await
        .context("connecting the bench pool")
}

/// The workers runtime as `commcenter-workers` builds it, on `pool`.
pub fn runtime(
    app: &TestApp,
    pool: PgPool,
    registry: Registry,
    prefetch: u16,
    batch_size: usize,
) -> Arc<Runtime> {
    let mut broker = app.settings.broker.clone();
    broker.url = Secret::new(broker_url());
    let jobs = &app.settings.jobs;
    Arc::new(Runtime {
        pool,
        broker,
        topology: app.topology.clone(),
        policy: RetryPolicy {
            tiers: jobs.retry_tiers.clone(),
            base: jobs.retry_base,
            max_attempts: jobs.max_attempts,
        },
        registry,
        prefetch,
        batch_size,
        job_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(10),
        worker_name: format!("bench-worker-{}", std::process::id()),
        record_dead_letters: true,
        relay: app.settings.relay.clone(),
        outbox: Default::default(),
        max_deferral: commcenter_workers::runtime::DEFAULT_MAX_DEFERRAL,
        metrics: Default::default(),
    })
}

/// Running workers; `stop` drains them as SIGTERM would.
pub struct Workers {
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Workers {
    pub fn start(runtime: Arc<Runtime>) -> Self {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(runtime.run(shutdown.clone()));
        Self { shutdown, handle }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.ok();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiChoice {
    /// The TestApp's own api (pool fixed at 8 connections by the harness).
    Harness,
    /// A second api instance on the same database and prefix, pool --db-connections.
    Own,
}

/// The api the load goes to.
pub struct Api {
    pub base_url: String,
    pub ws_base: String,
    own: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
}

impl Api {
    pub async fn start(
        app: &TestApp,
        choice: ApiChoice,
        connections: u32,
        ws_buffer: usize,
    ) -> anyhow::Result<Self> {
        if choice == ApiChoice::Harness {
            return Ok(Self {
                base_url: app.base_url.clone(),
                ws_base: format!("ws://{}", app.addr),
                own: None,
            });
        }
        let mut settings = app.settings.clone();
        settings.database.max_connections = connections;
        settings.http.addr = "127.0.0.1:0".parse()?;
        settings.http.ws_buffer = ws_buffer;
        let own = App::build(settings)
            .await
            .context("building the bench's api")?;
        let addr = own.local_addr();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(own.run(shutdown.clone()));
        let api = Self {
            base_url: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
            own: Some((shutdown, handle)),
        };
        // Ready means the notifier is consuming: events sent before would be missed.
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let ready = client.get(format!("{}/readyz", api.base_url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(api);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the bench's api did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        if let Some((shutdown, handle)) = self.own {
            shutdown.cancel();
            handle.await.ok();
        }
    }
}
