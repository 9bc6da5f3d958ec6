//! `providers`: sends per second through each provider path, retry overhead and the
//! memory of a worker with many sends outstanding, each beside its baseline, measured in
//! one run (`cargo run --release -p commcenter-bench --bin providers -- [--quick]`).
//!
//! The real `commcenter-workers` binary runs as a child process (so its resident memory
//! and CPU time can be read from `/proc`), against the fake RingCentral and Gmail running
//! in this process, on a database and queue prefix of this run's own (removed at the
//! end, on error and on Ctrl-C too).
//!
//! - Throughput: N communications with their `sms.send` / `email.send` jobs are written
//!   to the ledger (`queued`) and published to the work queue before the worker starts,
//!   then drained by ONE worker process; sends/s from the first `sent` to the last, with
//!   the fake answering at once and after `--latency-ms`. Each figure stands beside the
//!   ceiling its concurrency allows (concurrency / latency) and the in-app
//!   `message.deliver` path (no provider) drained the same way in the same run. Done
//!   twice: with the settings' defaults and with a raised pool and prefetch.
//! - Retry overhead: the SMS run again with the fake answering 503 to N send requests
//!   (as many failures as sends), against the same run without failures: extra wall
//!   time, ledger rows and worker CPU per send.
//! - Memory: the worker's RSS idle, then with `--outstanding` sends queued while the fake
//!   takes `--memory-latency-ms` to answer, sampled every 50 ms; where those sends are
//!   (at the provider, held by the worker waiting for a slot, still in the broker).
//!
//! Concurrency: a provider send makes its call outside its transaction (the runtime's
//! outside phase), holding no pooled connection while the provider answers, so one kind
//! runs as many sends at a time as the broker hands its consumer: `WORKER_PREFETCH`.
//! The pool only bounds the short database phases before and after each call.

// A reporting tool: stdout is its output.
#![allow(clippy::print_stdout)]

// Only its release build; the api-child helpers go unused here.
#[allow(dead_code)]
#[path = "../child_api.rs"]
mod child_api;
#[path = "../procfs.rs"]
mod procfs;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail, ensure};
use clap::Parser;
use lapin::{
    BasicProperties, Channel, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
};
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio::process::{Child, Command};
use uuid::Uuid;

use commcenter_fakes::{
    Endpoint, FakeGmail, FakeRingCentral, Fault, GmailConfig, RingCentralConfig,
};
use commcenter_shared::{
    ledger::jobs::{Envelope, kinds},
    ledger::relay::job_properties,
    platform::broker::Topology,
    platform::settings::parse_tiers,
};

#[derive(Debug, Clone, Parser)]
#[command(
    about = "Provider send throughput, retry overhead and worker memory against the fakes, each beside its baseline"
)]
struct Options {
    /// Smaller N, for a quick check.
    #[arg(long)]
    quick: bool,
    /// Sends per throughput run; default 3000, 600 with --quick.
    #[arg(long)]
    sends: Option<u64>,
    /// The fake providers' answer latency of the slow runs, in ms.
    #[arg(long, default_value_t = 100)]
    latency_ms: u64,
    /// DATABASE_MAX_CONNECTIONS of the raised configuration. PostgreSQL's
    /// max_connections (100 here) is shared with the worker's 8 evidence connections,
    /// this bench and whatever else runs.
    #[arg(long, default_value_t = 64)]
    raised_pool: u32,
    /// WORKER_PREFETCH of the raised configuration.
    #[arg(long, default_value_t = 1000)]
    raised_prefetch: u16,
    /// Sends outstanding in the memory run.
    #[arg(long, default_value_t = 1000)]
    outstanding: u64,
    /// The fakes' latency in the memory run, in ms: long, so that sends pile up.
    #[arg(long, default_value_t = 2000)]
    memory_latency_ms: u64,
    /// The commcenter-workers binary (default: `cargo build --release -p commcenter-workers`).
    #[arg(long)]
    workers_bin: Option<PathBuf>,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench-providers.json")]
    out: PathBuf,
}

impl Options {
    fn sends(&self) -> u64 {
        self.sends.unwrap_or(if self.quick { 600 } else { 3000 })
    }
}

