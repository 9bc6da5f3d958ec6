//! Metrics in the Prometheus text format (0.0.4), what both processes export at `/metrics`.
//!
//! Each part keeps a registry of its own (the api's in its `AppState`, the workers' in
//! their `Runtime`) rather than one per process: tests run many apps in one process,
//! and none may count another's requests or jobs.
//!
//! Here: rendering a registry, the optional `METRICS_TOKEN` check, the latency buckets,
//! and [`Backlog`], the gauges read on scrape from the job ledger and the broker (jobs
//! per state, outbox lag, queue depths), cached briefly so that frequent scrapes, or
//! several Prometheus servers, do not hammer PostgreSQL and RabbitMQ.

use std::{
    sync::atomic::AtomicU64,
    time::{Duration, Instant},
};

use anyhow::Context;
use lapin::{Connection, options::QueueDeclareOptions, types::FieldTable};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge, histogram::exponential_buckets},
};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::{
    ledger::jobs::kinds,
    ops,
    platform::broker::{self, Topology},
    platform::settings::{BrokerSettings, Secret},
};

pub use prometheus_client::{encoding::prometheus_text::CONTENT_TYPE, registry::Registry};

/// Every metric name starts with this.
pub const PREFIX: &str = "commcenter";

/// The registry as the text a scrape answers.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an error here is a metric that cannot encode.
    if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        tracing::error!(%error, "cannot encode the metrics");
    }
    text
}

/// Whether a scrape may read the metrics: anyone when `METRICS_TOKEN` is unset, else
/// only a request whose `Authorization` header is `Bearer <token>`.
pub fn scrape_allowed(token: Option<&Secret>, authorization: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    authorization
        .and_then(|header| header.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())))
}

/// Histogram buckets for latencies, in seconds: 5 ms doubling up to 82 s, past the
/// jobs' 60 s timeout.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.005, 2.0, 15)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

/// A family of one series without labels: unlike a plain gauge, it can be left
/// without a value when its source cannot be read.
type Unlabelled = [(&'static str, &'static str); 0];

/// How long one read of the ledger or the queues may take before its source counts as
/// unreachable: a scrape must answer, in time, even when PostgreSQL or RabbitMQ hangs.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The gauges of work waiting: the ledger's jobs per state and outbox lag, and each
/// queue's depth and consumers. Read on scrape, at most once per `max_age`.
pub struct Backlog {
    pool: PgPool,
    broker: BrokerSettings,
    topology: Topology,
    queues: Vec<String>,
    max_age: Duration,
    /// One refresh at a time; the broker connection is kept between refreshes.
    cache: tokio::sync::Mutex<Cache>,
    jobs: Family<StateLabel, Gauge>,
    outbox_oldest_pending: Family<Unlabelled, Gauge<f64, AtomicU64>>,
    queue_depth: Family<QueueLabel, Gauge>,
    queue_consumers: Family<QueueLabel, Gauge>,
    broker_up: Gauge,
}

#[derive(Default)]
struct Cache {
    refreshed: Option<Instant>,
    connection: Option<Connection>,
}

