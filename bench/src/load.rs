//! Load generation: closed loop (a fixed number of operations in flight, each starting
//! when one ends: the sustained maximum) and open loop (operations started on a fixed
//! schedule whatever the system does: latency at a given rate, measured from when each
//! operation was due, so a stall is not hidden by the load backing off).

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// Open-loop operations allowed in flight before the schedule waits for one to end.
const MAX_OUTSTANDING: usize = 20_000;

/// Latencies in microseconds, 1 µs to 2 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("constant, valid bounds")
}

#[derive(Debug)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
    /// The rate asked for (open loop only).
    pub offered: Option<f64>,
}

impl LoadResult {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: histogram(),
            offered: None,
        }
    }

    fn record(&mut self, outcome: anyhow::Result<Duration>) {
        match outcome {
            Ok(latency) => {
                self.ok += 1;
                self.latency
                    .saturating_record(latency.as_micros().max(1) as u64);
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.add(&other.latency).ok();
    }

    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} ok in {:.1}s = {:.0}/s; latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
            self.ok,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.latency.max() as f64 / 1000.0,
        );
        if self.errors > 0 {
            out.push_str(&format!(
                "; {} errors, first: {}",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        out
    }

    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.ok, "errors": self.errors, "first_error": self.first_error,
            "elapsed_s": self.elapsed.as_secs_f64(), "rate": self.rate(), "offered_rate": self.offered,
            "latency_ms": {
                "p50": self.ms(0.5), "p90": self.ms(0.9), "p99": self.ms(0.99), "p999": self.ms(0.999),
                "max": self.latency.max() as f64 / 1000.0, "mean": self.latency.mean() / 1000.0,
            },
        })
    }
}

/// `concurrency` loops each running `op` back to back until `window` has passed. `op`
/// is given its start time and returns its latency.
pub async fn closed_loop<F, Fut>(concurrency: usize, window: Duration, op: F) -> LoadResult
where
    F: Fn(Instant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Duration>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + window;
    let mut loops = JoinSet::new();
    for _ in 0..concurrency {
        let op = op.clone();
        loops.spawn(async move {
            let mut result = LoadResult::new();
            while Instant::now() < deadline {
                result.record(op(Instant::now()).await);
            }
            result
        });
    }
    let mut total = LoadResult::new();
    while let Some(result) = loops.join_next().await {
        if let Ok(result) = result {
            total.merge(result);
        }
    }
    // Up to the last operation's end: those started before the deadline count.
    total.elapsed = start.elapsed();
    total
}

/// Starts `op` at `rate` per second for `window`, each on its own task; `op` is given
/// the time it was due and returns its latency from then.
pub async fn open_loop<F, Fut>(rate: f64, window: Duration, op: F) -> LoadResult
where
    F: Fn(Instant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    let total_ops = (rate * window.as_secs_f64()).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut total = LoadResult::new();
    total.offered = Some(rate);
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for i in 0..total_ops {
        let due = start + interval.mul_f64(i as f64);
        // Timers tick in milliseconds: operations due within one start together.
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        tasks.spawn(op(due));
        while let Some(done) = tasks.try_join_next() {
            if let Ok(outcome) = done {
                total.record(outcome);
            }
        }
        if tasks.len() >= MAX_OUTSTANDING
            && let Some(Ok(outcome)) = tasks.join_next().await
        {
            total.record(outcome);
        }
    }
    // The offered window, not the tail: the rate achieved is what was asked for if
    // everything succeeded.
    total.elapsed = start.elapsed().max(window);
    while let Some(done) = tasks.join_next().await {
        if let Ok(outcome) = done {
            total.record(outcome);
        }
    }
    total
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}