/// The settings' defaults (`shared/src/platform/settings.rs`), which the default configuration
/// leaves unset so that the worker truly runs on them.
const DEFAULT_POOL: u32 = 40;
const DEFAULT_PREFETCH: u16 = 256;
/// Given to the worker explicitly, so the delay queues to delete are known by name.
const RETRY_TIERS: &str = "1s,5s,30s,2m,10m,1h";
const DELIVERY_LIMIT: u32 = 5;
const MAX_ATTEMPTS: i32 = 8;
/// The target of issue 4: sends/s of one worker process at 100 ms provider latency.
const TARGET_SENDS_PER_S: f64 = 500.0;
/// How often the ledger is polled for progress.
const POLL: Duration = Duration::from_millis(25);
/// How often the worker's resident set is sampled.
const RSS_EVERY: Duration = Duration::from_millis(50);
const CUSTOMERS: u64 = 1000;

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    ensure!(
        options.sends() > 0 && options.outstanding > 0,
        "--sends and --outstanding must be positive"
    );
    ensure!(options.raised_pool >= 2, "--raised-pool must be at least 2");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let uploads = tempfile::Builder::new()
        .prefix("commcenter-providers-bench")
        .tempdir()?;
    let mut cleanup = Cleanup::default();
    let result = tokio::select! {
        result = bench(&options, uploads.path(), &mut cleanup) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(error) = &result {
        eprintln!(
            "the bench failed: {error:#}\nthe last worker's log ends with:\n{}",
            tail(&uploads.path().join("worker.log"), 30)
        );
    }
    cleanup.run().await;
    result
}

// ---------------------------------------------------------------------------------------
// The bench