impl Backlog {
    /// Registers the gauges in `registry`; the depths read are those of every queue of
    /// `topology`.
    pub fn register(
        registry: &mut Registry,
        pool: PgPool,
        broker: BrokerSettings,
        topology: Topology,
        max_age: Duration,
    ) -> Self {
        let backlog = Self {
            pool,
            broker,
            queues: topology.queues(kinds::ALL),
            topology,
            max_age,
            cache: Default::default(),
            jobs: Family::default(),
            outbox_oldest_pending: Family::default(),
            queue_depth: Family::default(),
            queue_consumers: Family::default(),
            broker_up: Gauge::default(),
        };
        registry.register(
            "jobs",
            "Jobs in the ledger, by state; absent while the database is unreachable",
            backlog.jobs.clone(),
        );
        registry.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest job not yet published to the broker (0 when none); absent while the database is unreachable",
            backlog.outbox_oldest_pending.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages ready in a queue (work, delay tier or dead letters); absent while the broker is unreachable",
            backlog.queue_depth.clone(),
        );
        registry.register(
            "queue_consumers",
            "Consumers of a queue; absent while the broker is unreachable",
            backlog.queue_consumers.clone(),
        );
        registry.register(
            "broker_up",
            "Whether the last read of the queues reached RabbitMQ (1) or not (0)",
            backlog.broker_up.clone(),
        );
        backlog
    }

    /// Reads the ledger and the queues again, unless the last read is younger than
    /// `max_age`. A source that cannot be read leaves its gauges without series (and
    /// `broker_up` at 0) rather than showing stale numbers.
    pub async fn refresh(&self) {
        let mut cache = self.cache.lock().await;
        if cache
            .refreshed
            .is_some_and(|at| at.elapsed() < self.max_age)
        {
            return;
        }
        self.read_ledger().await;
        self.read_queues(&mut cache.connection).await;
        cache.refreshed = Some(Instant::now());
    }

    async fn read_ledger(&self) {
        self.jobs.clear();
        self.outbox_oldest_pending.clear();
        match tokio::time::timeout(READ_TIMEOUT, ops::ledger_health(&self.pool)).await {
            Ok(Ok(health)) => {
                for (state, count) in health.by_state {
                    self.jobs.get_or_create(&StateLabel { state }).set(count);
                }
                self.outbox_oldest_pending
                    .get_or_create(&[])
                    .set(health.outbox.lag_seconds);
            }
            Ok(Err(error)) => tracing::warn!(%error, "metrics: cannot read the job ledger"),
            Err(_) => tracing::warn!("metrics: the job ledger did not answer in {READ_TIMEOUT:?}"),
        }
    }

    async fn read_queues(&self, connection: &mut Option<Connection>) {
        let read = tokio::time::timeout(READ_TIMEOUT, self.queue_stats(connection)).await;
        self.queue_depth.clear();
        self.queue_consumers.clear();
        let stats = match read {
            Ok(Ok(stats)) => stats,
            failed => {
                let error = match failed {
                    Ok(Err(error)) => format!("{error:#}"),
                    _ => format!("no answer within {READ_TIMEOUT:?}"),
                };
                tracing::warn!(error, "metrics: cannot read the queues");
                *connection = None;
                self.broker_up.set(0);
                return;
            }
        };
        for (queue, messages, consumers) in stats {
            self.queue_consumers
                .get_or_create(&QueueLabel {
                    queue: queue.clone(),
                })
                .set(consumers.into());
            self.queue_depth
                .get_or_create(&QueueLabel { queue })
                .set(messages.into());
        }
        self.broker_up.set(1);
    }

    /// Each known queue's ready messages and consumers, by passive declarations on the
    /// connection kept from the last read (or a new one).
    async fn queue_stats(
        &self,
        connection: &mut Option<Connection>,
    ) -> anyhow::Result<Vec<(String, u32, u32)>> {
        if !connection.as_ref().is_some_and(|c| c.status().connected()) {
            let opened = broker::connect(&self.broker, "commcenter-metrics").await?;
            self.topology.declare_on(&opened, kinds::ALL).await?;
            *connection = Some(opened);
        }
        let connection = connection.as_ref().context("no broker connection")?;
        let mut channel = connection.create_channel().await?;
        let mut stats = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            match channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
            {
                Ok(declared) => stats.push((
                    queue.clone(),
                    declared.message_count(),
                    declared.consumer_count(),
                )),
                // Deleted since this connection declared it: the broker closed the
                // channel, so go on with a new one, leaving this queue out.
                Err(_) => channel = connection.create_channel().await?,
            }
        }
        channel.close(200, "metrics read".into()).await.ok();
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_anyone_may_scrape() {
        assert!(scrape_allowed(None, None));
        assert!(scrape_allowed(None, Some("Bearer whatever")));
    }

    #[test]
    fn with_a_token_only_its_bearer_may_scrape() {
        let token = Secret::new("s3cret");
        assert!(scrape_allowed(Some(&token), Some("Bearer s3cret")));
        assert!(!scrape_allowed(Some(&token), None));
        assert!(!scrape_allowed(Some(&token), Some("Bearer s3cre")));
        assert!(!scrape_allowed(Some(&token), Some("Bearer s3cret2")));
        assert!(!scrape_allowed(Some(&token), Some("s3cret")));
        assert!(!scrape_allowed(Some(&token), Some("Basic s3cret")));
    }

    #[test]
    fn renders_the_prometheus_text_format_with_the_prefix() {
        let mut registry = Registry::with_prefix(PREFIX);
        let up: Gauge = Gauge::default();
        registry.register("broker_up", "up", up.clone());
        up.set(1);
        let text = render(&registry);
        assert!(
            text.contains("# TYPE commcenter_broker_up gauge\ncommcenter_broker_up 1\n"),
            "{text}"
        );
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn an_unlabelled_family_renders_bare_or_not_at_all() {
        let mut registry = Registry::with_prefix(PREFIX);
        let lag: Family<Unlabelled, Gauge<f64, AtomicU64>> = Family::default();
        registry.register("lag_seconds", "lag", lag.clone());
        lag.get_or_create(&[]).set(1.5);
        assert!(render(&registry).contains("\ncommcenter_lag_seconds 1.5\n"));
        lag.clear();
        assert!(!render(&registry).contains("\ncommcenter_lag_seconds "));
    }

    #[test]
    fn latency_buckets_reach_past_the_job_timeout() {
        let buckets: Vec<f64> = latency_buckets().collect();
        assert_eq!(buckets.first(), Some(&0.005));
        assert!(buckets.last().is_some_and(|last| *last > 60.0));
    }
}
