//! The notifier: consumes the events exchange through this instance's own exclusive
//! queue and pushes each event to the WebSocket connections that may see it; and
//! publishes this instance's ephemeral events (typing) to that exchange, so every
//! instance's clients get them.
//!
//! Each connection has a bounded buffer. Publishing never waits: a connection whose
//! buffer is full is told to close (it is too slow), so one stalled client never delays
//! the others.
//!
//! Logged events are told exactly once, in log order: only once their relay has
//! committed them (a relay that fails to commit publishes them again under new
//! positions), only after the last position told, and, after the broker was away,
//! those committed meanwhile from the log before the queue's.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{FutureExt, StreamExt};
use lapin::{
    BasicProperties,
    options::{BasicConsumeOptions, BasicPublishOptions},
    types::FieldTable,
};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use commcenter_shared::{
    domain::{CustomerId, UserId},
    ledger::events::{self, Event, EventBody, Viewer},
    platform::broker::{self, Topology},
    platform::settings::BrokerSettings,
};

/// What a connection is sent: the event's position (none for typing) and its JSON.
pub type Frame = (Option<i64>, Arc<str>);

/// At most this many published messages are checked against the log at once.
const MESSAGES_PER_LOOK: usize = 64;

/// At most one typing indicator per user and conversation this often.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);

/// The WebSocket connections of this api instance.
pub struct Hub {
    connections: RwLock<HashMap<u64, Subscriber>>,
    next_id: AtomicU64,
    buffer: usize,
    /// When each user last typed in each conversation (relayed), for the rate limit.
    typing: Mutex<HashMap<(UserId, CustomerId), Instant>>,
}

struct Subscriber {
    user_id: UserId,
    viewer: Viewer,
    frames: mpsc::Sender<Frame>,
    /// Cancelled when the buffer overflows: the connection closes itself.
    too_slow: CancellationToken,
}

/// A registered connection's end: frames to send, and the signal to give up.
pub struct Subscription {
    pub id: u64,
    pub frames: mpsc::Receiver<Frame>,
    pub too_slow: CancellationToken,
}

impl Hub {
    pub fn new(buffer: usize) -> Self {
        Self {
            connections: RwLock::default(),
            next_id: AtomicU64::new(1),
            buffer,
            typing: Mutex::default(),
        }
    }

