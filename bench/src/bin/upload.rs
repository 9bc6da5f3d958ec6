//! `upload`: the upload path's memory and throughput, each beside its baseline, measured
//! in one run on this machine (`cargo run --release -p commcenter-bench --bin upload`).
//!
//! - Memory: the real `commcenter-api` binary runs as a child process (its own
//!   database, queue prefix and `UPLOAD_DIR`, so the client's memory does not count).
//!   One 50 MiB upload (`%PDF-1.7\n` then pseudo-random filler, exactly the size limit
//!   `MAX_FILE_SIZE`, so it is accepted), streamed by the client without holding it
//!   whole. The figure is the api's peak resident memory during the upload (`VmHWM`
//!   after resetting it through `/proc/<pid>/clear_refs`, cross-checked by sampling
//!   `VmRSS` every millisecond) minus its `VmRSS` just before; the worst of
//!   `--memory-runs`, after warm-up uploads. Baseline: the same for a 1 KiB upload.
//!   Target: ≤ 8 MiB.
//! - Throughput: `--count` × 50 MiB uploads to local disk on loopback, one client after
//!   the other, then with `--clients` concurrent clients; MB/s of file bytes, the median
//!   of `--rounds`. Baselines from the same rounds, taking turns with them: the disk
//!   (`dd … conv=fsync`, and the store's own pattern — write, fsync, rename, fsync the
//!   directory — per file) and loopback HTTP with nothing behind it (an in-process
//!   server draining a raw body, and one parsing multipart).
//!
//! Results are printed as a table and written as JSON (`--out`, default
//! `target/bench-upload.json`). The child, its database, its queues and exchanges and
//! every temporary file are removed at the end, on error and on Ctrl-C too. A missed
//! target is reported as missed; the exit code is 0 unless the bench could not run.

// A reporting tool: stdout is its output.
#![allow(clippy::print_stdout)]

#[path = "../child_api.rs"]
mod child_api;
#[path = "../procfs.rs"]
mod procfs;

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, ensure};
use axum::{
    Router,
    extract::{DefaultBodyLimit, Multipart},
    http::StatusCode,
    routing::post,
};
use bytes::Bytes;
use clap::Parser;
use futures_util::{Stream, StreamExt as _, stream};
use reqwest::{
    Body, header,
    multipart::{Form, Part},
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use uuid::Uuid;

use commcenter_shared::{
    domain::{CustomerId, Role, UserId},
    platform::auth::{self, Claims},
};

#[derive(Debug, Clone, Parser)]
#[command(
    about = "Upload memory and throughput of the real api, each beside its baseline, in one run"
)]
struct Options {
    /// Files per throughput run (each --size-mib).
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Size of the large upload, in MiB. The api's MAX_FILE_SIZE is this exactly (50 MiB
    /// is its default, so then it is left unset).
    #[arg(long, default_value_t = 50)]
    size_mib: u64,
    /// Concurrent clients of the second throughput run.
    #[arg(long, default_value_t = 2)]
    clients: u32,
    /// Rounds of the throughput runs and their baselines; the median round is shown.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Measured uploads of each size for the memory figure; the worst is the figure.
    #[arg(long, default_value_t = 3)]
    memory_runs: u32,
    /// MiB written by the `dd … conv=fsync` baseline.
    #[arg(long, default_value_t = 500)]
    dd_mib: u64,
    /// The commcenter-api binary (default: `cargo build --release -p commcenter-api`).
    #[arg(long)]
    api_bin: Option<PathBuf>,
    /// Where the temporary directory (uploads, baseline files) goes; default the system's.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench-upload.json")]
    out: PathBuf,
}

