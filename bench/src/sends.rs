//! (c) The api's accept rate: `POST /api/messages/send` answered 202.
//! (b) End to end: that POST until a connected staff WebSocket receives the
//! `message.new` frame the worker's delivery announces.
//!
//! Each gives its sustained maximum (closed loop) and then its latency at half that
//! rate (open loop, paced).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_tungstenite::tungstenite::Message;

use commcenter_tests::{TestApp, TestOptions, WsClient, spawn_app_with};
use commcenter_workers::handlers;

use crate::{
    Options,
    load::{self, LoadResult},
    probe::{self, CpuSnapshot, DbCounters},
    report::{Report, Row, Target, number},
    system::{self, Api, Workers},
};

/// Distinct conversations the sends spread over.
const CUSTOMERS: u64 = 1000;
/// Frames buffered per WebSocket connection: large, so the bench's one client reading
/// every event is never cut off as too slow while bursts arrive.
const WS_BUFFER: usize = 65_536;
/// A send whose frame has not arrived by then counts as lost.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Instant>>>>;

/// Sends messages as staff; each message text carries its sequence number, which is
/// how its `message.new` frame is matched (the frame may beat the HTTP response).
struct Sender {
    client: reqwest::Client,
    url: String,
    authorization: HeaderValue,
    next: AtomicU64,
    pending: Pending,
}

impl Sender {
    fn new(app: &TestApp, api: &Api) -> anyhow::Result<Self> {
        Ok(Self {
            client: load::http_client(),
            url: format!("{}/api/messages/send", api.base_url),
            authorization: HeaderValue::from_str(&format!("Bearer {}", app.staff_token()))?,
            next: AtomicU64::new(0),
            pending: Pending::default(),
        })
    }

    async fn post(&self, seq: u64) -> anyhow::Result<()> {
        let body = format!(
            r#"{{"customer_id":"bench-c{}","message":"bench {seq}"}}"#,
            seq % CUSTOMERS
        );
        let response = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        // Read the body whole, so the connection goes back to the pool.
        let body = response.bytes().await?;
        anyhow::ensure!(
            status.as_u16() == 202,
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    /// POST answered 202; latency from `start`.
    async fn accept(&self, start: Instant) -> anyhow::Result<Duration> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.post(seq).await?;
        Ok(start.elapsed())
    }

    /// POST until its frame arrives; latency from `start`.
    async fn end_to_end(&self, start: Instant) -> anyhow::Result<Duration> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let (arrived, arrival) = oneshot::channel();
        self.lock().insert(seq, arrived);
        if let Err(error) = self.post(seq).await {
            self.lock().remove(&seq);
            return Err(error);
        }
        match tokio::time::timeout(FRAME_TIMEOUT, arrival).await {
            Ok(Ok(at)) => Ok(at.saturating_duration_since(start)),
            _ => {
                self.lock().remove(&seq);
                anyhow::bail!("no message.new frame within {FRAME_TIMEOUT:?}")
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Instant>>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads the staff WebSocket, timestamping each `message.new` frame for its sender.
async fn listen(app: &TestApp, api: &Api, pending: Pending) -> anyhow::Result<JoinHandle<()>> {
    let url = format!("{}/api/ws/staff-1?token={}", api.ws_base, app.staff_token());
    let mut stream = WsClient::connect(&url)
        .await
        .context("connecting the staff WebSocket")?
        .into_inner();
    Ok(tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(text) => {
                    let at = Instant::now();
                    let waiting = sequence_of(text.as_str()).and_then(|seq| {
                        pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&seq)
                    });
                    if let Some(waiting) = waiting {
                        waiting.send(at).ok();
                    }
                }
                Message::Ping(payload) => {
                    stream.send(Message::Pong(payload)).await.ok();
                }
                Message::Close(frame) => {
                    eprintln!("    the staff WebSocket was closed: {frame:?}");
                    return;
                }
                _ => {}
            }
        }
    }))
}

