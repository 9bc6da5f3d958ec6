//! `hardening`: the black-box probe's three figures, measured on the real api binary
//! (`cargo run --release -p commcenter-bench --bin hardening`), each beside a baseline
//! from the same run:
//!
//! - Slow clients: connections that send nothing, half their headers, or part of a
//!   body, and how many the api still holds after its header and body timeouts, beside
//!   an api whose timeouts are set beyond the run (what every api was before them).
//! - The WebSocket attack: connections each sending one unfinished fragmented message
//!   of up to 60 MiB; the api's peak RSS growth, beside the same attack (on fewer
//!   connections) at an api whose message limit is set above 60 MiB.
//! - A database outage: PostgreSQL reached through a TCP proxy that is cut; the time
//!   from the cut to the first `503 unavailable` of a request that needs the database
//!   and of `/readyz`, and the slowest answer after the cut, beside the same request's
//!   latency while the database is up.
//!
//! Each api is a child process with a database and queue prefix of its own, removed
//! at the end.

// A reporting tool: stdout is its output.
#![allow(clippy::print_stdout)]

#[path = "../api_process.rs"]
mod api_process;
#[path = "../child_api.rs"]
mod child_api;
#[allow(dead_code)]
#[path = "../procfs.rs"]
mod procfs;

use api_process::ApiProcess;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    },
};
use uuid::Uuid;

use commcenter_shared::{
    domain::{CustomerId, Role, UserId},
    platform::auth::{self, Claims},
};
use commcenter_tests::TcpProxy;

#[derive(Debug, Parser)]
#[command(about = "Slow clients, the WebSocket attack and a database outage, beside baselines")]
struct Options {
    /// Slow connections of each kind (silent, half headers, part of a body).
    #[arg(long, default_value_t = 1_000)]
    slow: usize,
    /// WebSocket connections in the attack.
    #[arg(long, default_value_t = 100)]
    attackers: usize,
    /// Connections in the baseline attack (each may cost the whole message).
    #[arg(long, default_value_t = 10)]
    baseline_attackers: usize,
    /// The unfinished message each attacker sends, in MiB.
    #[arg(long, default_value_t = 60)]
    message_mib: usize,
    /// The commcenter-api binary (default: built with `cargo build --release`).
    #[arg(long)]
    api_bin: Option<PathBuf>,
}

const RETRY_TIERS: &str = "1s,5s";
const DELIVERY_LIMIT: u32 = 5;
/// The api's defaults, which the slow-client figure waits out.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let admin = child_api::admin_database_url();
    let id = Uuid::new_v4().simple().to_string();
    let database = format!("cc_bench_hard_{id}");
    let prefix = format!("cc-bench-hard-{id}");
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

