//! `commcenter-bench`: measures, on this machine and in one run, what the system
//! sustains, each figure beside its target and the ceiling it runs under.
//!
//! - `ceiling` (d): the raw broker: publish with confirms + consume with acks of 1 KiB
//!   persistent messages on one quorum queue. No job can move faster than this.
//! - `ledger`: the workers' per-job transaction alone (no broker), the other ceiling of (a).
//! - `burn-down` (a): N pre-enqueued no-op jobs through the real workers runtime and ledger.
//! - `accept` (c): `POST /api/messages/send` answered 202, per second and its latency.
//! - `e2e` (b): that POST until the staff WebSocket gets its `message.new` frame.
//!
//! Every scenario builds its own whole system with `commcenter_tests::spawn_app_with`
//! (its own database and queue prefix, removed on drop). Results are printed as a table
//! and written as JSON (`--out`, default `target/bench-results.json`).

// A reporting tool: stdout is its output.
#![allow(clippy::print_stdout)]

mod burn;
mod ceiling;
mod load;
mod probe;
mod report;
mod sends;
mod system;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    /// (a) burn-down of pre-enqueued no-op jobs.
    #[value(name = "burn-down", alias = "a")]
    BurnDown,
    /// (b) end-to-end sends: POST to WebSocket frame.
    #[value(alias = "b")]
    E2e,
    /// (c) API accept rate.
    #[value(alias = "c")]
    Accept,
    /// (d) the raw broker ceiling.
    #[value(alias = "d")]
    Ceiling,
    /// The workers' ledger transaction alone, without the broker.
    Ledger,
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Commcenter throughput and latency, each figure beside its target and ceiling")]
pub struct Options {
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// Jobs in the burn-down (and messages in the broker ceiling); default 100000, 20000 with --quick.
    #[arg(long)]
    jobs: Option<u64>,
    /// Smaller N and shorter windows, for a quick check.
    #[arg(long)]
    quick: bool,
    /// Worker prefetch (unacked deliveries per kind, i.e. jobs in flight).
    #[arg(long, default_value_t = 256)]
    prefetch: u16,
    /// Jobs of a batching kind run in one transaction (WORKER_BATCH_SIZE); the
    /// burn-down also runs with 1, its baseline.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// PostgreSQL connections of the workers' pool (and of the api's, see --api-pool).
    #[arg(long, default_value_t = 32)]
    db_connections: u32,
    /// The api under test: `harness` is the TestApp's own api (its pool is fixed at 8
    /// connections); `own` builds a second api on the same database and prefix with a
    /// pool of --db-connections, as production would (DATABASE_MAX_CONNECTIONS).
    #[arg(long, value_enum, default_value = "own")]
    api: system::ApiChoice,
    /// Seconds of each measured load window; default 10, 4 with --quick.
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent requests of the closed-loop accept-rate run (c).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Sends in flight (POST to frame) in the closed-loop end-to-end run (b).
    #[arg(long, default_value_t = 128)]
    e2e_concurrency: usize,
    /// Seconds to wait, before each scenario, for other work on the machine to stop
    /// (it shares the cores with everything measured).
    #[arg(long, default_value_t = 0)]
    wait_quiet: u64,
    /// Where the JSON results go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-results.json"))]
    out: PathBuf,
}

impl Options {
    pub fn jobs(&self) -> u64 {
        self.jobs
            .unwrap_or(if self.quick { 20_000 } else { 100_000 })
    }
    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.duration.unwrap_or(if self.quick { 4.0 } else { 10.0 }))
    }
    pub fn warmup(&self) -> Duration {
        Duration::from_secs(if self.quick { 1 } else { 2 })
    }
    fn runs(&self, scenario: Scenario) -> bool {
        self.scenario == Scenario::All || self.scenario == scenario
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    // Before the harness initialises tracing (its `try_init` then does nothing): one
    // info line per job or request would measure the terminal, not the system. The
    // request tracer logs every 503 of the readiness polls as an error, and lapin an
    // error at every orderly channel close: noise here.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tower_http=off,lapin=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut report = Report::new(&options);
    // The ceilings first, so every later figure can be printed beside them.
    let order = [
        Scenario::Ceiling,
        Scenario::Ledger,
        Scenario::BurnDown,
        Scenario::Accept,
        Scenario::E2e,
    ];
    for scenario in order.into_iter().filter(|s| options.runs(*s)) {
        wait_until_quiet(&options, &mut report, scenario).await;
        let outcome = match scenario {
            Scenario::Ceiling => ceiling::run(&options, &mut report).await,
            Scenario::Ledger => burn::ledger_only(&options, &mut report).await,
            Scenario::BurnDown => burn::run(&options, &mut report).await,
            Scenario::Accept => sends::accept(&options, &mut report).await,
            Scenario::E2e => sends::end_to_end(&options, &mut report).await,
            Scenario::All => Ok(()),
        };
        outcome.with_context(|| format!("scenario {scenario:?}"))?;
    }

    report.print();
    let json = report.to_json();
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&options.out, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("writing {}", options.out.display()))?;
    let written = std::fs::canonicalize(&options.out).unwrap_or_else(|_| options.out.clone());
    println!("\nJSON results: {}", written.display());
    Ok(())
}

/// Everything shares two cores: other work running skews every figure. Waits up to
/// `--wait-quiet` seconds for the machine to idle, and notes it if it did not.
async fn wait_until_quiet(options: &Options, report: &mut Report, scenario: Scenario) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(options.wait_quiet);
    loop {
        let sample = probe::CpuSnapshot::take();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = sample.usage_since().machine_busy;
        if busy <= 0.10 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            report.note(format!(
                "WARNING: the machine was {:.0}% busy with other work before {scenario:?} started; its figures will be low",
                busy * 100.0
            ));
            return;
        }
    }
}