fn sequence_of(frame: &str) -> Option<u64> {
    let frame: Value = serde_json::from_str(frame).ok()?;
    if frame["type"] != "message.new" {
        return None;
    }
    frame["message"]
        .as_str()?
        .strip_prefix("bench ")?
        .parse()
        .ok()
}

pub async fn accept(options: &Options, report: &mut Report) -> anyhow::Result<()> {
    eprintln!(
        "(c) accept rate: POST /api/messages/send, {} in flight, workers stopped, api {:?}",
        options.concurrency, options.api
    );
    // Workers stopped: what is measured is the request path (and the relay beside it).
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ws_buffer: WS_BUFFER,
        ..Default::default()
    })
    .await;
    let api = Api::start(&app, options.api, options.db_connections, WS_BUFFER).await?;
    let result = async {
        let sender = Arc::new(Sender::new(&app, &api)?);
        let op = move |sender: Arc<Sender>| {
            move |start| {
                let sender = sender.clone();
                async move { sender.accept(start).await }
            }
        };
        load::closed_loop(options.concurrency, options.warmup(), op(sender.clone())).await;
        probe::reset_statements(&app.pool).await;
        let db = DbCounters::read(&app.pool).await;
        let cpu = CpuSnapshot::take();
        let max =
            load::closed_loop(options.concurrency, options.window(), op(sender.clone())).await;
        let cpu = cpu.usage_since();
        let db = DbCounters::read(&app.pool).await.since(db);
        let statements = probe::statement_report(&app.pool, max.ok, "request").await;
        eprintln!("    statements: {statements}");
        eprintln!("    max: {}", max.describe());
        let half = load::open_loop(max.rate() / 2.0, options.window(), op(sender.clone())).await;
        eprintln!("    half load: {}", half.describe());
        anyhow::Ok((max, half, cpu, db, statements))
    }
    .await;
    api.stop().await;
    let indexes = probe::index_report(&app.pool).await;
    drop(app);
    let (max, half, cpu, db, statements) = result?;
    report.note(format!("(c) indexes written per send: {indexes}"));
    report.note(format!("(c) at max, PostgreSQL's statements: {statements}"));

    report.set_baseline("c.accepts_per_s", max.rate());
    report.row(Row {
        scenario: "(c) api accept",
        measure: format!("202s/s, closed loop, {} in flight", options.concurrency),
        value: max.rate(),
        unit: "req/s",
        target: Target::AtLeast(5_000.0),
        beside: report.baseline("d.msgs_per_s", "broker ceiling (d)", "msgs/s"),
    });
    report.row(Row {
        scenario: "(c) api accept",
        measure: "p99 latency at that max".into(),
        value: max.ms(0.99),
        unit: "ms",
        target: Target::Below(20.0),
        beside: format!("p50 {:.1} ms{}", max.ms(0.5), errors(&max)),
    });
    report.row(Row {
        scenario: "(c) api accept",
        measure: format!(
            "p99 latency at half load ({} req/s, open loop)",
            number(max.rate() / 2.0)
        ),
        value: half.ms(0.99),
        unit: "ms",
        target: Target::Below(20.0),
        beside: format!(
            "p50 {:.1} ms, achieved {}/s{}",
            half.ms(0.5),
            number(half.rate()),
            errors(&half)
        ),
    });
    report.note(format!("(c) at max: {}", cpu.describe()));
    report.note(format!(
        "(c) at max, approx. {}",
        db.describe_per(max.ok, "request")
    ));
    report.detail(
        "accept",
        json!({ "max": max.to_json(), "half_load": half.to_json(), "cpu_at_max": cpu.to_json(), "db_at_max": db.to_json(max.ok) }),
    );
    Ok(())
}

