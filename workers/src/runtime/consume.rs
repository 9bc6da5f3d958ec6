//! Taking deliveries off the broker: one channel per queue, batches gathered for the
//! kinds that run in batches, reconnection with backoff, and the drain at shutdown.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::{
    Channel, Connection,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use commcenter_shared::platform::broker;

use crate::dead_letters;

use super::{Runtime, Stopped};

impl Runtime {
    pub(super) async fn consume_until(self: &Arc<Self>, shutdown: &CancellationToken) {
        let shutdown = shutdown.clone();
        let in_flight = TaskTracker::new();
        while !shutdown.is_cancelled() {
            let Some(connection) =
                broker::connect_with_backoff(&self.broker, &self.worker_name, &shutdown).await
            else {
                break;
            };
            match self.clone().serve(&connection, &shutdown, &in_flight).await {
                Stopped::Shutdown => {
                    connection.close(200, "shutting down".into()).await.ok();
                    return;
                }
                Stopped::ConnectionLost(error) => {
                    tracing::warn!(error = format!("{error:#}"), "lost RabbitMQ; reconnecting");
                    connection.close(200, "reconnecting".into()).await.ok();
                }
            }
        }
        self.drain(&in_flight).await;
    }

    pub(super) async fn drain(&self, in_flight: &TaskTracker) {
        in_flight.close();
        tracing::info!(in_flight = in_flight.len(), "draining in-flight jobs");
        if tokio::time::timeout(self.shutdown_grace, in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = in_flight.len(),
                "shutdown grace ran out; unacked jobs will be redelivered"
            );
        }
    }

    pub(super) async fn serve(
        self: Arc<Self>,
        connection: &Connection,
        shutdown: &CancellationToken,
        in_flight: &TaskTracker,
    ) -> Stopped {
        match self
            .clone()
            .consume_all(connection, shutdown, in_flight)
            .await
        {
            Ok(()) => Stopped::Shutdown,
            Err(error) => Stopped::ConnectionLost(error),
        }
    }

    pub(super) async fn consume_all(
        self: Arc<Self>,
        connection: &Connection,
        shutdown: &CancellationToken,
        in_flight: &TaskTracker,
    ) -> anyhow::Result<()> {
        let setup = connection.create_channel().await?;
        self.topology
            .declare(&setup, &self.registry.kinds())
            .await?;

        // Retries are republished on a channel of their own, with confirms.
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;

        let mut consumers = Vec::new();
        for kind in self.registry.kinds() {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            let tag = format!("{}-{kind}", self.worker_name);
            let consumer = channel
                .basic_consume(
                    self.topology.work_queue(kind).as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("consuming {kind}"))?;
            // A kind that waits outside its transaction is bounded by its prefetch alone.
            let waits_outside = self
                .registry
                .get(kind)
                .is_some_and(|handler| handler.works_outside());
            let batches = self
                .registry
                .get(kind)
                .is_some_and(|handler| handler.batches());
            let source = if waits_outside {
                Source::WorkOutside
            } else if batches && self.batch_size > 1 {
                Source::WorkInBatches
            } else {
                Source::Work
            };
            consumers.push((channel, tag, consumer, source));
        }
        if self.record_dead_letters {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            let tag = format!("{}-dead", self.worker_name);
            let consumer = channel
                .basic_consume(
                    self.topology.dead_queue().as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push((channel, tag, consumer, Source::DeadLetters));
        }
        tracing::info!(kinds = ?self.registry.kinds(), prefetch = self.prefetch, "consuming");

        // Kept open until in-flight jobs are drained: their acks travel on these.
        let channels: Vec<Channel> = consumers
            .iter()
            .map(|(channel, ..)| channel.clone())
            .collect();
        // One database connection per running job: bound the jobs in flight by the
        // pool (less one for the dead-letter path), so none waits on a connection.
        let slots = Arc::new(Semaphore::new(
            (self.pool.options().get_max_connections() as usize)
                .saturating_sub(1)
                .max(1),
        ));
        let mut loops = Vec::new();
        for (channel, tag, mut consumer, source) in consumers {
            let needs_slot = !matches!(source, Source::WorkOutside);
            let slots = slots.clone();
            let runtime = self.clone();
            let publisher = publisher.clone();
            let shutdown = shutdown.clone();
            let in_flight = in_flight.clone();
            loops.push(tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        () = shutdown.cancelled() => {
                            // Stop receiving; what was delivered but not started is
                            // returned to the queue when the channel closes.
                            channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await.ok();
                            return Ok(());
                        }
                        next = consumer.next() => next,
                    };
                    let delivery = match next {
                        Some(Ok(delivery)) => delivery,
                        Some(Err(error)) => return Err(anyhow::Error::from(error).context("consumer failed")),
                        None => anyhow::bail!("consumer {tag} was cancelled by the broker"),
                    };
                    // A batch: what else arrives within BATCH_LINGER of the first.
                    let mut batch = vec![delivery];
                    let mut ended = None;
                    if matches!(source, Source::WorkInBatches) {
                        let until = tokio::time::Instant::now() + BATCH_LINGER;
                        while batch.len() < runtime.batch_size {
                            match tokio::time::timeout_at(until, consumer.next()).await {
                                Ok(Some(Ok(delivery))) => batch.push(delivery),
                                Ok(Some(Err(error))) => {
                                    ended = Some(anyhow::Error::from(error).context("consumer failed"));
                                    break;
                                }
                                Ok(None) => {
                                    ended = Some(anyhow::anyhow!("consumer {tag} was cancelled by the broker"));
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    let slot = if needs_slot {
                        tokio::select! {
                            // The delivery, not started, returns to the queue with the channel.
                            () = shutdown.cancelled() => {
                                channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await.ok();
                                return Ok(());
                            }
                            slot = slots.clone().acquire_owned() => Some(slot.context("the job slots were closed")?),
                        }
                    } else {
                        None
                    };
                    let runtime = runtime.clone();
                    let publisher = publisher.clone();
                    in_flight.spawn(async move {
                        let _slot = slot;
                        match source {
                            Source::WorkInBatches => runtime.process_batch(batch, &publisher).await,
                            Source::Work | Source::WorkOutside => {
                                for delivery in batch {
                                    runtime.process(delivery, &publisher).await;
                                }
                            }
                            Source::DeadLetters => {
                                for delivery in batch {
                                    dead_letters::record(&runtime, delivery).await;
                                }
                            }
                        }
                    });
                    if let Some(error) = ended {
                        return Err(error);
                    }
                }
            }));
        }
        // The first loop to end decides: shutdown (all end Ok) or a lost connection.
        let (first, _, rest) = futures_util::future::select_all(loops).await;
        for handle in &rest {
            if shutdown.is_cancelled() {
                continue;
            }
            handle.abort();
        }
        first.context("consumer loop panicked")??;
        for handle in rest {
            handle.await.ok();
        }
        self.drain(in_flight).await;
        // Closed before their connection: lapin logs an error for every channel still
        // open when the connection closes under it.
        for channel in channels.iter().chain([&publisher, &setup]) {
            channel.close(200, "shutting down".into()).await.ok();
        }
        Ok(())
    }
}

/// How long a batch waits for more deliveries after its first: under load they are
/// there already; alone, a job waits this long at most.
const BATCH_LINGER: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy)]
enum Source {
    Work,
    /// A work queue whose ready deliveries run together in one transaction.
    WorkInBatches,
    /// A work queue whose jobs do their slow part outside their transaction.
    WorkOutside,
    DeadLetters,
}
