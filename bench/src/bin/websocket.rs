//! `websocket`: what a WebSocket costs the api and how fast an event fans out, measured
//! in one run on this machine (`cargo run --release -p commcenter-bench --bin websocket`).
//!
//! The real `commcenter-api` binary runs as a child process (a database and queue prefix
//! of its own, removed at the end); its resident memory is read from `/proc`.
//!
//! - Memory: RSS per idle WebSocket, with `--connections` open (all of one customer user,
//!   so presence is announced once), beside the RSS per idle HTTP keep-alive connection
//!   measured the same way. Target: ≤ 16 KiB per WebSocket. (This machine allows 20,000
//!   open files per process, both sides, so the default is 19,000 connections.)
//! - Fan-out: one event published to the events exchange reaching 1,000 staff
//!   connections, p50/p99 of the delay from publish to each connection's receipt over
//!   `--events` events, beside the same with 10 connections.

// A reporting tool: stdout is its output.
#![allow(clippy::print_stdout)]

// Memory is read in KiB through `procfs` here; the RSS-in-MiB reader goes unused.
#[allow(dead_code)]
#[path = "../api_process.rs"]
mod api_process;
#[path = "../child_api.rs"]
mod child_api;
// Memory only; the CPU-time reader goes unused here.
#[allow(dead_code)]
#[path = "../procfs.rs"]
mod procfs;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use lapin::{BasicProperties, options::BasicPublishOptions};
use tokio::{io::AsyncWriteExt, sync::Semaphore};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use api_process::ApiProcess;

use commcenter_shared::{
    domain::{CommunicationStatus, CustomerId, Role, UserId},
    ledger::events::{Event, EventBody},
    platform::auth::{self, Claims},
    platform::broker::Topology,
    platform::settings::parse_tiers,
};

#[derive(Debug, Parser)]
#[command(about = "WebSocket memory per connection and event fan-out latency, beside baselines")]
struct Options {
    /// Idle WebSockets held open for the memory figure.
    #[arg(long, default_value_t = 19_000)]
    connections: usize,
    /// Idle HTTP keep-alive connections for the baseline.
    #[arg(long, default_value_t = 2_000)]
    keepalive: usize,
    /// Staff connections an event fans out to (and the baseline's count).
    #[arg(long, default_value_t = 1_000)]
    fanout: usize,
    #[arg(long, default_value_t = 10)]
    fanout_baseline: usize,
    /// Events published per fan-out run.
    #[arg(long, default_value_t = 100)]
    events: usize,
    /// The commcenter-api binary (default: built with `cargo build --release`).
    #[arg(long)]
    api_bin: Option<std::path::PathBuf>,
}

const RETRY_TIERS: &str = "1s,5s";
const DELIVERY_LIMIT: u32 = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let admin = child_api::admin_database_url();
    let id = Uuid::new_v4().simple().to_string();
    let database = format!("cc_bench_ws_{id}");
    let prefix = format!("cc-bench-ws-{id}");
    child_api::create_database(&admin, &database).await?;
    let outcome = run(&options, &admin, &database, &prefix).await;
    if let Err(error) = child_api::drop_database(&admin, &database).await {
        eprintln!("could not drop {database}: {error:#}");
    }
    if let Err(error) = child_api::delete_topology(&prefix, RETRY_TIERS, DELIVERY_LIMIT).await {
        eprintln!("could not delete the queues of {prefix}: {error:#}");
    }
    outcome
}

/// An api of its own for one measurement: fan-out, not the rate limits, is measured,
/// and the baseline holds idle keep-alive connections.
async fn start_api(
    api_bin: &std::path::Path,
    admin: &str,
    database: &str,
    prefix: &str,
    secret: &str,
) -> anyhow::Result<ApiProcess> {
    ApiProcess::start(
        api_bin,
        child_api::replace_database(admin, database),
        prefix,
        secret,
        (RETRY_TIERS, DELIVERY_LIMIT),
        &[
            ("DATABASE_MAX_CONNECTIONS", "16"),
            ("WS_MAX_PER_USER", "1000000"),
            ("RATE_LIMIT_SENDS", "none"),
            ("HTTP_MAX_CONNECTIONS", "100000"),
            ("HTTP_HEADER_TIMEOUT_SECS", "3600"),
        ],
    )
    .await
}