pub async fn end_to_end(options: &Options, report: &mut Report) -> anyhow::Result<()> {
    eprintln!(
        "(b) end to end: POST -> staff WebSocket message.new, {} in flight, prefetch {}, api {:?}",
        options.e2e_concurrency, options.prefetch, options.api
    );
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ws_buffer: WS_BUFFER,
        prefetch: options.prefetch,
        ..Default::default()
    })
    .await;
    let api = Api::start(&app, options.api, options.db_connections, WS_BUFFER).await?;
    // The production handlers, on a production-sized pool.
    let pool = system::pool(&app, options.db_connections).await?;
    let workers = Workers::start(system::runtime(
        &app,
        pool.clone(),
        handlers::registry(
            &app.settings,
            Arc::new(commcenter_shared::platform::blob::BlobStore::from_settings(
                &app.settings.storage,
            )?),
        )?,
        options.prefetch,
        options.batch_size,
    ));
    let result = async {
        let sender = Arc::new(Sender::new(&app, &api)?);
        let listener = listen(&app, &api, sender.pending.clone()).await?;
        let op = move |sender: Arc<Sender>| {
            move |start| {
                let sender = sender.clone();
                async move { sender.end_to_end(start).await }
            }
        };
        load::closed_loop(
            options.e2e_concurrency,
            options.warmup(),
            op(sender.clone()),
        )
        .await;
        probe::reset_statements(&app.pool).await;
        let db = DbCounters::read(&app.pool).await;
        let cpu = CpuSnapshot::take();
        let max = load::closed_loop(
            options.e2e_concurrency,
            options.window(),
            op(sender.clone()),
        )
        .await;
        let cpu = cpu.usage_since();
        let db = DbCounters::read(&app.pool).await.since(db);
        let statements = probe::statement_report(&app.pool, max.ok, "send").await;
        eprintln!("    max: {}", max.describe());
        eprintln!("    statements: {statements}");
        let half = load::open_loop(max.rate() / 2.0, options.window(), op(sender.clone())).await;
        eprintln!("    half load: {}", half.describe());
        listener.abort();
        anyhow::Ok((max, half, cpu, db, statements))
    }
    .await;
    workers.stop().await;
    api.stop().await;
    pool.close().await;
    drop(app);
    let (max, half, cpu, db, statements) = result?;
    report.note(format!("(b) at max, PostgreSQL's statements: {statements}"));

    report.row(Row {
        scenario: "(b) end to end",
        measure: format!(
            "sends/s POST -> WS frame, closed loop, {} in flight",
            options.e2e_concurrency
        ),
        value: max.rate(),
        unit: "sends/s",
        target: Target::AtLeast(2_500.0),
        beside: format!(
            "{}; {}; p50 {:.1} ms p99 {:.1} ms at max{}",
            report.baseline("c.accepts_per_s", "accept (c)", "req/s"),
            report.baseline("a.jobs_per_s", "burn-down (a)", "jobs/s"),
            max.ms(0.5),
            max.ms(0.99),
            errors(&max),
        ),
    });
    report.row(Row {
        scenario: "(b) end to end",
        measure: format!(
            "p50 latency at half load ({} sends/s, open loop)",
            number(max.rate() / 2.0)
        ),
        value: half.ms(0.5),
        unit: "ms",
        target: Target::Info,
        beside: format!(
            "p90 {:.1} ms, max {:.1} ms",
            half.ms(0.9),
            half.latency.max() as f64 / 1000.0
        ),
    });
    report.row(Row {
        scenario: "(b) end to end",
        measure: "p99 latency at half load".into(),
        value: half.ms(0.99),
        unit: "ms",
        target: Target::Below(50.0),
        beside: format!("achieved {}/s{}", number(half.rate()), errors(&half)),
    });
    report.note(format!("(b) at max: {}", cpu.describe()));
    report.note(format!(
        "(b) at max, approx. {}",
        db.describe_per(max.ok, "send")
    ));
    report.detail(
        "end_to_end",
        json!({ "max": max.to_json(), "half_load": half.to_json(), "cpu_at_max": cpu.to_json(), "db_at_max": db.to_json(max.ok) }),
    );
    Ok(())
}

fn errors(result: &LoadResult) -> String {
    if result.errors == 0 {
        String::new()
    } else {
        format!(
            "; {} ERRORS ({})",
            result.errors,
            result.first_error.as_deref().unwrap_or("?")
        )
    }
}