async fn bench(options: &Options, dir: &Path, cleanup: &mut Cleanup) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this bench is a debug build; run it with --release");
    }
    let workers_bin = match &options.workers_bin {
        Some(bin) => bin.clone(),
        None => child_api::build_release("commcenter-workers").await?,
    };
    let world = World::new(dir, workers_bin, cleanup).await?;
    let n = options.sends();
    let latency = Duration::from_millis(options.latency_ms);
    let max_connections: i64 =
        sqlx::query_scalar("SELECT current_setting('max_connections')::bigint")
            .fetch_one(&world.pool)
            .await?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "providers bench: {} CPUs, load average {}; PostgreSQL max_connections {max_connections}; {n} sends per run",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );

    let configs = [
        Config {
            name: "defaults",
            pool: None,
            prefetch: None,
        },
        Config {
            name: "raised",
            pool: Some(options.raised_pool),
            prefetch: Some(options.raised_prefetch),
        },
    ];
    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();
    let mut defaults_sms_fast = None;

    for config in &configs {
        let label = config.describe();
        eprintln!("== {label}");
        let deliver = world.drain(config, Kind::InApp, n, 0).await?;
        eprintln!("   in-app deliver: {}", deliver.describe());
        details.insert(format!("{}.in_app", config.name), deliver.json());
        rows.push(Row {
            scenario: format!("{} (baseline)", config.name),
            measure: "in-app message.deliver, no provider".into(),
            value: deliver.rate,
            unit: "sends/s",
            target: Target::Baseline,
            beside: format!("{label}; {}", deliver.summary()),
        });
        for path in [Kind::Sms, Kind::Email] {
            for latency in [Duration::ZERO, latency] {
                world.set_latency(latency);
                let drained = world.drain(config, path, n, 0).await?;
                eprintln!(
                    "   {} at {} ms: {}",
                    path.label(),
                    latency.as_millis(),
                    drained.describe()
                );
                details.insert(
                    format!("{}.{}.{}ms", config.name, path.kind(), latency.as_millis()),
                    drained.json(),
                );
                let ceiling = if latency.is_zero() {
                    String::new()
                } else {
                    format!(
                        "ceiling {} / {:.1} s = {:.0}/s; ",
                        config.concurrency(),
                        latency.as_secs_f64(),
                        config.concurrency() as f64 / latency.as_secs_f64()
                    )
                };
                rows.push(Row {
                    scenario: config.name.to_owned(),
                    measure: format!(
                        "{} ({}), fake latency {} ms",
                        path.label(),
                        path.kind(),
                        latency.as_millis()
                    ),
                    value: drained.rate,
                    unit: "sends/s",
                    target: if latency.as_millis() == 100 {
                        Target::AtLeast(TARGET_SENDS_PER_S)
                    } else {
                        Target::Info
                    },
                    beside: format!(
                        "{ceiling}in-app {:.0}/s; {}",
                        deliver.rate,
                        drained.summary()
                    ),
                });
                if config.pool.is_none() && path == Kind::Sms && latency.is_zero() {
                    defaults_sms_fast = Some(drained);
                }
            }
        }
        world.set_latency(Duration::ZERO);
    }

    // Retry overhead: every send request fails once with a 503 (as many failures as
    // sends), under the defaults, against the failure-free run above.
    let base = defaults_sms_fast.context("the defaults' SMS run at 0 ms")?;
    eprintln!("== retry overhead: {n} × 503 on send, defaults, fake latency 0");
    let retried = world.drain(&configs[0], Kind::Sms, n, n).await?;
    eprintln!("   sms with 503s: {}", retried.describe());
    details.insert("retry.sms.0ms".into(), retried.json());
    let per_send = |v: u64| v as f64 / n as f64;
    rows.push(Row {
        scenario: "retry".into(),
        measure: format!("extra wall time, {n} sends each meeting one 503 (first call to last sent)"),
        value: retried.wall - base.wall,
        unit: "s",
        target: Target::Info,
        beside: format!(
            "{:.2} s with 503s vs {:.2} s without; retry tiers {RETRY_TIERS}, RETRY_BASE_MS 1000 ± 50% jitter",
            retried.wall, base.wall
        ),
    });
    rows.push(Row {
        scenario: "retry".into(),
        measure: "extra ledger rows per send (job_attempts + provider_sends)".into(),
        value: per_send(retried.ledger_rows()) - per_send(base.ledger_rows()),
        unit: "rows",
        target: Target::Info,
        beside: format!(
            "{:.2} attempts/send, {:.2} provider_sends/send with 503s; {:.2} and {:.2} without",
            per_send(retried.attempts),
            per_send(retried.provider_sends),
            per_send(base.attempts),
            per_send(base.provider_sends)
        ),
    });
    rows.push(Row {
        scenario: "retry".into(),
        measure: "extra worker CPU per send".into(),
        value: (retried.cpu_seconds - base.cpu_seconds) / n as f64 * 1000.0,
        unit: "ms",
        target: Target::Info,
        beside: format!(
            "{:.3} ms/send with 503s vs {:.3} ms/send without",
            retried.cpu_seconds / n as f64 * 1000.0,
            base.cpu_seconds / n as f64 * 1000.0
        ),
    });

    // Memory: idle, then with many sends outstanding at a slow provider.
    let slow = Duration::from_millis(options.memory_latency_ms);
    for config in &configs {
        eprintln!(
            "== memory: {} sends outstanding, fake latency {} ms, {}",
            options.outstanding,
            slow.as_millis(),
            config.describe()
        );
        let memory = world.memory(config, options.outstanding, slow).await?;
        eprintln!("   {}", memory.describe());
        details.insert(format!("{}.memory", config.name), memory.json());
        rows.push(Row {
            scenario: format!("{} memory", config.name),
            measure: "worker RSS idle (consuming, nothing queued)".into(),
            value: procfs::kib_to_mib(memory.idle_kib),
            unit: "MiB",
            target: Target::Baseline,
            beside: config.describe(),
        });
        rows.push(Row {
            scenario: format!("{} memory", config.name),
            measure: format!(
                "worker peak RSS, {} sends outstanding (sampled every 50 ms)",
                options.outstanding
            ),
            value: procfs::kib_to_mib(memory.peak_kib),
            unit: "MiB",
            target: Target::Info,
            beside: format!(
                "+{:.1} MiB over idle; {} at the provider, {} held by the worker, {} in the broker",
                procfs::kib_to_mib(memory.peak_kib.saturating_sub(memory.idle_kib)),
                memory.at_provider,
                memory.held,
                memory.in_broker
            ),
        });
    }

    print_table(&rows);
    let json = json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "load_average_at_start": load.trim(),
            "postgres_max_connections": max_connections,
        },
        "options": {
            "sends": n, "latency_ms": options.latency_ms, "raised_pool": options.raised_pool,
            "raised_prefetch": options.raised_prefetch, "outstanding": options.outstanding,
            "memory_latency_ms": options.memory_latency_ms,
        },
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "details": details,
    });
    if let Some(parent) = options.out.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&options.out, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("writing {}", options.out.display()))?;
    println!("\nJSON results: {}", options.out.display());
    Ok(())
}

/// A worker configuration: `None` leaves the setting to its default.
struct Config {
    name: &'static str,
    pool: Option<u32>,
    prefetch: Option<u16>,
}