async fn run(options: &Options, admin: &str, database: &str, prefix: &str) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this bench is a debug build; run it with --release");
    }
    let bin = match &options.api_bin {
        Some(bin) => bin.clone(),
        None => child_api::build_api().await?,
    };
    let secret = format!("bench-secret-{prefix}");
    let token = |user: &str, role: Role| -> anyhow::Result<String> {
        let claims = Claims {
            sub: UserId::parse(user).map_err(|e| anyhow!(e.0))?,
            role,
            customer_id: (role == Role::Customer)
                .then(|| CustomerId::parse("cust-bench"))
                .transpose()
                .map_err(|e| anyhow!(e.0))?,
            exp: chrono::Utc::now().timestamp() + 3600,
        };
        Ok(auth::issue(&claims, &secret))
    };
    let url = child_api::replace_database(admin, database);
    println!("hardening bench: api {}", bin.display());

    // 1. Slow clients, the hardened api and the baseline side by side.
    // Every slow send is one of the user's sends: the send limit would refuse most.
    let hardened = ApiProcess::start(
        &bin,
        url.clone(),
        prefix,
        &secret,
        (RETRY_TIERS, DELIVERY_LIMIT),
        &[("RATE_LIMIT_SENDS", "none")],
    )
    .await?;
    let baseline = ApiProcess::start(
        &bin,
        url.clone(),
        prefix,
        &secret,
        (RETRY_TIERS, DELIVERY_LIMIT),
        &[
            ("RATE_LIMIT_SENDS", "none"),
            ("HTTP_HEADER_TIMEOUT_SECS", "86400"),
            ("HTTP_BODY_TIMEOUT_SECS", "86400"),
        ],
    )
    .await?;
    let staff = token("bench-staff", Role::Staff)?;
    println!(
        "\nslow clients: {} silent, {} with half their headers, {} with 16 bytes of a 1,000-byte body",
        options.slow, options.slow, options.slow
    );
    let files_before = (hardened.open_files(), baseline.open_files());
    let mut held = open_slow(&hardened.addr.to_string(), options.slow, &staff).await?;
    let mut held_baseline = open_slow(&baseline.addr.to_string(), options.slow, &staff).await?;
    let opened = Instant::now();
    println!(
        "  open files at the api: {} → {} (baseline {} → {})",
        files_before.0,
        hardened.open_files(),
        files_before.1,
        baseline.open_files()
    );
    for wait in [HEADER_TIMEOUT, BODY_TIMEOUT] {
        let at = wait + Duration::from_secs(3);
        tokio::time::sleep(at.saturating_sub(opened.elapsed())).await;
        let (open, base_open) = (
            still_open(&mut held).await,
            still_open(&mut held_baseline).await,
        );
        println!(
            "  after {:>2} s: the api holds {:>5} of {} (open files {:>5}); baseline holds {:>5} (open files {:>5})",
            at.as_secs(),
            open,
            held.len(),
            hardened.open_files(),
            base_open,
            baseline.open_files()
        );
    }
    drop((held, held_baseline));
    hardened.stop().await;
    baseline.stop().await;

    // 2. The WebSocket attack.
    println!(
        "\nWebSocket attack: each connection sends one unfinished {} MiB message in 64 KiB fragments",
        options.message_mib
    );
    let limit = (options.message_mib * 1024 * 1024 + 1024 * 1024).to_string();
    for (label, attackers, settings) in [
        (
            "the api (WS_MAX_MESSAGE_BYTES default)",
            options.attackers,
            vec![],
        ),
        (
            "baseline (WS_MAX_MESSAGE_BYTES above the message)",
            options.baseline_attackers,
            vec![("WS_MAX_MESSAGE_BYTES", limit.as_str())],
        ),
    ] {
        let api = ApiProcess::start(
            &bin,
            url.clone(),
            prefix,
            &secret,
            (RETRY_TIERS, DELIVERY_LIMIT),
            &settings,
        )
        .await?;
        let (growth, closed) = ws_attack(&api, attackers, options.message_mib, &token).await?;
        println!(
            "  {label:<52} {attackers:>4} connections: peak RSS +{growth:>7.1} MiB ({:.2} MiB a connection), {closed} cut off",
            growth / attackers as f64
        );
        api.stop().await;
    }

    // 3. The database goes away.
    println!("\ndatabase outage (the api's connection to PostgreSQL cut by a proxy)");
    let proxy = TcpProxy::start("127.0.0.1:5432".parse()?).await;
    let api = ApiProcess::start(
        &bin,
        proxy.database_url(database),
        prefix,
        &secret,
        (RETRY_TIERS, DELIVERY_LIMIT),
        &[],
    )
    .await?;
    outage(&api, &proxy, &staff).await?;
    api.stop().await;
    Ok(())
}

/// Opens `n` connections of each slow kind; the server has read what they sent.
async fn open_slow(addr: &str, n: usize, token: &str) -> anyhow::Result<Vec<TcpStream>> {
    let half_headers = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: ".to_vec();
    let part_body = format!(
        "POST /api/messages/send HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"customer_id\":\"c"
    )
    .into_bytes();
    let mut held = Vec::with_capacity(3 * n);
    for sent in [Vec::new(), half_headers, part_body] {
        for _ in 0..n {
            let mut stream = TcpStream::connect(addr).await?;
            stream.write_all(&sent).await?;
            held.push(stream);
        }
    }
    Ok(held)
}

/// How many of `held` the server has not closed (nor answered and closed).
async fn still_open(held: &mut [TcpStream]) -> usize {
    let mut open = 0;
    for stream in held.iter_mut() {
        let mut buf = [0u8; 4096];
        // Whatever the server answered (a 408, a 503) is read past; EOF or a reset is closed.
        let closed = loop {
            match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
                Err(_) => break false,
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(_)) => {}
            }
        };
        if !closed {
            open += 1;
        }
    }
    open
}

