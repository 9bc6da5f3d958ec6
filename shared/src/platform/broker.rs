//! RabbitMQ: connecting with backoff, and the topology every process declares at
//! start-up (idempotently, so any process may come up first).
//!
//! ```text
//! {p}.jobs    direct   ──kind──▶ {p}.jobs.{kind}   quorum, delivery limit, DLX {p}.dead
//! {p}.delay   headers  ──tier──▶ {p}.delay.{tier}  TTL = tier, DLX {p}.jobs (routing key kept)
//! {p}.dead    fanout   ────────▶ {p}.dead          quorum; drained into the ledger
//! {p}.events  fanout   ────────▶ one exclusive queue per api instance
//! ```
//!
//! A retry is published to `{p}.delay` with routing key = its kind and header
//! `delay-tier`; when the tier's TTL expires the broker dead-letters it back to
//! `{p}.jobs` under its original routing key, so it returns to its own kind's queue.
//! Queue-wide TTLs (not per-message ones) because a per-message TTL only expires at the
//! head of a queue.

use std::time::Duration;

use anyhow::Context;
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use tokio_util::sync::CancellationToken;

use crate::platform::settings::{BrokerSettings, tier_label};

/// The header that picks a delay tier on the `{p}.delay` headers exchange. Not `x-`
/// prefixed: a headers exchange ignores `x-` headers when matching, which would send
/// a retry to every tier at once.
pub const DELAY_TIER_HEADER: &str = "delay-tier";

/// Names and declarations under one `QUEUE_PREFIX`.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
    pub tiers: Vec<Duration>,
    pub delivery_limit: u32,
}

impl Topology {
    pub fn new(prefix: &str, tiers: Vec<Duration>, delivery_limit: u32) -> Self {
        Self {
            prefix: prefix.to_owned(),
            tiers,
            delivery_limit,
        }
    }

    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }
    pub fn delay_exchange(&self) -> String {
        format!("{}.delay", self.prefix)
    }
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    pub fn work_queue(&self, kind: &str) -> String {
        format!("{}.jobs.{kind}", self.prefix)
    }
    pub fn delay_queue(&self, tier: Duration) -> String {
        format!("{}.delay.{}", self.prefix, tier_label(tier))
    }

    /// Every queue this topology owns for the given kinds (for inspection and cleanup).
    pub fn queues(&self, kinds: &[&str]) -> Vec<String> {
        let mut queues: Vec<String> = kinds.iter().map(|k| self.work_queue(k)).collect();
        queues.extend(self.tiers.iter().map(|t| self.delay_queue(*t)));
        queues.push(self.dead_queue());
        queues
    }

    pub fn exchanges(&self) -> Vec<String> {
        vec![
            self.jobs_exchange(),
            self.delay_exchange(),
            self.dead_exchange(),
            self.events_exchange(),
        ]
    }

    /// Declares exchanges, delay tiers, the dead-letter queue and one work queue per kind.
    pub async fn declare(&self, channel: &Channel, kinds: &[&str]) -> anyhow::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, kind) in [
            (self.jobs_exchange(), ExchangeKind::Direct),
            (self.delay_exchange(), ExchangeKind::Headers),
            (self.dead_exchange(), ExchangeKind::Fanout),
            (self.events_exchange(), ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
                .with_context(|| format!("declaring exchange {name}"))?;
        }

        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };

        // What the broker gives up on lands here, to be recorded in the ledger.
        let dead = self.dead_queue();
        channel
            .queue_declare(dead.as_str().into(), durable_queue, quorum_args(&[]))
            .await
            .with_context(|| format!("declaring queue {dead}"))?;
        bind(
            channel,
            &dead,
            &self.dead_exchange(),
            "",
            FieldTable::default(),
        )
        .await?;

        for tier in &self.tiers {
            let queue = self.delay_queue(*tier);
            let mut args = FieldTable::default();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(tier.as_millis() as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                string(&self.jobs_exchange()),
            );
            // Classic queue: TTL expiry with dead-lettering is what it is built for, on
            // every broker version we support (3.10 and up).
            channel
                .queue_declare(queue.as_str().into(), durable_queue, args)
                .await
                .with_context(|| format!("declaring queue {queue}"))?;
            let mut match_tier = FieldTable::default();
            match_tier.insert("x-match".into(), string("all"));
            match_tier.insert(DELAY_TIER_HEADER.into(), string(&tier_label(*tier)));
            bind(channel, &queue, &self.delay_exchange(), "", match_tier).await?;
        }

        for kind in kinds {
            let queue = self.work_queue(kind);
            let args = quorum_args(&[
                (
                    "x-delivery-limit",
                    AMQPValue::LongLongInt(self.delivery_limit as i64),
                ),
                ("x-dead-letter-exchange", string(&self.dead_exchange())),
                // Dead-lettering that cannot lose messages (RabbitMQ 3.10+); it
                // requires reject-publish overflow.
                ("x-dead-letter-strategy", string("at-least-once")),
                ("x-overflow", string("reject-publish")),
            ]);
            channel
                .queue_declare(queue.as_str().into(), durable_queue, args)
                .await
                .with_context(|| format!("declaring queue {queue}"))?;
            bind(
                channel,
                &queue,
                &self.jobs_exchange(),
                kind,
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }

    /// Declares the topology on a channel of its own. Whoever looks at queues does this
    /// first on each new connection: asking after a queue the broker does not have yet
    /// (before the relay or a worker declared it) makes the broker close the channel,
    /// which lapin logs as an error, so a first start would log red.
    pub async fn declare_on(&self, connection: &Connection, kinds: &[&str]) -> anyhow::Result<()> {
        let channel = connection.create_channel().await?;
        self.declare(&channel, kinds).await?;
        channel.close(200, "declared".into()).await.ok();
        Ok(())
    }

    /// Deletes every queue and exchange of this topology (tests and teardown).
    pub async fn delete(&self, channel: &Channel, kinds: &[&str]) {
        for queue in self.queues(kinds) {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .ok();
        }
        for exchange in self.exchanges() {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .ok();
        }
    }

    /// An exclusive, server-named queue on the events exchange for one api instance,
    /// bounded so a stalled instance cannot fill the broker.
    pub async fn declare_event_queue(&self, channel: &Channel) -> anyhow::Result<String> {
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(100_000));
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .context("declaring the events queue")?;
        let name = queue.name().as_str().to_owned();
        bind(
            channel,
            &name,
            &self.events_exchange(),
            "",
            FieldTable::default(),
        )
        .await?;
        Ok(name)
    }
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