impl Config {
    fn pool(&self) -> u32 {
        self.pool.unwrap_or(DEFAULT_POOL)
    }
    fn prefetch(&self) -> u16 {
        self.prefetch.unwrap_or(DEFAULT_PREFETCH)
    }
    /// Sends of one kind under way at once: provider sends hold no pooled connection
    /// during the call, so the broker's prefetch per kind is the bound.
    fn concurrency(&self) -> u64 {
        u64::from(self.prefetch())
    }
    fn describe(&self) -> String {
        let origin = if self.pool.is_none() {
            " (defaults)"
        } else {
            ""
        };
        format!(
            "pool {}, prefetch {}{origin}: concurrency {}",
            self.pool(),
            self.prefetch(),
            self.concurrency()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    InApp,
    Sms,
    Email,
}

impl Kind {
    fn kind(self) -> &'static str {
        match self {
            Self::InApp => kinds::MESSAGE_DELIVER,
            Self::Sms => kinds::SMS_SEND,
            Self::Email => kinds::EMAIL_SEND,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Self::InApp => "in-app",
            Self::Sms => "SMS via RingCentral",
            Self::Email => "email via Gmail",
        }
    }
}

// ---------------------------------------------------------------------------------------
// The world: database, broker, fakes and the worker process

struct World {
    database_url: String,
    prefix: String,
    pool: PgPool,
    channel: Channel,
    topology: Topology,
    ringcentral: FakeRingCentral,
    gmail: FakeGmail,
    uploads: PathBuf,
    log: PathBuf,
    workers_bin: PathBuf,
}

impl World {
    async fn new(dir: &Path, workers_bin: PathBuf, cleanup: &mut Cleanup) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("cc_bench_providers_{id}");
        let prefix = format!("cc-bench-providers-{id}");
        let admin = admin_database_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .context("connecting to PostgreSQL (TEST_DATABASE_URL)")?;
        sqlx::query(&format!("CREATE DATABASE \"{database}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {database}"))?;
        conn.close().await.ok();
        cleanup.admin_url = admin.clone();
        cleanup.database = Some(database.clone());
        let database_url = replace_database(&admin, &database);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url)
            .await?;
        commcenter_shared::platform::db::MIGRATOR.run(&pool).await?;
        cleanup.pool = Some(pool.clone());

        let topology = Topology::new(&prefix, parse_tiers(RETRY_TIERS)?, DELIVERY_LIMIT);
        let connection = lapin::Connection::connect(
            &commcenter_tests::broker_url(),
            lapin::ConnectionProperties::default(),
        )
        .await
        .context("connecting to RabbitMQ")?;
        let channel = connection.create_channel().await?;
        cleanup.prefix = Some(prefix.clone());
        topology.declare(&channel, kinds::ALL).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        cleanup.connection = Some(connection);