const MIB: u64 = 1 << 20;
/// `MAX_FILE_SIZE`'s default.
const DEFAULT_LIMIT: u64 = 50 * MIB;
const PDF_HEAD: &[u8] = b"%PDF-1.7\n";
/// Bytes per chunk of the client's body stream.
const CHUNK: usize = 64 * 1024;
/// The filler the body streams are cut from (cyclically): pseudo-random, made once.
const FILLER: usize = 1 << 20;
/// Bytes per write in the disk-pattern baseline (the store's `IO_BUFFER`).
const DISK_WRITE: usize = 256 * 1024;
const CUSTOMER: &str = "cust-bench";
/// Given to the child explicitly, so the delay queues to delete are known by name.
const RETRY_TIERS: &str = "1s,5s,30s,2m,10m,1h";
const DELIVERY_LIMIT: u32 = 5;
const TARGET_GROWTH_MIB: f64 = 8.0;
const TINY: u64 = 1024;

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    ensure!(
        options.count > 0 && options.clients > 0,
        "--count and --clients must be positive"
    );
    ensure!(options.size_mib > 0, "--size-mib must be positive");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("commcenter-upload-bench")
        .tempdir_in(options.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let mut resources = Resources::default();
    resources.admin_url = child_api::admin_database_url();
    let result = tokio::select! {
        result = bench(&options, temp.path(), &mut resources) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(error) = &result
        && let Some(log) = resources.log.as_deref()
    {
        eprintln!(
            "the bench failed: {error:#}\nthe api's log ends with:\n{}",
            tail(log, 30)
        );
    }
    resources.teardown().await;
    temp.close().context("removing the temporary directory")?;
    result
}

// ---------------------------------------------------------------------------------------
// The bench

async fn bench(options: &Options, dir: &Path, resources: &mut Resources) -> anyhow::Result<()> {
    let size = options.size_mib * MIB;
    let filler = filler();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if cfg!(debug_assertions) {
        eprintln!("warning: this bench is a debug build; run it with --release");
    }
    let api_bin = match &options.api_bin {
        Some(bin) => bin.clone(),
        None => child_api::build_api().await?,
    };

    // The api under test, as production runs it, in a process of its own.
    let id = Uuid::new_v4().simple().to_string();
    let database = format!("cc_bench_upload_{id}");
    let prefix = format!("cc-bench-upload-{id}");
    let upload_dir = dir.join("uploads");
    let secret = format!("bench-secret-{id}");
    child_api::create_database(&resources.admin_url, &database).await?;
    resources.database = Some(database.clone());
    resources.prefix = Some(prefix.clone());
    let addr = child_api::free_port()?;
    let log = dir.join("api.log");
    resources.log = Some(log.clone());
    let mut env = vec![
        (
            "DATABASE_URL",
            child_api::replace_database(&resources.admin_url, &database),
        ),
        ("DATABASE_MAX_CONNECTIONS", "8".to_owned()),
        ("AMQP_URL", commcenter_tests::broker_url()),
        ("QUEUE_PREFIX", prefix.clone()),
        ("API_ADDR", addr.to_string()),
        ("UPLOAD_DIR", upload_dir.display().to_string()),
        ("JWT_SECRET", secret.clone()),
        ("RETRY_TIERS", RETRY_TIERS.to_owned()),
        ("DELIVERY_LIMIT", DELIVERY_LIMIT.to_string()),
        ("RUST_LOG", "warn".to_owned()),
        // The bench measures the upload path, not its rate limit.
        ("RATE_LIMIT_UPLOADS", "none".to_owned()),
    ];
    if size != DEFAULT_LIMIT {
        env.push(("MAX_FILE_SIZE", size.to_string()));
    }
    let log_file = std::fs::File::create(&log)?;
    let child = Command::new(&api_bin)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", api_bin.display()))?;
    let pid = child.id().context("the api exited at once")?;
    resources.api = Some(child);
    let base = format!("http://{addr}");
    child_api::wait_ready(resources.api.as_mut(), &base).await?;
    let claims = Claims {
        sub: UserId::parse(&format!("user-of-{CUSTOMER}")).map_err(|e| anyhow!(e.0))?,
        role: Role::Customer,
        customer_id: Some(CustomerId::parse(CUSTOMER).map_err(|e| anyhow!(e.0))?),
        exp: chrono::Utc::now().timestamp() + 24 * 3600,
    };
    let api = Endpoint {
        url: format!("{base}/api/communications/upload"),
        token: Some(auth::issue(&claims, &secret)),
        multipart: true,
        check: check_accepted,
    };
    println!(
        "upload bench: {cpus} CPUs, Linux {kernel}; api {} (pid {pid}); files to {}",
        api_bin.display(),
        upload_dir.display()
    );

    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();

    // 1. Memory.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        api.post(&client, TINY, &filler).await?;
    }
    let mut tiny_runs = Vec::new();
    for _ in 0..options.memory_runs.max(1) {
        tiny_runs.push(measured_upload(&api, &client, pid, TINY, &filler).await?);
    }
    let mut big_runs = Vec::new();
    for i in 0..options.memory_runs.max(1) {
        eprintln!("memory: {} MiB upload {}", options.size_mib, i + 1);
        big_runs.push(measured_upload(&api, &client, pid, size, &filler).await?);
    }
    clear_objects(&upload_dir)?;
    let all: Vec<&Mem> = tiny_runs.iter().chain(&big_runs).collect();
    let hwm_used = all.iter().filter(|m| m.hwm_reset).count();
    let hwm_lowered = all.iter().map(|m| m.hwm_lowered).max().unwrap_or(0);
    let how = match hwm_used {
        0 => "peak = VmRSS sampled every 1 ms (VmHWM could not be reset)".to_owned(),
        n => format!(
            "peak = max(VmHWM reset by clear_refs, VmRSS sampled every 1 ms) in {n} of {} uploads, \
             else the samples; a reset lowered VmHWM by up to {:.1} MiB",
            all.len(),
            procfs::kib_to_mib(hwm_lowered)
        ),
    };
    let worst = |runs: &[Mem]| runs.iter().map(Mem::growth_mib).fold(0.0, f64::max);
    let big = worst(&big_runs);
    let tiny = worst(&tiny_runs);
    let list = |runs: &[Mem]| {
        runs.iter()
            .map(|m| format!("{:.1}", m.growth_mib()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.push(Row {
        measure: format!(
            "api RSS growth, one {} MiB upload (worst of {})",
            options.size_mib,
            big_runs.len()
        ),
        value: big,
        unit: "MiB",
        baseline: format!("{tiny:.1} MiB for 1 KiB (worst of {})", tiny_runs.len()),
        target: Target::AtMost(TARGET_GROWTH_MIB),
        note: format!(
            "runs: {} MiB; 1 KiB runs: {} MiB; RSS before {:.1} MiB; {}",
            list(&big_runs),
            list(&tiny_runs),
            big_runs
                .first()
                .map_or(0.0, |m| procfs::kib_to_mib(m.before)),
            how
        ),
    });
    let retained = big_runs
        .iter()
        .map(|m| procfs::kib_to_mib(m.after) - procfs::kib_to_mib(m.before))
        .fold(f64::MIN, f64::max);
    rows.push(Row {
        measure: format!(
            "api RSS kept after a {} MiB upload (worst)",
            options.size_mib
        ),
        value: retained,
        unit: "MiB",
        baseline: String::new(),
        target: Target::Info,
        note: "VmRSS once the response is in, minus before".into(),
    });
    let sampled_gap = big_runs
        .iter()
        .map(|m| procfs::kib_to_mib(m.peak) - procfs::kib_to_mib(m.sampled_peak))
        .fold(0.0, f64::max);
    details.insert(
        "memory".into(),
        json!({
            "uploads_with_hwm_reset": hwm_used,
            "hwm_lowered_by_reset_kib": hwm_lowered,
            "large": big_runs.iter().map(Mem::json).collect::<Vec<_>>(),
            "tiny": tiny_runs.iter().map(Mem::json).collect::<Vec<_>>(),
            "peak_above_sampled_mib": sampled_gap,
        }),
    );

    // 2. Throughput, and 3. its baselines (the disk, and loopback HTTP with nothing
    // behind it), in rounds that take turns so that drift hits all alike.
    let (drain, server) = drain_server().await?;
    let raw_endpoint = Endpoint {
        url: format!("http://{drain}/raw"),
        token: None,
        multipart: false,
        check: check_drained,
    };
    let multipart_endpoint = Endpoint {
        url: format!("http://{drain}/multipart"),
        token: None,
        multipart: true,
        check: check_drained,
    };
    let files = u64::from(options.count);
    let mut sequential = Series::default();
    let mut concurrent = Series::default();
    let mut dd = Series::default();
    let mut pattern = Series::default();
    let mut raw = Series::default();
    let mut multipart = Series::default();
    let (mut cpu_sequential, mut cpu_concurrent) = (0.0, 0.0);
    let mut concurrent_growth: Option<f64> = Some(0.0);
    for round in 1..=options.rounds.max(1) {
        eprintln!(
            "throughput round {round}: {} × {} MiB to the api, 1 then {} clients; dd; disk pattern; HTTP drains",
            options.count, options.size_mib, options.clients
        );
        let cpu = procfs::cpu_seconds(pid);
        sequential.push(api.run(size, options.count, 1, &filler).await?);
        cpu_sequential += procfs::cpu_seconds(pid) - cpu;
        clear_objects(&upload_dir)?;

        let reset = try_reset(pid)?.filter(Reset::took);
        let rss_before = proc_status(pid)?.rss;
        let cpu = procfs::cpu_seconds(pid);
        concurrent.push(
            api.run(size, options.count, options.clients, &filler)
                .await?,
        );
        cpu_concurrent += procfs::cpu_seconds(pid) - cpu;
        // Without a reset VmHWM is the process's all-time peak: then it is not shown.
        concurrent_growth = match (concurrent_growth, reset) {
            (Some(worst), Some(_)) => {
                let peak = proc_status(pid)?.hwm;
                Some(worst.max(procfs::kib_to_mib(peak) - procfs::kib_to_mib(rss_before)))
            }
            _ => None,
        };
        clear_objects(&upload_dir)?;

        dd.push(Run::timed(
            options.dd_mib * MIB,
            run_dd(dir, options.dd_mib).await?,
        ));
        let seconds = {
            let dir = dir.join("disk");
            let filler = filler.clone();
            let count = options.count;
            tokio::task::spawn_blocking(move || disk_pattern(&dir, size, count, &filler)).await??
        };
        pattern.push(Run::timed(size * files, seconds));
        raw.push(raw_endpoint.run(size, options.count, 1, &filler).await?);
        multipart.push(
            multipart_endpoint
                .run(size, options.count, 1, &filler)
                .await?,
        );
    }
    server.abort();

    let disk_mbs = pattern.mb_per_s();
    let versus = |mbs: f64| {
        format!(
            "disk (store's pattern) {disk_mbs:.0} MB/s: {:.0}%; HTTP+multipart {:.0} MB/s",
            100.0 * mbs / disk_mbs,
            multipart.mb_per_s()
        )
    };
    rows.push(Row {
        measure: format!(
            "upload to the api, {} × {} MiB, 1 client",
            options.count, options.size_mib
        ),
        value: sequential.mb_per_s(),
        unit: "MB/s",
        baseline: versus(sequential.mb_per_s()),
        target: Target::Info,
        note: format!(
            "{}; api CPU {:.0}% of one core",
            sequential.note(),
            100.0 * cpu_sequential / sequential.seconds()
        ),
    });
    rows.push(Row {
        measure: format!(
            "upload to the api, {} × {} MiB, {} clients",
            options.count, options.size_mib, options.clients
        ),
        value: concurrent.mb_per_s(),
        unit: "MB/s",
        baseline: versus(concurrent.mb_per_s()),
        target: Target::Info,
        note: format!(
            "{}; api CPU {:.0}% of one core{}",
            concurrent.note(),
            100.0 * cpu_concurrent / concurrent.seconds(),
            concurrent_growth.map_or(String::new(), |growth| format!(
                "; api peak RSS +{growth:.1} MiB during a run (worst)"
            ))
        ),
    });
    rows.push(Row {
        measure: format!("disk: dd bs=1M count={} conv=fsync", options.dd_mib),
        value: dd.mb_per_s(),
        unit: "MB/s",
        baseline: String::new(),
        target: Target::Baseline,
        note: format!("{}; /dev/zero, one fsync at the end", dd.note()),
    });
    rows.push(Row {
        measure: format!(
            "disk: {} × {} MiB write, fsync, rename, fsync dir",
            options.count, options.size_mib
        ),
        value: disk_mbs,
        unit: "MB/s",
        baseline: String::new(),
        target: Target::Baseline,
        note: format!(
            "{}; the disk store's put, {} KiB writes, no HTTP",
            pattern.note(),
            DISK_WRITE / 1024
        ),
    });
    rows.push(Row {
        measure: format!(
            "loopback HTTP POST, {} MiB raw body drained",
            options.size_mib
        ),
        value: raw.mb_per_s(),
        unit: "MB/s",
        baseline: String::new(),
        target: Target::Baseline,
        note: format!("{}; in-process axum server, same client", raw.note()),
    });
    rows.push(Row {
        measure: format!(
            "loopback HTTP POST, {} MiB multipart parsed, drained",
            options.size_mib
        ),
        value: multipart.mb_per_s(),
        unit: "MB/s",
        baseline: String::new(),
        target: Target::Baseline,
        note: format!("{}; axum Multipart, field chunks dropped", multipart.note()),
    });

    print_table(&rows);
    details.insert(
        "throughput".into(),
        json!({
            "sequential": sequential.json(),
            "concurrent": concurrent.json(),
            "api_cpu_seconds": { "sequential": cpu_sequential, "concurrent": cpu_concurrent },
            "http_raw": raw.json(),
            "http_multipart": multipart.json(),
            "dd": dd.json(),
            "disk_pattern": pattern.json(),
        }),
    );
    let report = json!({
        "bench": "upload",
        "options": {
            "count": options.count,
            "size_mib": options.size_mib,
            "clients": options.clients,
            "memory_runs": options.memory_runs,
            "rounds": options.rounds,
            "dd_mib": options.dd_mib,
        },
        "machine": { "cpus": cpus, "kernel": kernel },
        "api_bin": api_bin.display().to_string(),
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "details": Value::Object(details),
    });
    if let Some(parent) = options.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&options.out, serde_json::to_vec_pretty(&report)?)?;
    println!("JSON written to {}", options.out.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Uploading

/// Where a body is posted, and what answer counts as success.
struct Endpoint {
    url: String,
    token: Option<String>,
    /// A multipart form with `customer_id` and one `file` part, else the raw body.
    multipart: bool,
    check: fn(reqwest::StatusCode, &str, u64) -> anyhow::Result<()>,
}

impl Endpoint {
    /// One POST of `size` bytes, streamed; the time until the whole answer is in.
    async fn post(
        &self,
        client: &reqwest::Client,
        size: u64,
        filler: &Bytes,
    ) -> anyhow::Result<Duration> {
        let body = Body::wrap_stream(pdf_body(size, filler.clone()));
        let mut request = client.post(&self.url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request = if self.multipart {
            let part = Part::stream_with_length(body, size)
                .file_name("bench.pdf")
                .mime_str("application/pdf")?;
            // Every part has a length, so the form sends a Content-Length (no chunking).
            request.multipart(Form::new().text("customer_id", CUSTOMER).part("file", part))
        } else {
            request.header(header::CONTENT_LENGTH, size).body(body)
        };
        let start = Instant::now();
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {}", self.url))?;
        let status = response.status();
        let text = response.text().await?;
        let elapsed = start.elapsed();
        (self.check)(status, &text, size)?;
        Ok(elapsed)
    }

    /// `count` uploads of `size`, taken in turn by `clients` concurrent clients.
    async fn run(
        &self,
        size: u64,
        count: u32,
        clients: u32,
        filler: &Bytes,
    ) -> anyhow::Result<Run> {
        let next = AtomicU32::new(0);
        let start = Instant::now();
        let per_client = futures_util::future::try_join_all((0..clients).map(|_| {
            let next = &next;
            async move {
                let client = reqwest::Client::new();
                let mut times = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    times.push(self.post(&client, size, filler).await?.as_secs_f64());
                }
                anyhow::Ok(times)
            }
        }))
        .await?;
        let seconds = start.elapsed().as_secs_f64();
        let mut latencies: Vec<f64> = per_client.into_iter().flatten().collect();
        latencies.sort_by(f64::total_cmp);
        Ok(Run {
            bytes: size * u64::from(count),
            seconds,
            clients,
            latencies,
        })
    }
}

fn check_accepted(status: reqwest::StatusCode, text: &str, size: u64) -> anyhow::Result<()> {
    ensure!(
        status == reqwest::StatusCode::ACCEPTED,
        "the upload was answered {status}: {text}"
    );
    let body: Value = serde_json::from_str(text).context("the upload's answer")?;
    let stored = body["files"][0]["file_size"].as_u64();
    ensure!(
        stored == Some(size),
        "the api stored {stored:?} bytes of {size}: {text}"
    );
    Ok(())
}

fn check_drained(status: reqwest::StatusCode, text: &str, size: u64) -> anyhow::Result<()> {
    ensure!(status.is_success(), "the drain answered {status}: {text}");
    let drained: u64 = text.trim().parse().context("the drain's count")?;
    ensure!(drained >= size, "the drain got {drained} bytes of {size}");
    Ok(())
}

/// `size` bytes: `%PDF-1.7\n`, then the filler, cyclically, in `CHUNK`s cut from one
/// shared buffer (nothing is copied, nothing is held whole).
fn pdf_body(
    size: u64,
    filler: Bytes,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut sent = 0u64;
    stream::iter(std::iter::from_fn(move || {
        let left = size - sent;
        if left == 0 {
            return None;
        }
        let chunk = if sent == 0 {
            Bytes::from_static(PDF_HEAD).slice(..PDF_HEAD.len().min(left as usize))
        } else {
            let offset = (sent % filler.len() as u64) as usize;
            let n = CHUNK.min(filler.len() - offset).min(left as usize);
            filler.slice(offset..offset + n)
        };
        sent += chunk.len() as u64;
        Some(Ok(chunk))
    }))
}

/// Pseudo-random bytes (xorshift), so nothing on the way can shortcut them.
fn filler() -> Bytes {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buffer = vec![0u8; FILLER];
    for word in buffer.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
    Bytes::from(buffer)
}

/// One throughput run.
struct Run {
    bytes: u64,
    seconds: f64,
    clients: u32,
    /// Seconds per upload, sorted.
    latencies: Vec<f64>,
}

impl Run {
    /// A run timed as a whole (a baseline without per-file times).
    fn timed(bytes: u64, seconds: f64) -> Self {
        Self {
            bytes,
            seconds,
            clients: 1,
            latencies: Vec::new(),
        }
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }

    fn latency_note(&self) -> String {
        let at = |q: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
            self.latencies.get(i).copied().unwrap_or(f64::NAN)
        };
        if self.latencies.is_empty() {
            format!("{:.2} s", self.seconds)
        } else {
            format!(
                "{:.2} s, per file {:.3} s median, {:.3} s max",
                self.seconds,
                at(0.5),
                at(1.0)
            )
        }
    }

    fn json(&self) -> Value {
        json!({
            "bytes": self.bytes,
            "seconds": self.seconds,
            "clients": self.clients,
            "mb_per_s": self.mb_per_s(),
            "per_file_seconds": self.latencies,
        })
    }
}

/// The rounds of one measure; its figure is the median round's.
#[derive(Default)]
struct Series {
    runs: Vec<Run>,
}

impl Series {
    fn push(&mut self, run: Run) {
        self.runs.push(run);
    }

    fn median(&self) -> Option<&Run> {
        let mut sorted: Vec<&Run> = self.runs.iter().collect();
        sorted.sort_by(|a, b| a.mb_per_s().total_cmp(&b.mb_per_s()));
        sorted.get(sorted.len() / 2).copied()
    }

    fn mb_per_s(&self) -> f64 {
        self.median().map_or(f64::NAN, Run::mb_per_s)
    }

    /// Seconds of all rounds together.
    fn seconds(&self) -> f64 {
        self.runs.iter().map(|r| r.seconds).sum()
    }

    fn note(&self) -> String {
        let rounds = self
            .runs
            .iter()
            .map(|r| format!("{:.0}", r.mb_per_s()))
            .collect::<Vec<_>>()
            .join(", ");
        let median = self.median().map_or(String::new(), Run::latency_note);
        format!("rounds {rounds} MB/s; median round {median}")
    }

    fn json(&self) -> Value {
        json!({
            "mb_per_s_median": self.mb_per_s(),
            "rounds": self.runs.iter().map(Run::json).collect::<Vec<_>>(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Memory, from /proc

/// One measured upload: the api's memory, in KiB.
struct Mem {
    size: u64,
    before: u64,
    /// The peak is VmHWM (reset just before), not only the samples.
    hwm_reset: bool,
    /// KiB the reset lowered VmHWM by (> 0 shows the reset works).
    hwm_lowered: u64,
    /// Peak during the upload: VmHWM after a reset (if that works), or sampled.
    peak: u64,
    sampled_peak: u64,
    after: u64,
    seconds: f64,
}

impl Mem {
    fn growth_mib(&self) -> f64 {
        procfs::kib_to_mib(self.peak.saturating_sub(self.before))
    }

    fn json(&self) -> Value {
        json!({
            "size": self.size,
            "rss_before_kib": self.before,
            "hwm_reset": self.hwm_reset,
            "hwm_lowered_by_reset_kib": self.hwm_lowered,
            "peak_kib": self.peak,
            "sampled_peak_kib": self.sampled_peak,
            "rss_after_kib": self.after,
            "growth_mib": self.growth_mib(),
            "seconds": self.seconds,
        })
    }
}

struct Status {
    rss: u64,
    hwm: u64,
}

fn proc_status(pid: u32) -> anyhow::Result<Status> {
    Ok(Status {
        rss: procfs::status_kib(pid, "VmRSS:")?,
        hwm: procfs::status_kib(pid, "VmHWM:")?,
    })
}

/// Resets the peak (VmHWM) to the current resident set (Linux ≥ 4.0).
fn reset_hwm(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("writing 5 to /proc/{pid}/clear_refs"))
}

/// A reset of the peak: the status just before and just after it.
struct Reset {
    before: Status,
    after: Status,
}

impl Reset {
    /// The reset took: VmHWM is now the resident set of the moment of the reset, which
    /// lies between the two readings (another thread may allocate or free meanwhile).
    fn took(&self) -> bool {
        self.after.hwm <= self.before.rss.max(self.after.rss) + 64
    }

    /// The reset visibly lowered VmHWM (a peak above VmRSS was there before it).
    fn lowered_by(&self) -> u64 {
        self.before.hwm.saturating_sub(self.after.hwm)
    }
}

/// Resets VmHWM if the kernel lets us; `None` if writing clear_refs fails.
fn try_reset(pid: u32) -> anyhow::Result<Option<Reset>> {
    let before = proc_status(pid)?;
    if let Err(e) = reset_hwm(pid) {
        eprintln!("{e:#}; the peak is VmRSS sampled every 1 ms");
        return Ok(None);
    }
    let after = proc_status(pid)?;
    Ok(Some(Reset { before, after }))
}

/// One upload with the api's memory watched: resident set before, peak during, after.
async fn measured_upload(
    api: &Endpoint,
    client: &reqwest::Client,
    pid: u32,
    size: u64,
    filler: &Bytes,
) -> anyhow::Result<Mem> {
    // Let the previous upload's tail (the relay publishing its job) settle first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reset = try_reset(pid)?;
    let hwm_reset = reset.as_ref().is_some_and(Reset::took);
    let before = match &reset {
        Some(reset) => reset.after.rss,
        None => proc_status(pid)?.rss,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(status) = proc_status(pid) {
                    max = status.rss.max(max);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            max
        })
    };
    let result = api.post(client, size, filler).await;
    stop.store(true, Ordering::Relaxed);
    let sampled = sampler
        .join()
        .map_err(|_| anyhow!("the RSS sampler panicked"))?;
    let elapsed = result?;
    let status = proc_status(pid)?;
    let peak = if hwm_reset {
        status.hwm.max(sampled)
    } else {
        sampled.max(status.rss)
    };
    Ok(Mem {
        size,
        before,
        hwm_reset,
        hwm_lowered: reset.as_ref().map_or(0, Reset::lowered_by),
        peak,
        sampled_peak: sampled,
        after: status.rss,
        seconds: elapsed.as_secs_f64(),
    })
}

// ---------------------------------------------------------------------------------------
// Baselines

/// Seconds for `dd if=/dev/zero of=<dir>/dd.bin bs=1M count=<mib> conv=fsync`.
async fn run_dd(dir: &Path, mib: u64) -> anyhow::Result<f64> {
    let path = dir.join("dd.bin");
    let start = Instant::now();
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", path.display()))
        .args([
            "bs=1M",
            &format!("count={mib}"),
            "conv=fsync",
            "status=none",
        ])
        .output()
        .await
        .context("running dd")?;
    let seconds = start.elapsed().as_secs_f64();
    std::fs::remove_file(&path).ok();
    ensure!(
        out.status.success(),
        "dd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(seconds)
}

/// Seconds for `count` files of `size` written as the disk store writes an upload: a
/// temporary file in `DISK_WRITE` writes, fsync, rename, fsync of the directory.
fn disk_pattern(dir: &Path, size: u64, count: u32, filler: &[u8]) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let start = Instant::now();
    for i in 0..count {
        let temp = dir.join(format!(".upload-{i}.tmp"));
        let target = dir.join(format!("object-{i}.pdf"));
        let mut file = std::fs::File::create(&temp)?;
        let mut left = size;
        let mut offset = 0usize;
        while left > 0 {
            let n = DISK_WRITE.min(filler.len() - offset).min(left as usize);
            file.write_all(&filler[offset..offset + n])?;
            offset = (offset + n) % filler.len();
            left -= n as u64;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, &target)?;
        std::fs::File::open(dir)?.sync_all()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    std::fs::remove_dir_all(dir)?;
    Ok(seconds)
}

/// An in-process HTTP server on loopback that reads request bodies and drops them:
/// `/raw` the body as is, `/multipart` parsed into fields. Answers the bytes it read.
async fn drain_server() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    async fn raw(body: axum::body::Body) -> Result<String, (StatusCode, String)> {
        let mut stream = body.into_data_stream();
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            total += chunk
                .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?
                .len();
        }
        Ok(total.to_string())
    }
    async fn multipart(mut form: Multipart) -> Result<String, (StatusCode, String)> {
        let bad = |e: axum::extract::multipart::MultipartError| (e.status(), e.body_text());
        let mut total = 0usize;
        while let Some(mut field) = form.next_field().await.map_err(bad)? {
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                total += chunk.len();
            }
        }
        Ok(total.to_string())
    }
    let app = Router::new()
        .route("/raw", post(raw))
        .route("/multipart", post(multipart))
        .layer(DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    Ok((addr, server))
}

// ---------------------------------------------------------------------------------------
// The api's process, database and queues

/// What the bench made outside itself, removed by [`Resources::teardown`] (or, after a
/// panic, on drop).
#[derive(Default)]
struct Resources {
    admin_url: String,
    database: Option<String>,
    prefix: Option<String>,
    api: Option<Child>,
    log: Option<PathBuf>,
}

impl Resources {
    async fn teardown(&mut self) {
        if let Some(child) = self.api.take() {
            child_api::stop(child).await;
        }
        if let Some(database) = self.database.take()
            && let Err(e) = child_api::drop_database(&self.admin_url, &database).await
        {
            eprintln!("could not drop database {database}: {e:#}");
        }
        if let Some(prefix) = self.prefix.take()
            && let Err(e) = child_api::delete_topology(&prefix, RETRY_TIERS, DELIVERY_LIMIT).await
        {
            eprintln!("could not delete the queues of prefix {prefix}: {e:#}");
        }
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        if let Some(child) = self.api.as_mut() {
            child.start_kill().ok();
        }
        self.api = None;
        if self.database.is_none() && self.prefix.is_none() {
            return;
        }
        // Only after a panic: drop cannot await, so finish on a runtime of its own.
        let mut rest = std::mem::take(self);
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(rest.teardown());
            }
        })
        .join()
        .ok();
    }
}

/// Removes the stored objects between runs (the disk does not fill; each run starts alike).
fn clear_objects(upload_dir: &Path) -> anyhow::Result<()> {
    let objects = upload_dir.join("objects");
    if objects.exists() {
        std::fs::remove_dir_all(&objects)?;
    }
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// The report

#[derive(Debug, Clone, Copy)]
enum Target {
    AtMost(f64),
    /// A baseline, measured to read the figures against.
    Baseline,
    /// A figure with no target of its own.
    Info,
}

struct Row {
    measure: String,
    value: f64,
    unit: &'static str,
    baseline: String,
    target: Target,
    note: String,
}

impl Row {
    fn target(&self) -> String {
        match self.target {
            Target::AtMost(v) => format!("≤ {v} {}", self.unit),
            Target::Baseline => "(baseline)".into(),
            Target::Info => "-".into(),
        }
    }

    fn met(&self) -> &'static str {
        match self.target {
            Target::AtMost(v) if self.value <= v => "met",
            Target::AtMost(_) => "MISSED",
            Target::Baseline | Target::Info => "-",
        }
    }

    fn json(&self) -> Value {
        json!({
            "measure": self.measure,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "target": self.target(),
            "met": self.met(),
            "note": self.note,
        })
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<56} {:>12}  {:<64} {:<10} {:<6}",
        "measure", "figure", "baseline", "target", "met?"
    );
    println!("{}", "-".repeat(152));
    for r in rows {
        println!(
            "{:<56} {:>12}  {:<64} {:<10} {:<6}",
            r.measure,
            format!("{:.1} {}", r.value, r.unit),
            r.baseline,
            r.target(),
            r.met()
        );
        println!("    {}", r.note);
    }
    println!(
        "\nMB = 10^6 bytes, MiB = 2^20 bytes; RSS from /proc/<pid>/status of the api process."
    );
}
