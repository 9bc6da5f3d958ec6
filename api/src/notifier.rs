//! The notifier: consumes the events exchange through this instance's own exclusive
//! queue and pushes each event to the WebSocket connections that may see it.
//!
//! Each connection has a bounded buffer. Publishing never waits: a connection whose
//! buffer is full is told to close (it is too slow), so one stalled client never delays
//! the others.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{options::BasicConsumeOptions, types::FieldTable};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use commcenter_shared::{
    broker::{self, Topology},
    domain::{CustomerId, Role, UserId},
    events::Event,
    settings::BrokerSettings,
};

/// The WebSocket connections of this api instance.
pub struct Hub {
    connections: RwLock<HashMap<u64, Subscriber>>,
    next_id: AtomicU64,
    buffer: usize,
}

struct Subscriber {
    user_id: UserId,
    role: Role,
    customer_id: Option<CustomerId>,
    frames: mpsc::Sender<Arc<str>>,
    /// Cancelled when the buffer overflows: the connection closes itself.
    too_slow: CancellationToken,
}

/// A registered connection's end: frames to send, and the signal to give up.
pub struct Subscription {
    pub id: u64,
    pub frames: mpsc::Receiver<Arc<str>>,
    pub too_slow: CancellationToken,
}

impl Hub {
    pub fn new(buffer: usize) -> Self {
        Self {
            connections: RwLock::default(),
            next_id: AtomicU64::new(1),
            buffer,
        }
    }

    pub fn subscribe(
        &self,
        user_id: UserId,
        role: Role,
        customer_id: Option<CustomerId>,
    ) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.buffer);
        let too_slow = CancellationToken::new();
        let subscriber = Subscriber {
            user_id,
            role,
            customer_id,
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

    /// Sends the event to every connection that may see it, without waiting.
    pub fn publish(&self, event: &Event) {
        let Ok(frame) = serde_json::to_string(event) else {
            return;
        };
        let frame: Arc<str> = frame.into();
        let connections = self
            .connections
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (id, subscriber) in connections.iter() {
            if !subscriber.may_see(&event.customer_id) {
                continue;
            }
            if subscriber.frames.try_send(frame.clone()).is_err() {
                if !subscriber.too_slow.is_cancelled() {
                    tracing::warn!(connection = id, user_id = %subscriber.user_id, "WebSocket client too slow; disconnecting it");
                }
                subscriber.too_slow.cancel();
            }
        }
    }

    /// Users with at least one open connection here, with their role.
    pub fn online_users(&self) -> Vec<(UserId, Role)> {
        let mut users: Vec<(UserId, Role)> = self
            .connections
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .map(|s| (s.user_id.clone(), s.role))
            .collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        users.dedup_by(|a, b| a.0 == b.0);
        users
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

impl Subscriber {
    fn may_see(&self, customer: &CustomerId) -> bool {
        match self.role {
            Role::Staff | Role::Operator => true,
            Role::Customer => self.customer_id.as_ref() == Some(customer),
            // Nothing is shared with crews yet.
            Role::Crew => false,
        }
    }
}

/// Consumes events until `shutdown`, reconnecting with backoff. `broker_up` tells
/// readiness whether this instance is connected.
pub async fn run(
    hub: Arc<Hub>,
    settings: BrokerSettings,
    topology: Topology,
    broker_up: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
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
                    // Events are notifications, not work: a lost one is refetched by
                    // the client, so auto-ack keeps this path light.
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            broker_up.store(true, Ordering::Relaxed);
            tracing::info!(queue, "notifier consuming events");
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return anyhow::Ok(()),
                    next = consumer.next() => next,
                };
                let delivery = match next {
                    Some(delivery) => delivery?,
                    None => anyhow::bail!("the events consumer was cancelled"),
                };
                match serde_json::from_slice::<Event>(&delivery.data) {
                    Ok(event) => hub.publish(&event),
                    Err(error) => {
                        tracing::warn!(%error, "an event that does not parse was dropped")
                    }
                }
            }
        }
        .await;
        broker_up.store(false, Ordering::Relaxed);
        connection.close(200, "bye".into()).await.ok();
        if let Err(error) = result {
            tracing::warn!(
                error = format!("{error:#}"),
                "notifier lost RabbitMQ; reconnecting"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