        Ok(Self {
            database_url,
            prefix,
            pool,
            channel,
            topology,
            ringcentral: FakeRingCentral::start(RingCentralConfig::default()).await?,
            gmail: FakeGmail::start(GmailConfig::default()).await?,
            uploads: dir.join("uploads"),
            log: dir.join("worker.log"),
            workers_bin,
        })
    }

    fn set_latency(&self, latency: Duration) {
        self.ringcentral.set_latency(latency);
        self.gmail.set_latency(latency);
    }

    /// Writes `n` communications of `path` and their jobs (`queued`, as the relay leaves
    /// them) and publishes the jobs with confirms. With no worker running, checks that
    /// every job waits on the queue.
    async fn enqueue(&self, path: Kind, n: u64, worker_running: bool) -> anyhow::Result<()> {
        // Every run starts from empty tables, so each meets the same table sizes.
        sqlx::query(
            "TRUNCATE communications, jobs, job_attempts, provider_sends, event_outbox CASCADE",
        )
        .execute(&self.pool)
        .await?;
        let communications: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let jobs: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let customers: Vec<String> = (0..n)
            .map(|i| format!("bench-c{}", i % CUSTOMERS))
            .collect();
        let messages: Vec<String> = (0..n)
            .map(|i| format!("Your crew arrives at 9 (bench {i})"))
            .collect();
        let (kind, local) = match path {
            Kind::InApp => ("inapp", None),
            Kind::Sms => ("sms", Some(self.ringcentral.config().from_number.clone())),
            Kind::Email => ("email", Some(self.gmail.config().sender.clone())),
        };
        let email = path == Kind::Email;
        let remote: Vec<Option<String>> = (0..n)
            .map(|i| match path {
                Kind::InApp => None,
                Kind::Sms => Some("+14155550100".to_owned()),
                Kind::Email => Some(format!("customer{i}@example.com")),
            })
            .collect();
        let subjects: Vec<Option<String>> = (0..n)
            .map(|i| email.then(|| format!("Your visit tomorrow (bench {i})")))
            .collect();
        let message_ids: Vec<Option<String>> = communications
            .iter()
            .map(|id| email.then(|| format!("<{id}@bench.example.com>")))
            .collect();
        let n_rows = communications.len();
        for start in (0..n_rows).step_by(5000) {
            let range = start..(start + 5000).min(n_rows);
            sqlx::query(
                "INSERT INTO communications (id, customer_id, type, direction, sender_id, sender_role,
                     message, subject, remote_address, local_address, rfc822_message_id)
                 SELECT id, customer, $3, 'outbound', 'staff-1', 'staff', message, subject, remote, $4, message_id
                 FROM UNNEST($1::uuid[], $2::text[], $5::text[], $6::text[], $7::text[], $8::text[])
                     AS t(id, customer, message, subject, remote, message_id)",
            )
            .bind(&communications[range.clone()])
            .bind(&customers[range.clone()])
            .bind(kind)
            .bind(&local)
            .bind(&messages[range.clone()])
            .bind(&subjects[range.clone()])
            .bind(&remote[range.clone()])
            .bind(&message_ids[range.clone()])
            .execute(&self.pool)
            .await
            .context("inserting the communications")?;
            sqlx::query(
                "INSERT INTO jobs (id, kind, payload, state, max_attempts, queued_at, communication_id, customer_id)
                 SELECT job, $4, jsonb_build_object('communication_id', communication), 'queued', $5, now(),
                        communication, customer
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) AS t(job, communication, customer)",
            )
            .bind(&jobs[range.clone()])
            .bind(&communications[range.clone()])
            .bind(&customers[range])
            .bind(path.kind())
            .bind(MAX_ATTEMPTS)
            .execute(&self.pool)
            .await
            .context("inserting the jobs")?;
        }
        sqlx::query("ANALYZE communications, jobs")
            .execute(&self.pool)
            .await?;

        let exchange = self.topology.jobs_exchange();
        let mut confirms: Vec<PublisherConfirm> = Vec::with_capacity(1000);
        for (job, communication) in jobs.iter().zip(&communications) {
            let envelope = Envelope {
                job_id: *job,
                kind: path.kind().into(),
                payload: json!({ "communication_id": communication }),
            };
            confirms.push(
                self.publish(
                    &exchange,
                    path.kind(),
                    &serde_json::to_vec(&envelope)?,
                    job_properties(*job),
                )
                .await?,
            );
            if confirms.len() >= 1000 {
                settle(&mut confirms).await?;
            }
        }
        settle(&mut confirms).await?;
        if !worker_running {
            let ready = self.ready(path).await?;
            ensure!(
                u64::from(ready) == n,
                "expected {n} jobs on the work queue, found {ready}"
            );
        }
        Ok(())
    }

    async fn publish(
        &self,
        exchange: &str,
        kind: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> anyhow::Result<PublisherConfirm> {
        Ok(self
            .channel
            .basic_publish(
                exchange.into(),
                kind.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await?)
    }

    /// Jobs of `path` waiting in the broker (ready, not delivered to a consumer), and
    /// its consumers.
    async fn queue(&self, path: Kind) -> anyhow::Result<(u32, u32)> {
        let queue = self
            .channel
            .queue_declare(
                self.topology.work_queue(path.kind()).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await?;
        Ok((queue.message_count(), queue.consumer_count()))
    }

    async fn ready(&self, path: Kind) -> anyhow::Result<u32> {
        Ok(self.queue(path).await?.0)
    }

    fn start_worker(&self, config: &Config) -> anyhow::Result<Worker> {
        let rc = self.ringcentral.config();
        let gm = self.gmail.config();
        let mut env: Vec<(&str, String)> = vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("AMQP_URL", commcenter_tests::broker_url()),
            ("QUEUE_PREFIX", self.prefix.clone()),
            ("RETRY_TIERS", RETRY_TIERS.to_owned()),
            ("DELIVERY_LIMIT", DELIVERY_LIMIT.to_string()),
            ("JOB_MAX_ATTEMPTS", MAX_ATTEMPTS.to_string()),
            ("UPLOAD_DIR", self.uploads.display().to_string()),
            ("CALL_LOG_IMPORT_SECS", "0".to_owned()),
            ("RINGCENTRAL_SERVER_URL", self.ringcentral.url()),
            ("RINGCENTRAL_CLIENT_ID", rc.client_id.clone()),
            ("RINGCENTRAL_CLIENT_SECRET", rc.client_secret.clone()),
            ("RINGCENTRAL_JWT", rc.jwt.clone()),
            ("RINGCENTRAL_FROM_NUMBER", rc.from_number.clone()),
            ("RINGCENTRAL_TIMEOUT_MS", "10000".to_owned()),
            ("GOOGLE_CLIENT_ID", gm.client_id.clone()),
            ("GOOGLE_CLIENT_SECRET", gm.client_secret.clone()),
            ("GOOGLE_TOKEN_URL", self.gmail.token_url()),
            ("GMAIL_API_URL", self.gmail.url()),
            ("GMAIL_REFRESH_TOKEN", gm.refresh_token.clone()),
            ("GMAIL_SENDER", gm.sender.clone()),
            ("GMAIL_TIMEOUT_MS", "10000".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
            ("NO_COLOR", "1".to_owned()),
        ];
        if let Some(pool) = config.pool {
            env.push(("DATABASE_MAX_CONNECTIONS", pool.to_string()));
        }
        if let Some(prefetch) = config.prefetch {
            env.push(("WORKER_PREFETCH", prefetch.to_string()));
        }
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new(&self.workers_bin)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.workers_bin.display()))?;
        let pid = child.id().context("the worker exited at once")?;
        Ok(Worker { child, pid })
    }

    /// Progress: communications `sent`, provider calls started, provider calls under way.
    async fn progress(&self) -> anyhow::Result<(u64, u64, u64)> {
        let (sent, calls, in_flight): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM communications WHERE status = 'sent'),
                    (SELECT count(*) FROM provider_sends),
                    (SELECT count(*) FROM provider_sends WHERE state = 'sending')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((sent as u64, calls as u64, in_flight as u64))
    }

    /// Enqueues `n` sends of `path`, starts one worker and times it until all are `sent`.
    /// `failures`: send requests the fake answers with 503 first.
    async fn drain(
        &self,
        config: &Config,
        path: Kind,
        n: u64,
        failures: u64,
    ) -> anyhow::Result<Drained> {
        self.enqueue(path, n, false).await?;
        if failures > 0 {
            let fault = Fault::ServerError(503);
            self.ringcentral
                .fail_next(Endpoint::Send, fault.clone(), failures as usize);
            self.gmail
                .fail_next(Endpoint::Send, fault, failures as usize);
        }
        let mut worker = self.start_worker(config)?;
        let rss = RssSampler::start(worker.pid);
        let started = Instant::now();
        let timeout = Duration::from_secs(60) + Duration::from_millis(n * 100);
        let (mut first_sent, mut first_call, mut last_sent) = (None, None, None);
        let mut peak_in_flight = 0;
        let mut sent = 0;
        while started.elapsed() < timeout {
            worker.check_alive()?;
            let (done, calls, in_flight) = self.progress().await?;
            let now = Instant::now();
            sent = done;
            peak_in_flight = peak_in_flight.max(in_flight);
            if first_call.is_none() && calls > 0 {
                first_call = Some(now);
            }
            if first_sent.is_none() && done > 0 {
                first_sent = Some((now, done));
            }
            if done >= n {
                last_sent = Some(now);
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let cpu_seconds = procfs::cpu_seconds(worker.pid);
        let peak_rss_kib = rss.stop();
        worker.stop().await;
        let (attempts, provider_sends, succeeded): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM job_attempts),
                    (SELECT count(*) FROM provider_sends),
                    (SELECT count(*) FROM jobs WHERE state = 'succeeded')",
        )
        .fetch_one(&self.pool)
        .await?;
        let end = last_sent.unwrap_or_else(Instant::now);
        let (rate, span) = match first_sent {
            Some((at, count)) if end > at && count < n => {
                let span = (end - at).as_secs_f64();
                ((sent - count) as f64 / span, span)
            }
            // All in one poll: time it from the worker's start instead.
            _ => {
                let span = (end - started).as_secs_f64();
                (sent as f64 / span, span)
            }
        };
        // From the first provider call (the in-app path makes none: its first `sent`).
        let wall_from = first_call
            .or(first_sent.map(|(at, _)| at))
            .unwrap_or(started);
        Ok(Drained {
            n,
            sent,
            timed_out: last_sent.is_none(),
            rate,
            span,
            wall: (end - wall_from).as_secs_f64(),
            peak_in_flight,
            peak_rss_kib,
            cpu_seconds,
            attempts: attempts as u64,
            provider_sends: provider_sends as u64,
            succeeded: succeeded as u64,
        })
    }

    /// The worker idle, then with `outstanding` SMS queued while the fake answers after
    /// `latency`; then the latency is dropped so the rest drains quickly.
    async fn memory(
        &self,
        config: &Config,
        outstanding: u64,
        latency: Duration,
    ) -> anyhow::Result<Memory> {
        sqlx::query(
            "TRUNCATE communications, jobs, job_attempts, provider_sends, event_outbox CASCADE",
        )
        .execute(&self.pool)
        .await?;
        self.set_latency(latency);
        let mut worker = self.start_worker(config)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.queue(Kind::Sms).await?.1 == 0 {
            worker.check_alive()?;
            ensure!(
                Instant::now() < deadline,
                "the worker did not start consuming within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let start-up allocations settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_kib = procfs::status_kib(worker.pid, "VmRSS:")?;

        let rss = RssSampler::start(worker.pid);
        self.enqueue(Kind::Sms, outstanding, true).await?;
        // Long enough for every slot to fill and turn over at least once.
        let window = (latency * 2 + Duration::from_secs(1)).max(Duration::from_secs(3));
        let start = Instant::now();
        let mut peak_in_flight = 0;
        let mut busiest = (0, 0, 0);
        while start.elapsed() < window {
            worker.check_alive()?;
            let (sent, _, in_flight) = self.progress().await?;
            let ready = u64::from(self.ready(Kind::Sms).await?);
            // Where the sends stand when the most are at the provider.
            if in_flight > peak_in_flight {
                peak_in_flight = in_flight;
                busiest = (sent, in_flight, ready);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let peak_kib = rss.stop();
        let (sent, at_provider, in_broker) = busiest;
        self.set_latency(Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.progress().await?.0 < outstanding {
            worker.check_alive()?;
            ensure!(
                Instant::now() < deadline,
                "the memory run's sends did not drain within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after_kib = procfs::status_kib(worker.pid, "VmRSS:")?;
        worker.stop().await;
        Ok(Memory {
            idle_kib,
            peak_kib,
            after_kib,
            sent_in_window: sent,
            at_provider,
            held: outstanding.saturating_sub(sent + at_provider + in_broker),
            in_broker,
            peak_in_flight,
            window_s: window.as_secs_f64(),
        })
    }
}

async fn settle(confirms: &mut Vec<PublisherConfirm>) -> anyhow::Result<()> {
    for confirm in confirms.drain(..) {
        let confirmation = confirm.await?;
        ensure!(confirmation.is_ack(), "the broker refused a job");
        ensure!(
            confirmation.take_message().is_none(),
            "a job was unroutable"
        );
    }
    Ok(())
}

struct Drained {
    n: u64,
    sent: u64,
    timed_out: bool,
    /// Sends/s from the first `sent` to the last.
    rate: f64,
    span: f64,
    /// Seconds from the first provider call to the last `sent`.
    wall: f64,
    peak_in_flight: u64,
    peak_rss_kib: u64,
    cpu_seconds: f64,
    attempts: u64,
    provider_sends: u64,
    succeeded: u64,
}

impl Drained {
    fn ledger_rows(&self) -> u64 {
        self.attempts + self.provider_sends
    }

    fn summary(&self) -> String {
        let timed_out = if self.timed_out {
            format!("TIMED OUT with {} of {} sent; ", self.sent, self.n)
        } else {
            String::new()
        };
        format!(
            "{timed_out}peak {} at the provider; worker {:.2} ms CPU/send, peak RSS {:.0} MiB",
            self.peak_in_flight,
            self.cpu_seconds / self.n as f64 * 1000.0,
            procfs::kib_to_mib(self.peak_rss_kib)
        )
    }

    fn describe(&self) -> String {
        format!(
            "{:.0} sends/s over {:.2} s ({} of {} sent, {} jobs succeeded, {} attempts); {}",
            self.rate,
            self.span,
            self.sent,
            self.n,
            self.succeeded,
            self.attempts,
            self.summary()
        )
    }

    fn json(&self) -> Value {
        json!({
            "sends": self.n, "sent": self.sent, "timed_out": self.timed_out,
            "sends_per_s": self.rate, "first_to_last_sent_s": self.span,
            "first_call_to_last_sent_s": self.wall, "peak_in_flight_at_provider": self.peak_in_flight,
            "peak_rss_kib": self.peak_rss_kib, "worker_cpu_s": self.cpu_seconds,
            "job_attempts": self.attempts, "provider_sends": self.provider_sends,
            "jobs_succeeded": self.succeeded,
        })
    }
}

struct Memory {
    idle_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    /// Where the sends stood when the most were at the provider.
    sent_in_window: u64,
    at_provider: u64,
    held: u64,
    in_broker: u64,
    peak_in_flight: u64,
    window_s: f64,
}

impl Memory {
    fn describe(&self) -> String {
        format!(
            "RSS idle {:.1} MiB, peak {:.1} MiB, after draining {:.1} MiB; in a {:.1} s window, at \
             the most at the provider: {} sent, {} at the provider (peak {}), {} held by the worker, \
             {} in the broker",
            procfs::kib_to_mib(self.idle_kib),
            procfs::kib_to_mib(self.peak_kib),
            procfs::kib_to_mib(self.after_kib),
            self.window_s,
            self.sent_in_window,
            self.at_provider,
            self.peak_in_flight,
            self.held,
            self.in_broker
        )
    }

    fn json(&self) -> Value {
        json!({
            "idle_rss_kib": self.idle_kib, "peak_rss_kib": self.peak_kib,
            "rss_after_drain_kib": self.after_kib, "window_s": self.window_s,
            "sent_in_window": self.sent_in_window, "at_provider": self.at_provider,
            "peak_at_provider": self.peak_in_flight, "held_by_worker": self.held,
            "in_broker": self.in_broker,
        })
    }
}

struct Worker {
    child: Child,
    pid: u32,
}

impl Worker {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the worker exited ({status})");
        }
        Ok(())
    }

    /// SIGTERM (the worker drains), then SIGKILL after 20 s.
    async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "the worker (pid {}) did not stop on SIGTERM; killing it",
                self.pid
            );
            self.child.kill().await.ok();
        }
    }
}

/// Samples a process's `VmRSS` every [`RSS_EVERY`] on a thread of its own; `stop`
/// answers the largest sample.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(rss) = procfs::status_kib(pid, "VmRSS:") {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(RSS_EVERY);
                }
            })
        };
        Self { stop, peak, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok();
        self.peak.load(Ordering::Relaxed)
    }
}