async fn run(options: &Options, admin: &str, database: &str, prefix: &str) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this bench is a debug build; run it with --release");
    }
    let api_bin = match &options.api_bin {
        Some(bin) => bin.clone(),
        None => child_api::build_api().await?,
    };
    let secret = format!("bench-secret-{prefix}");
    let token = |user: &str, role: Role, customer: Option<&str>| -> anyhow::Result<String> {
        let claims = Claims {
            sub: UserId::parse(user).map_err(|e| anyhow!(e.0))?,
            role,
            customer_id: customer
                .map(CustomerId::parse)
                .transpose()
                .map_err(|e| anyhow!(e.0))?,
            exp: chrono::Utc::now().timestamp() + 24 * 3600,
        };
        Ok(auth::issue(&claims, &secret))
    };
    let per = |kib: u64, base: u64, n: usize| (kib.saturating_sub(base)) as f64 * 1024.0 / n as f64;

    // The baseline first, in an api of its own: idle HTTP keep-alive connections.
    let api = start_api(&api_bin, admin, database, prefix, &secret).await?;
    settle().await;
    let idle = procfs::status_kib(api.pid, "VmRSS:")?;
    let keepalive = hold_keepalive(&api.addr.to_string(), options.keepalive).await?;
    settle().await;
    let with_keepalive = procfs::status_kib(api.pid, "VmRSS:")?;
    drop(keepalive);
    api.stop().await;

    let api = start_api(&api_bin, admin, database, prefix, &secret).await?;
    let (pid, addr, log) = (api.pid, api.addr, api.log.clone());
    let result = async {
        println!("websocket bench: api {} (pid {pid}) on {addr}", api_bin.display());
        // 1. Memory, in a fresh api.
        settle().await;
        let before_ws = procfs::status_kib(pid, "VmRSS:")?;
        let customer = token("idle-customer", Role::Customer, Some("cust-idle"))?;
        let url = format!("ws://{addr}/api/ws/idle-customer?token={customer}");
        let mut held = Vec::with_capacity(options.connections);
        let first = options.connections.min(1000);
        held.extend(open(&url, first).await?);
        settle().await;
        let at_first = procfs::status_kib(pid, "VmRSS:")?;
        held.extend(open(&url, options.connections - first).await?);
        settle().await;
        let at_all = procfs::status_kib(pid, "VmRSS:")?;
        println!(
            "\nmemory (api RSS {:.1} MiB before any connection)",
            procfs::kib_to_mib(before_ws)
        );
        println!(
            "  per idle WebSocket, {} open: {:>7.0} B  (RSS {:.1} MiB)",
            held.len(),
            per(at_all, before_ws, held.len()),
            procfs::kib_to_mib(at_all)
        );
        println!(
            "  per idle WebSocket, {first} open: {:>7.0} B",
            per(at_first, before_ws, first)
        );
        println!(
            "  baseline: per idle HTTP keep-alive connection (another fresh api), {} open: {:>7.0} B",
            options.keepalive,
            per(with_keepalive, idle, options.keepalive)
        );
        for task in held.drain(..) {
            task.abort();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        // 2. Fan-out.
        let topology = Topology::new(prefix, parse_tiers(RETRY_TIERS)?, DELIVERY_LIMIT);
        let staff = token("fanout-staff", Role::Staff, None)?;
        let url = format!("ws://{addr}/api/ws/fanout-staff?token={staff}");
        println!("\nfan-out of one event, publish → each connection's receipt");
        for n in [options.fanout_baseline, options.fanout] {
            let (p50, p99, received) = fan_out(&url, &topology, n, options.events).await?;
            println!(
                "  {n:>5} connections: p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  ({received} of {} frames)",
                n * options.events
            );
        }
        anyhow::Ok(())
    }
    .await;
    child_api::stop(api.child).await;
    if result.is_err() {
        eprintln!("the api's log: {}", log.display());
    } else {
        std::fs::remove_file(&log).ok();
    }
    result
}

/// Lets the allocator and the api's tasks come to rest before RSS is read.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Opens `n` WebSockets (200 at a time), each served by a task that reads (answering
/// pings) until aborted.
async fn open(url: &str, n: usize) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let gate = Arc::new(Semaphore::new(200));
    let mut opening = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let url = url.to_owned();
        opening.push(tokio::spawn(async move {
            let (mut socket, _) = tokio_tungstenite::connect_async(&url).await?;
            // The `connected` frame: admitted.
            socket.next().await.context("closed at once")??;
            drop(permit);
            anyhow::Ok(tokio::spawn(async move {
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Ping(payload) = message {
                        let _ = socket.send(Message::Pong(payload)).await;
                    }
                }
            }))
        }));
    }
    let mut held = Vec::with_capacity(n);
    for task in opening {
        held.push(task.await??);
    }
    Ok(held)
}

/// `n` idle HTTP/1.1 keep-alive connections, each after one request.
async fn hold_keepalive(addr: &str, n: usize) -> anyhow::Result<Vec<tokio::net::TcpStream>> {
    use tokio::io::AsyncReadExt;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n")
            .await?;
        let mut buf = [0u8; 1024];
        let read = stream.read(&mut buf).await?;
        anyhow::ensure!(read > 0, "the api closed a keep-alive connection");
        held.push(stream);
    }
    Ok(held)
}

/// Publishes `events` events (20 a second) to `n` staff connections; the delays from
/// publish to receipt, p50 and p99 in ms, and how many frames arrived.
async fn fan_out(
    url: &str,
    topology: &Topology,
    n: usize,
    events: usize,
) -> anyhow::Result<(f64, f64, u64)> {
    let start = Instant::now();
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let gate = Arc::new(Semaphore::new(200));
    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
        socket.next().await.context("closed at once")??;
        drop(permit);
        let histogram = histogram.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                match message {
                    Message::Text(text) => {
                        let received = start.elapsed().as_micros() as u64;
                        let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else {
                            continue;
                        };
                        if frame["type"] != "communication.status" {
                            continue;
                        }
                        let sent = frame["reason"]
                            .as_str()
                            .and_then(|r| r.parse::<u64>().ok())
                            .unwrap_or(received);
                        if let Ok(mut h) = histogram.lock() {
                            h.saturating_record(received.saturating_sub(sent).max(1));
                        }
                    }
                    Message::Ping(payload) => {
                        let _ = socket.send(Message::Pong(payload)).await;
                    }
                    _ => {}
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connection = lapin::Connection::connect(
        &commcenter_tests::broker_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    let exchange = topology.events_exchange();
    for _ in 0..events {
        let event = Event::now(
            CustomerId::parse("cust-1").map_err(|e| anyhow!(e.0))?,
            EventBody::CommunicationStatus {
                communication_id: Uuid::new_v4(),
                status: CommunicationStatus::Sent,
                previous: CommunicationStatus::Queued,
                reason: Some(start.elapsed().as_micros().to_string()),
            },
        );
        channel
            .basic_publish(
                exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(&event)?,
                BasicProperties::default(),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    connection.close(200, "bye".into()).await.ok();
    for reader in &readers {
        reader.abort();
    }
    let histogram = histogram.lock().map_err(|_| anyhow!("poisoned"))?;
    Ok((
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.len(),
    ))
}
