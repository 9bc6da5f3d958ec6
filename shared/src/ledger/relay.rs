//! The outbox relay. Requests write their jobs (and workers their events) into
//! PostgreSQL in the same transaction as their effect; the relay publishes them to
//! RabbitMQ with publisher confirms, in batches, and only then marks jobs `queued` and
//! deletes events. With RabbitMQ down, rows wait; when it returns, the backlog drains.
//! A job is a message of its own (it is routed by kind and acked alone); events go
//! many to a message, in log order.
//!
//! Every process that writes to the outbox runs a relay and wakes it in-process right
//! after it commits (the api after accepting, a worker after a job); it also polls, so
//! what a crashed process left is published by another. Not PostgreSQL's NOTIFY: a
//! transaction that notifies takes a global lock through its commit, which serialises
//! every commit behind it and halved the api's accept rate. Several relays may run:
//! `FOR UPDATE SKIP LOCKED` gives each its own rows.

use std::{sync::Arc, time::Duration};

use futures_util::future::try_join_all;
use lapin::{
    BasicProperties, Channel,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    ledger::events,
    ledger::jobs::{self, Envelope},
    platform::broker::{self, Topology},
    platform::settings::{BrokerSettings, RelaySettings},
};

/// How long a batch of events waits for the broker's confirms.
const EVENT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Persistent delivery mode: survives a broker restart on durable queues.
const PERSISTENT: u8 = 2;

pub struct Relay {
    pub pool: PgPool,
    pub broker: BrokerSettings,
    pub topology: Topology,
    pub settings: RelaySettings,
    /// Job kinds whose queues the relay declares before publishing, so a job is never
    /// published before its queue exists.
    pub kinds: Vec<String>,
    /// Woken by the process's own writers after they commit outbox rows.
    pub wake: Arc<Notify>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub jobs: usize,
    pub events: usize,
}

impl Relay {
    /// Runs until `shutdown`: reconnects to RabbitMQ with backoff whenever it is lost.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let Some(connection) =
                broker::connect_with_backoff(&self.broker, "commcenter-relay", &shutdown).await
            else {
                return;
            };
            match self.serve(&connection, &shutdown).await {
                Ok(()) => {
                    connection.close(200, "shutting down".into()).await.ok();
                    return;
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "outbox relay lost its connection; reconnecting"
                    );
                    connection.close(200, "reconnecting".into()).await.ok();
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }

    async fn serve(
        &self,
        connection: &lapin::Connection,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let channel = connection.create_channel().await?;
        let kinds: Vec<&str> = self.kinds.iter().map(String::as_str).collect();
        self.topology.declare(&channel, &kinds).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        tracing::info!("outbox relay running");
        loop {
            self.drain(&channel).await?;
            tokio::select! {
                () = shutdown.cancelled() => {
                    // What the last writers committed goes out before we stop.
                    self.drain(&channel).await?;
                    // Closed before its connection: lapin logs an error for a channel
                    // still open when the connection closes under it.
                    channel.close(200, "shutting down".into()).await.ok();
                    return Ok(());
                }
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    /// Publishes batches until the outbox is empty.
    pub async fn drain(&self, channel: &Channel) -> anyhow::Result<Drained> {
        let mut total = Drained::default();
        loop {
            let jobs = self.publish_jobs(channel).await?;
            let events = self.publish_events(channel).await?;
            total.jobs += jobs;
            total.events += events;
            if (jobs as i64) < self.settings.batch && (events as i64) < self.settings.batch {
                return Ok(total);
            }
        }
    }

    async fn publish_jobs(&self, channel: &Channel) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(Uuid, String, serde_json::Value, i32)> = sqlx::query_as(
            "SELECT id, kind, payload, generation FROM jobs WHERE state = 'pending'
             ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.settings.batch)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let exchange = self.topology.jobs_exchange();
        let mut confirms = Vec::with_capacity(rows.len());
        for (job_id, kind, payload, generation) in &rows {
            let envelope = Envelope {
                job_id: *job_id,
                kind: kind.clone(),
                payload: payload.clone(),
            };
            let body = serde_json::to_vec(&envelope)?;
            confirms.push(
                channel
                    .basic_publish(
                        exchange.as_str().into(),
                        kind.as_str().into(),
                        // mandatory: a job with no queue for its kind comes back to us
                        // instead of vanishing.
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &body,
                        job_properties_at(*job_id, *generation),
                    )
                    .await?,
            );
        }
        let confirmations = try_join_all(confirms).await?;
        let mut published = Vec::with_capacity(rows.len());
        for ((job_id, kind, ..), confirmation) in rows.iter().zip(confirmations) {
            if !confirmation.is_ack() {
                tracing::warn!(%job_id, kind, "broker refused a job; it stays pending");
            } else if confirmation.take_message().is_some() {
                tracing::error!(%job_id, kind, "no queue for this job kind; it stays pending until a worker declares one");
            } else {
                published.push(*job_id);
            }
        }
        jobs::mark_published(&mut tx, &published).await?;
        tx.commit().await?;
        // Counted as published, not selected: a batch the broker would not route stays
        // pending, and must not keep the drain loop spinning on it.
        Ok(published.len())
    }

    async fn publish_events(&self, channel: &Channel) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        // One relay at a time gives positions, held to its commit: positions are then
        // in commit order (a reader that has N never finds a smaller one later), and a
        // reader taking the lock shared waits for a batch already on the broker.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(events::EVENT_LOG_LOCK)
            .execute(&mut *tx)
            .await?;
        // No FOR UPDATE SKIP LOCKED: under that lock no other relay takes events, and
        // locking each row before deleting it wrote a WAL record an event for nothing.
        let mut rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
            "DELETE FROM event_outbox WHERE id IN (
                 SELECT id FROM event_outbox ORDER BY id LIMIT $1)
             RETURNING id, payload",
        )
        .bind(self.settings.batch)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_by_key(|(id, _)| *id);
        let positions: Vec<i64> = sqlx::query_scalar(
            "SELECT nextval('event_log_seq') FROM generate_series(1, $1) ORDER BY 1",
        )
        .bind(rows.len() as i64)
        .fetch_all(&mut *tx)
        .await?;
        for ((_, payload), seq) in rows.iter_mut().zip(&positions) {
            if let serde_json::Value::Object(fields) = payload {
                fields.insert("seq".into(), (*seq).into());
            }
        }
        let customers: Vec<Option<&str>> = rows
            .iter()
            .map(|(_, payload)| payload.get("customer_id").and_then(|c| c.as_str()))
            .collect();
        let payloads: Vec<&serde_json::Value> = rows.iter().map(|(_, payload)| payload).collect();
        sqlx::query(
            "INSERT INTO event_log (seq, customer_id, payload)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::jsonb[])",
        )
        .bind(&positions)
        .bind(&customers)
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
        let exchange = self.topology.events_exchange();
        let mut confirms = Vec::new();
        for body in messages_of(&payloads)? {
            confirms.push(
                channel
                    .basic_publish(
                        exchange.as_str().into(),
                        "".into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_content_type("application/json".into()),
                    )
                    .await?,
            );
        }
        // Bounded: this transaction holds the event log's lock, which every other
        // relay's events and every WebSocket connect wait for; a broker that stops
        // confirming gives it up (the batch goes again after the reconnect).
        let confirmations = tokio::time::timeout(EVENT_CONFIRM_TIMEOUT, try_join_all(confirms))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the broker did not confirm events within {EVENT_CONFIRM_TIMEOUT:?}"
                )
            })??;
        for confirmation in confirmations {
            if !confirmation.is_ack() {
                anyhow::bail!("broker refused an event");
            }
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

/// The events of a batch as messages on the events exchange: JSON arrays in log order,
/// each of at most [`events::EVENTS_PER_MESSAGE`] events and about
/// [`events::MESSAGE_BYTES`] (an event bigger than that goes alone).
fn messages_of(payloads: &[&serde_json::Value]) -> serde_json::Result<Vec<Vec<u8>>> {
    let mut messages = Vec::new();
    let (mut body, mut count) = (vec![b'['], 0);
    for payload in payloads {
        let event = serde_json::to_vec(payload)?;
        if count > 0
            && (count == events::EVENTS_PER_MESSAGE
                || body.len() + event.len() > events::MESSAGE_BYTES)
        {
            body.push(b']');
            messages.push(std::mem::replace(&mut body, vec![b'[']));
            count = 0;
        }
        if count > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&event);
        count += 1;
    }
    if count > 0 {
        body.push(b']');
        messages.push(body);
    }
    Ok(messages)
}

/// Properties of a job message: persistent, JSON, the job id as message id.
pub fn job_properties(job_id: Uuid) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(job_id.to_string().into())
}

/// The header carrying a job's generation (its replays so far): a worker ignores a
/// message of an earlier generation than the ledger row's, a copy that was still
/// waiting in a delay tier when an operator replayed the job.
pub const GENERATION_HEADER: &str = "job-generation";

/// [`job_properties`] for the job's current generation.
pub fn job_properties_at(job_id: Uuid, generation: i32) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(GENERATION_HEADER.into(), AMQPValue::LongInt(generation));
    job_properties(job_id).with_headers(headers)
}

/// The generation a job message was published for; messages from before generations
/// existed count as the first.
pub fn generation_of(properties: &BasicProperties) -> i32 {
    match properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(GENERATION_HEADER))
    {
        Some(AMQPValue::LongInt(n)) => *n,
        Some(AMQPValue::LongLongInt(n)) => i32::try_from(*n).unwrap_or(i32::MAX),
        Some(AMQPValue::ShortInt(n)) => i32::from(*n),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many events each message carries; each must be a JSON array.
    fn events_in(messages: &[Vec<u8>]) -> Vec<usize> {
        messages
            .iter()
            .map(|m| {
                serde_json::from_slice::<Vec<serde_json::Value>>(m)
                    .unwrap()
                    .len()
            })
            .collect()
    }

    #[test]
    fn events_go_many_to_a_message_in_order_within_both_bounds() {
        let small: Vec<serde_json::Value> =
            (0..250).map(|n| serde_json::json!({ "n": n })).collect();
        let messages = messages_of(&small.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(events_in(&messages), [100, 100, 50]);
        let order: Vec<serde_json::Value> = messages
            .iter()
            .flat_map(|m| serde_json::from_slice::<Vec<serde_json::Value>>(m).unwrap())
            .collect();
        assert_eq!(order, small);

        // Big events: bounded by bytes; one bigger than the bound goes alone.
        let text = |kb: usize| serde_json::json!({ "text": "x".repeat(kb * 1024) });
        let big = [text(100), text(100), text(100), text(300), text(1)];
        let messages = messages_of(&big.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(events_in(&messages), [2, 1, 1, 1]);
        assert!(messages_of(&[]).unwrap().is_empty());
    }
}