    pub fn subscribe(&self, user_id: UserId, viewer: Viewer) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.buffer);
        let too_slow = CancellationToken::new();
        let subscriber = Subscriber {
            user_id,
            viewer,
            frames: tx,
            too_slow: too_slow.clone(),
        };
        self.write().insert(id, subscriber);
        Subscription {
            id,
            frames: rx,
            too_slow,
        }
    }

    pub fn unsubscribe(&self, id: u64) {
        self.write().remove(&id);
    }

    /// Sends the event to every connection that may see it, without waiting. A typing
    /// indicator goes to the conversation's other parties, not back to the typist.
    pub fn publish(&self, event: &Event) {
        let Ok(frame) = serde_json::to_string(event) else {
            return;
        };
        let frame: Arc<str> = frame.into();
        let typist = match &event.body {
            EventBody::Typing { user_id, .. } => Some(user_id.as_str()),
            _ => None,
        };
        let connections = self
            .connections
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (id, subscriber) in connections.iter() {
            if !event.visible_to(&subscriber.viewer) || typist == Some(subscriber.user_id.as_str())
            {
                continue;
            }
            if subscriber
                .frames
                .try_send((event.seq, frame.clone()))
                .is_err()
            {
                if !subscriber.too_slow.is_cancelled() {
                    tracing::warn!(connection = id, user_id = %subscriber.user_id, "WebSocket client too slow; disconnecting it");
                }
                subscriber.too_slow.cancel();
            }
        }
    }

    /// May `user` send a typing indicator in `customer`'s conversation now? At most one
    /// every [`TYPING_EVERY`]; a `stop` always goes (and resets the clock).
    pub fn typing_allowed(&self, user: &UserId, customer: &CustomerId, stop: bool) -> bool {
        let mut last = self
            .typing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if last.len() > 10_000 {
            last.retain(|_, at| now.duration_since(*at) < TYPING_EVERY);
        }
        let key = (user.clone(), customer.clone());
        if stop {
            last.remove(&key);
            return true;
        }
        match last.get(&key) {
            Some(at) if now.duration_since(*at) < TYPING_EVERY => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }

    pub fn connection_count(&self) -> usize {
        self.connections.read().map(|c| c.len()).unwrap_or(0)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Subscriber>> {
        self.connections
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One api instance's notifier: where it reads events and whom it tells.
pub struct Notifier {
    pub hub: Arc<Hub>,
    /// The event log, for what the queue brings before it is committed or misses.
    pub pool: PgPool,
    /// The log's head before this instance took its first WebSocket: events after it
    /// reach the WebSockets from the queue or, committed while it was not bound, from
    /// the log.
    pub start: i64,
    pub settings: BrokerSettings,
    pub topology: Topology,
    /// Tells readiness whether this instance is connected.
    pub broker_up: Arc<AtomicBool>,
}

/// Consumes events until `shutdown`, reconnecting with backoff, and publishes what
/// `outgoing` brings.
pub async fn run(
    notifier: Notifier,
    mut outgoing: mpsc::Receiver<Event>,
    shutdown: CancellationToken,
) {
    let Notifier {
        hub,
        pool,
        start,
        settings,
        topology,
        broker_up,
    } = notifier;
    // The last position told to this instance's WebSockets.
    let mut told = start;
    while !shutdown.is_cancelled() {
        let Some(connection) =
            broker::connect_with_backoff(&settings, "commcenter-notifier", &shutdown).await
        else {
            break;
        };
        let result = async {
            let channel = connection.create_channel().await?;
            topology.declare(&channel, &[]).await?;
            let queue = topology.declare_event_queue(&channel).await?;
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "notifier".into(),
                    // Events are notifications, not work: what this queue misses is
                    // told from the log after a reconnect (`catch_up`), so auto-ack
                    // keeps this path light.
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            // Bound: what is published from now on reaches this queue. What was
            // committed while the broker was away (or before this queue was bound
            // again) is in the log: told from there first, in order.
            let mut last = catch_up(&hub, &pool, told, &shutdown).await?;
            told = last;
            broker_up.store(true, Ordering::Relaxed);
            tracing::info!(queue, "notifier consuming events");
            let exchange = topology.events_exchange();
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => {
                        // Before the connection: lapin logs an error for a channel
                        // still open when the connection closes under it.
                        channel.close(200, "shutting down".into()).await.ok();
                        return anyhow::Ok(());
                    }
                    next = consumer.next() => next,
                    Some(event) = outgoing.recv() => {
                        // Ephemeral: not persistent, no confirm awaited; one lost is
                        // one indicator missed.
                        let body = serde_json::to_vec(&event)?;
                        channel
                            .basic_publish(
                                exchange.as_str().into(),
                                "".into(),
                                BasicPublishOptions::default(),
                                &body,
                                BasicProperties::default().with_content_type("application/json".into()),
                            )
                            .await?;
                        continue;
                    }
                };
                let delivery = match next {
                    Some(delivery) => delivery?,
                    None => anyhow::bail!("the events consumer was cancelled"),
                };
                // With the messages already here (taken without waiting), so that one
                // read of the log covers them all under load.
                let mut deliveries = vec![delivery];
                while deliveries.len() < MESSAGES_PER_LOOK {
                    match consumer.next().now_or_never() {
                        Some(Some(delivery)) => deliveries.push(delivery?),
                        _ => break,
                    }
                }
                let mut events = Vec::new();
                for delivery in &deliveries {
                    match events::decode_published(&delivery.data) {
                        Ok(decoded) => events.extend(decoded),
                        Err(error) => {
                            tracing::warn!(%error, "an event message that does not parse was dropped")
                        }
                    }
                }
                tell(&hub, &pool, &events, &mut last, &shutdown).await?;
                told = last;
            }
        }
        .await;
        broker_up.store(false, Ordering::Relaxed);
        connection.close(200, "bye".into()).await.ok();
        if let Err(error) = result
            && !shutdown.is_cancelled()
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "notifier lost RabbitMQ; reconnecting"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Tells the WebSockets a published message's events: those without a position
/// (typing) at once; logged ones once committed ([`events::committed_positions`]), and
/// only those after `last`, so each reaches a client once and in order, under the
/// position a resumed client replays.
async fn tell(
    hub: &Hub,
    pool: &PgPool,
    events: &[Event],
    last: &mut i64,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let positions = || events.iter().filter_map(|event| event.seq);
    let committed = match (positions().min(), positions().max()) {
        (Some(first), Some(end)) if end > *last => {
            with_retry(shutdown, || {
                events::committed_positions(pool, first.max(*last + 1), end)
            })
            .await?
        }
        _ => Vec::new(),
    };
    for event in events {
        match event.seq {
            None => hub.publish(event),
            Some(seq) if seq > *last && committed.binary_search(&seq).is_ok() => {
                hub.publish(event);
                *last = seq;
            }
            // Told already, or never committed: its relay publishes it again.
            Some(_) => {}
        }
    }
    Ok(())
}

/// Tells what was committed after `last` and before this queue was bound (the broker
/// was away, or this instance is starting); returns the new last position.
async fn catch_up(
    hub: &Hub,
    pool: &PgPool,
    mut last: i64,
    shutdown: &CancellationToken,
) -> anyhow::Result<i64> {
    const PAGE: i64 = 1_000;
    let mut caught_up = 0;
    loop {
        let page = with_retry(shutdown, || events::committed_after(pool, last, PAGE)).await?;
        for (seq, payload) in &page {
            match serde_json::from_value::<Event>(payload.clone()) {
                Ok(event) => hub.publish(&event),
                Err(error) => {
                    tracing::warn!(%error, seq, "a logged event that does not parse was skipped")
                }
            }
            last = *seq;
        }
        caught_up += page.len();
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    if caught_up > 0 {
        tracing::info!(
            events = caught_up,
            "notifier told the events committed while it was not consuming"
        );
    }
    Ok(last)
}

/// Runs `read` until it succeeds (the database may be away for a while: events wait
/// rather than go untold), or until shutdown.
async fn with_retry<T, F, Fut>(shutdown: &CancellationToken, mut read: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<T>>,
{
    let mut warned = false;
    loop {
        match read().await {
            Ok(value) => return Ok(value),
            Err(error) if !warned => {
                tracing::warn!(%error, "notifier cannot read the event log; retrying");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => anyhow::bail!("shutting down"),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