/// `attackers` connections (one user each) send one unfinished message of `mib` MiB;
/// the api's peak RSS growth over its RSS with them connected, and how many were cut off.
async fn ws_attack(
    api: &ApiProcess,
    attackers: usize,
    mib: usize,
    token: &impl Fn(&str, Role) -> anyhow::Result<String>,
) -> anyhow::Result<(f64, usize)> {
    let mut sockets = Vec::with_capacity(attackers);
    for i in 0..attackers {
        let user = format!("attacker-{i}");
        let url = format!(
            "ws://{}/api/ws/{user}?token={}",
            api.addr,
            token(&user, Role::Staff)?
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await?;
        socket.next().await.context("closed at once")??;
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = api.rss_mib()?;
    let peak_kib = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak_kib, pid) = (peak_kib.clone(), api.pid);
        tokio::spawn(async move {
            while let Ok(kib) = procfs::status_kib(pid, "VmRSS:") {
                peak_kib.fetch_max(kib, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let fragment = vec![b'x'; 64 * 1024];
    let fragments = mib * 16;
    let mut tasks = Vec::with_capacity(attackers);
    for mut socket in sockets {
        let fragment = fragment.clone();
        tasks.push(tokio::spawn(async move {
            let mut opcode = OpCode::Data(Data::Text);
            for _ in 0..fragments {
                let frame = Frame::message(fragment.clone(), opcode, false);
                if socket.send(Message::Frame(frame)).await.is_err() {
                    return true;
                }
                opcode = OpCode::Data(Data::Continue);
            }
            // All sent: cut off if the server has closed (a close frame or an error).
            matches!(
                tokio::time::timeout(Duration::from_secs(2), socket.next()).await,
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None)
            )
        }));
    }
    let mut closed = 0;
    for task in tasks {
        closed += usize::from(task.await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    sampler.abort();
    let peak = procfs::kib_to_mib(peak_kib.load(Ordering::Relaxed));
    Ok(((peak - before).max(0.0), closed))
}

/// Polls a request that needs the database and `/readyz` every 50 ms, cuts the
/// database, and reports when each first answered 503 and how slow answers were.
async fn outage(api: &ApiProcess, proxy: &TcpProxy, staff: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let base = format!("http://{}", api.addr);
    let request = format!("{base}/api/communications?customer_id=cust-bench");
    let mut up = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let response = client.get(&request).bearer_auth(staff).send().await?;
        anyhow::ensure!(response.status().is_success(), "{}", response.status());
        up.push(started.elapsed());
    }
    up.sort();
    let cut = Instant::now();
    proxy.cut();
    let mut polls = Vec::new();
    while cut.elapsed() < Duration::from_secs(6) {
        for (what, url, auth) in [
            ("request", &request, true),
            ("readyz", &format!("{base}/readyz"), false),
        ] {
            let (client, url, staff) = (client.clone(), url.clone(), staff.to_owned());
            polls.push(tokio::spawn(async move {
                let sent = cut.elapsed();
                let mut builder = client.get(&url);
                if auth {
                    builder = builder.bearer_auth(staff);
                }
                let answer = builder
                    .send()
                    .await
                    .map(|r| (r.status().as_u16(), r.headers().contains_key("retry-after")));
                (what, sent, sent.max(cut.elapsed()) - sent, answer.ok())
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answers = Vec::new();
    for poll in polls {
        answers.push(poll.await?);
    }
    println!(
        "  while up: the request answers in {:.1} ms (p50), {:.1} ms (max of 50)",
        up[up.len() / 2].as_secs_f64() * 1e3,
        up[up.len() - 1].as_secs_f64() * 1e3
    );
    for what in ["request", "readyz"] {
        let mine: Vec<_> = answers.iter().filter(|a| a.0 == what).collect();
        let first_503 = mine
            .iter()
            .filter(|a| a.3.is_some_and(|(status, _)| status == 503))
            .map(|a| a.1 + a.2)
            .min();
        let slowest = mine.iter().map(|a| a.2).max().unwrap_or_default();
        let with_retry_after = mine
            .iter()
            .filter(|a| a.3.is_some_and(|(status, retry)| status == 503 && retry))
            .count();
        let mut answered = std::collections::BTreeMap::<String, usize>::new();
        for a in &mine {
            let key =
                a.3.map_or("no answer".to_owned(), |(status, _)| status.to_string());
            *answered.entry(key).or_default() += 1;
        }
        println!(
            "  {what:<8}: first 503 {:>7} after the cut; slowest answer {:>5.0} ms; {} polls: {answered:?} ({with_retry_after} 503s with Retry-After)",
            first_503.map_or("never".into(), |t| format!(
                "{:.0} ms",
                t.as_secs_f64() * 1e3
            )),
            slowest.as_secs_f64() * 1e3,
            mine.len(),
        );
    }
    Ok(())
}