fn quorum_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string("quorum"));
    for (key, value) in extra {
        args.insert(ShortString::from(*key), value.clone());
    }
    args
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
    args: FieldTable,
) -> anyhow::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            args,
        )
        .await
        .with_context(|| format!("binding {queue} to {exchange}"))
}

/// One connection attempt.
pub async fn connect(settings: &BrokerSettings, name: &str) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(settings.url.expose(), properties)
        .await
        .context("cannot connect to RabbitMQ (AMQP_URL)")
}

/// Connects, retrying with capped exponential backoff until it succeeds or `shutdown`
/// fires (then `None`).
pub async fn connect_with_backoff(
    settings: &BrokerSettings,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let mut wait = Duration::from_millis(100);
    loop {
        match connect(settings, name).await {
            Ok(connection) => return Some(connection),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in_ms = wait.as_millis() as u64,
                    "RabbitMQ unreachable"
                );
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(settings.reconnect_max);
    }
}

/// A queue's depth and consumers, as the broker tells them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueLook {
    pub queue: String,
    /// False for a queue not declared yet (no process has run its kind).
    pub exists: bool,
    pub messages: u32,
    pub consumers: u32,
}

/// Looks at one queue by a passive declare. Each look has a channel of its own: the
/// broker closes the channel that asks after a queue it does not have.
pub async fn look(connection: &Connection, queue: &str) -> anyhow::Result<QueueLook> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    Ok(
        match channel
            .queue_declare(queue.into(), passive, Default::default())
            .await
        {
            Ok(found) => {
                channel.close(200, "done".into()).await.ok();
                QueueLook {
                    queue: queue.to_owned(),
                    exists: true,
                    messages: found.message_count(),
                    consumers: found.consumer_count(),
                }
            }
            Err(_) => QueueLook {
                queue: queue.to_owned(),
                exists: false,
                messages: 0,
                consumers: 0,
            },
        },
    )
}