/// What the run made outside itself, removed at the end whatever happened.
#[derive(Default)]
struct Cleanup {
    admin_url: String,
    database: Option<String>,
    prefix: Option<String>,
    pool: Option<PgPool>,
    connection: Option<lapin::Connection>,
}

impl Cleanup {
    async fn run(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        if let Some(database) = self.database.take() {
            let dropped = async {
                let mut conn = PgConnection::connect(&self.admin_url).await?;
                sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                ))
                .execute(&mut conn)
                .await?;
                conn.close().await.ok();
                anyhow::Ok(())
            };
            if let Err(e) = dropped.await {
                eprintln!("could not drop database {database}: {e:#}");
            }
        }
        if let Some(prefix) = self.prefix.take() {
            let deleted = async {
                let topology = Topology::new(&prefix, parse_tiers(RETRY_TIERS)?, DELIVERY_LIMIT);
                let connection = match self.connection.take() {
                    Some(connection) => connection,
                    None => {
                        lapin::Connection::connect(
                            &commcenter_tests::broker_url(),
                            lapin::ConnectionProperties::default(),
                        )
                        .await?
                    }
                };
                let channel = connection.create_channel().await?;
                topology.delete(&channel, kinds::ALL).await;
                connection.close(200, "bye".into()).await.ok();
                anyhow::Ok(())
            };
            if let Err(e) = deleted.await {
                eprintln!("could not delete the queues of prefix {prefix}: {e:#}");
            }
        }
    }
}

fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into())
}

fn replace_database(url: &str, database: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    format!("{base}/{database}")
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// The report

#[derive(Debug, Clone, Copy)]
enum Target {
    AtLeast(f64),
    /// A baseline, measured to read the figures against.
    Baseline,
    /// A figure with no target of its own.
    Info,
}

struct Row {
    scenario: String,
    measure: String,
    value: f64,
    unit: &'static str,
    target: Target,
    beside: String,
}

impl Row {
    fn target(&self) -> String {
        match self.target {
            Target::AtLeast(v) => format!(">= {v} {}", self.unit),
            Target::Baseline => "(baseline)".into(),
            Target::Info => "-".into(),
        }
    }

    fn status(&self) -> &'static str {
        match self.target {
            Target::AtLeast(v) if self.value >= v => "met",
            Target::AtLeast(_) => "MISSED",
            Target::Baseline | Target::Info => "-",
        }
    }

    fn figure(&self) -> String {
        if self.value.abs() < 10.0 {
            format!("{:.2} {}", self.value, self.unit)
        } else {
            format!("{:.0} {}", self.value, self.unit)
        }
    }

    fn json(&self) -> Value {
        json!({
            "scenario": self.scenario, "measure": self.measure, "value": self.value,
            "unit": self.unit, "target": self.target(), "status": self.status(),
            "beside": self.beside,
        })
    }
}

fn print_table(rows: &[Row]) {
    let header = [
        "scenario",
        "measure",
        "figure",
        "target",
        "status",
        "beside it (baseline / ceiling)",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.measure.clone(),
                r.figure(),
                r.target(),
                r.status().to_owned(),
                r.beside.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // Figures right-aligned, text left-aligned; the last column unpadded.
            match i {
                2 => out.push_str(&format!("{cell:>w$}")),
                5 => out.push_str(cell),
                _ => out.push_str(&format!("{cell:<w$}")),
            }
            if i < 5 {
                out.push_str(" | ");
            }
        }
        out
    };
    println!();
    println!("{}", line(&header.map(str::to_owned)));
    println!(
        "{}",
        widths[..5]
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
            + "-+-"
            + &"-".repeat(widths[5].min(40))
    );
    for row in &cells {
        println!("{}", line(row));
    }
    println!(
        "\nsends/s: first `sent` to last, polled every {} ms; concurrency of a provider kind = WORKER_PREFETCH \
         (no pooled connection is held during a call); 'at the provider' = provider_sends rows in state 'sending' (committed just before \
         each call); RSS = VmRSS of the worker process from /proc, sampled every {} ms.",
        POLL.as_millis(),
        RSS_EVERY.as_millis()
    );
}
