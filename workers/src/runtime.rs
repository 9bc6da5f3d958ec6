//! The job runtime: the one piece every job kind uses.
//!
//! For each delivery: parse the envelope (poison is dead at once, with the reason), take
//! the job's ledger row lock, skip it if it already finished (a redelivery), run the
//! handler inside a savepoint, then in the same transaction record the attempt and the
//! job's new state (and, for a dead job, the handler's `on_dead` effects). Only after
//! that commits is the delivery acked, or, for a retry, republished to its delay tier
//! with a confirm and then acked. A worker that dies anywhere before the ack leaves the
//! delivery to be redelivered; the ledger makes the second run a no-op or a clean retry.
//!
//! Kinds whose handler [`Handler::batches`](crate::job::Handler::batches) run the deliveries that are ready together
//! (up to `WORKER_BATCH_SIZE`) in one transaction: rows locked in one statement, each
//! handler in its own savepoint, the successes' attempts and states written in one
//! statement, one commit, then the acks. A batch whose transaction fails runs its jobs
//! again one at a time.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use lapin::{
    BasicProperties, Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use commcenter_shared::{
    broker::{self, DELAY_TIER_HEADER, Topology},
    jobs::{self, Attempt, Envelope, ErrorClass, JobRow},
    relay::{GENERATION_HEADER, Relay, generation_of, job_properties_at},
    retry::{Decision, RetryPolicy},
    settings::{BrokerSettings, RelaySettings, tier_label},
};

use crate::{
    dead_letters,
    job::{AnyHandler, JobContext, JobError, Registry},
    metrics::Outcome,
};

pub struct Runtime {
    pub pool: PgPool,
    pub broker: BrokerSettings,
    pub topology: Topology,
    pub policy: RetryPolicy,
    pub registry: Registry,
    /// Unacked deliveries per kind: also how many jobs of a kind run at once.
    pub prefetch: u16,
    /// The most jobs of a batching kind run in one transaction.
    pub batch_size: usize,
    /// A handler running longer is cut off and retried.
    pub job_timeout: Duration,
    /// How long shutdown waits for in-flight jobs.
    pub shutdown_grace: Duration,
    /// Recorded with every attempt: which process ran it.
    pub worker_name: String,
    /// Also drain the dead-letter queue into the ledger (one or more workers should).
    pub record_dead_letters: bool,
    /// This process's outbox relay publishes the events (and jobs) its jobs commit.
    pub relay: RelaySettings,
    /// Wakes that relay after each commit (pass `Default::default()`).
    pub outbox: Arc<Notify>,
    /// How long a delivery may keep coming back because its bookkeeping failed: long
    /// enough to ride out a database outage, short enough that a message that can never
    /// be recorded ends in the dead-letter queue rather than looping for ever.
    pub max_deferral: Duration,
    /// Where this runtime counts its jobs (served by [`crate::metrics::serve`]).
    pub metrics: Arc<crate::metrics::JobMetrics>,
}

/// What a handler's outside phase did, carried into the job's transaction.
struct Outside {
    job: JobContext,
    started_at: chrono::DateTime<Utc>,
    result: Result<(), JobError>,
}

/// What one job's turn in a transaction leaves for after the commit (metrics count
/// only what committed).
enum Ran<'a> {
    /// No attempt: a finished job's redelivery, a stale copy (`Skipped`), or a message
    /// naming no job, recorded as an orphan (`Dead`).
    Nothing(Outcome),
    Attempt {
        started_at: chrono::DateTime<Utc>,
        error_class: Option<ErrorClass>,
        /// A success's attempt row, still to be written (with the rest of its batch).
        succeeded: Option<Attempt<'a>>,
        /// The delay tier and generation a transient failure is republished with.
        retry: Option<(Duration, i32)>,
    },
}

impl<'a> Ran<'a> {
    fn take_success(&mut self) -> Option<Attempt<'a>> {
        match self {
            Ran::Attempt { succeeded, .. } => succeeded.take(),
            Ran::Nothing(_) => None,
        }
    }
}

/// Why `serve` returned.
enum Stopped {
    Shutdown,
    ConnectionLost(anyhow::Error),
}

impl Runtime {
    /// Runs until `shutdown`: consumes, and re-establishes a lost connection with
    /// backoff, re-declaring the topology, without a restart.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // The relay stops after the jobs have drained, so their events still go out.
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(
            Relay {
                pool: self.pool.clone(),
                broker: self.broker.clone(),
                topology: self.topology.clone(),
                settings: self.relay.clone(),
                kinds: self
                    .registry
                    .kinds()
                    .iter()
                    .map(|k| (*k).to_owned())
                    .collect(),
                wake: self.outbox.clone(),
            }
            .run(relay_stop.clone()),
        );
        self.consume_until(&shutdown).await;
        relay_stop.cancel();
        relay.await.ok();
    }

    async fn consume_until(self: &Arc<Self>, shutdown: &CancellationToken) {
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

    async fn drain(&self, in_flight: &TaskTracker) {
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

    async fn serve(
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

    async fn consume_all(
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

    /// Runs one delivery of a work queue to its end: acked, nacked for redelivery, or
    /// republished to a delay tier.
    pub(crate) async fn process(&self, delivery: Delivery, publisher: &Channel) {
        match self.parse(&delivery) {
            Ok((envelope, handler)) => {
                self.process_parsed(delivery, &envelope, handler.as_ref(), publisher)
                    .await;
            }
            Err(reason) => {
                self.dead_on_arrival(delivery, publisher, ErrorClass::Unparseable, &reason)
                    .await;
            }
        }
    }

    /// The job a delivery carries and its handler, or why it is poison.
    fn parse(&self, delivery: &Delivery) -> Result<(Envelope, Arc<dyn AnyHandler>), String> {
        let envelope = serde_json::from_slice::<Envelope>(&delivery.data)
            .map_err(|error| format!("the message is not a job envelope: {error}"))?;
        let handler = self
            .registry
            .get(&envelope.kind)
            .cloned()
            .ok_or_else(|| format!("no handler for job kind {:?}", envelope.kind))?;
        Ok((envelope, handler))
    }

    async fn process_parsed(
        &self,
        delivery: Delivery,
        envelope: &Envelope,
        handler: &dyn AnyHandler,
        publisher: &Channel,
    ) {
        let _in_flight = self.metrics.in_flight(&envelope.kind);
        let outcome = self
            .run_job(
                envelope,
                generation_of(&delivery.properties),
                handler,
                publisher,
            )
            .instrument(job_span(envelope))
            .await;
        self.settle(
            delivery,
            publisher,
            outcome,
            "could not record the job's outcome",
        )
        .await;
    }

    /// Runs deliveries that were ready together in one transaction: their rows locked
    /// in one statement, each handler in its own savepoint, the successes recorded in
    /// one statement, one commit, then each acked (or its retry published). If the
    /// batch's transaction fails, its jobs run again one at a time, so that one job
    /// that breaks the transaction cannot sink its neighbours.
    pub(crate) async fn process_batch(&self, deliveries: Vec<Delivery>, publisher: &Channel) {
        let mut batch = Vec::with_capacity(deliveries.len());
        // A second copy of a job in the batch (published twice, or an operator's replay
        // beside a stale copy) runs alone after the batch, and sees what it left.
        let mut copies = Vec::new();
        for delivery in deliveries {
            match self.parse(&delivery) {
                Ok((envelope, handler)) => {
                    if batch
                        .iter()
                        .any(|(_, e, _): &(Delivery, Envelope, _)| e.job_id == envelope.job_id)
                    {
                        copies.push((delivery, envelope, handler));
                    } else {
                        batch.push((delivery, envelope, handler));
                    }
                }
                Err(reason) => {
                    self.dead_on_arrival(delivery, publisher, ErrorClass::Unparseable, &reason)
                        .await;
                }
            }
        }
        self.run_batch_or_alone(batch, publisher).await;
        for (delivery, envelope, handler) in copies {
            self.process_parsed(delivery, &envelope, handler.as_ref(), publisher)
                .await;
        }
    }

    /// Runs distinct jobs as one batch (one alone as usual), falling back to one at a
    /// time if the batch's transaction fails.
    async fn run_batch_or_alone(
        &self,
        mut batch: Vec<(Delivery, Envelope, Arc<dyn AnyHandler>)>,
        publisher: &Channel,
    ) {
        if batch.len() <= 1 {
            if let Some((delivery, envelope, handler)) = batch.pop() {
                self.process_parsed(delivery, &envelope, handler.as_ref(), publisher)
                    .await;
            }
            return;
        }
        match self.run_batch(&batch, publisher).await {
            Ok(outcomes) => {
                for ((delivery, ..), outcome) in batch.into_iter().zip(outcomes) {
                    self.settle(
                        delivery,
                        publisher,
                        outcome,
                        "could not finish the job's outcome",
                    )
                    .await;
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    jobs = batch.len(),
                    "a batch's transaction failed; running its jobs one at a time"
                );
                for (delivery, envelope, handler) in batch {
                    self.process_parsed(delivery, &envelope, handler.as_ref(), publisher)
                        .await;
                }
            }
        }
    }

    /// The batch's transaction; `Err` if it did not commit. After the commit, each
    /// job's own outcome (a retry that could not be published).
    async fn run_batch(
        &self,
        batch: &[(Delivery, Envelope, Arc<dyn AnyHandler>)],
        publisher: &Channel,
    ) -> anyhow::Result<Vec<anyhow::Result<()>>> {
        let ids: Vec<Uuid> = batch
            .iter()
            .map(|(_, envelope, _)| envelope.job_id)
            .collect();
        let mut tx = self.pool.begin().await?;
        let mut rows: HashMap<Uuid, JobRow> = jobs::lock_many(&mut tx, &ids)
            .await?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
        let mut ran = Vec::with_capacity(batch.len());
        for (delivery, envelope, handler) in batch {
            let _in_flight = self.metrics.in_flight(&envelope.kind);
            let row = rows.remove(&envelope.job_id);
            let generation = generation_of(&delivery.properties);
            ran.push(
                self.execute_locked(&mut tx, row, envelope, generation, handler.as_ref(), None)
                    .instrument(job_span(envelope))
                    .await?,
            );
        }
        let succeeded: Vec<Attempt<'_>> = ran.iter_mut().filter_map(Ran::take_success).collect();
        jobs::record_successes(&mut tx, &succeeded).await?;
        tx.commit().await?;
        crate::crash::point(crate::crash::AFTER_JOB_COMMITTED);
        let mut outcomes = Vec::with_capacity(ran.len());
        for (ran, (_, envelope, _)) in ran.into_iter().zip(batch) {
            outcomes.push(self.after_commit(ran, envelope, publisher).await);
        }
        Ok(outcomes)
    }

    async fn run_job(
        &self,
        envelope: &Envelope,
        generation: i32,
        handler: &dyn AnyHandler,
        publisher: &Channel,
    ) -> anyhow::Result<()> {
        let outside = if handler.works_outside() {
            self.run_outside(envelope, generation, handler).await?
        } else {
            None
        };
        if let Some(Outside {
            result:
                Err(JobError::Busy {
                    message,
                    retry_after,
                }),
            ..
        }) = &outside
        {
            let tier = self.policy.tier_for(*retry_after);
            tracing::info!(reason = %message, tier = %tier_label(tier), "busy elsewhere; waiting without spending an attempt");
            return self
                .publish_retry(publisher, envelope, generation, tier)
                .await;
        }
        let mut tx = self.pool.begin().await?;
        let row = jobs::lock(&mut tx, envelope.job_id).await?;
        let mut ran = self
            .execute_locked(&mut tx, row, envelope, generation, handler, outside)
            .await?;
        jobs::record_successes(&mut tx, ran.take_success().as_slice()).await?;
        tx.commit().await?;
        crate::crash::point(crate::crash::AFTER_JOB_COMMITTED);
        self.after_commit(ran, envelope, publisher).await
    }

    /// One job inside a transaction that holds its row lock (`row`; `None`: the ledger
    /// has no such job). The handler's writes live in a savepoint: a failure undoes them
    /// but keeps the transaction for recording the failure. A failure's attempt and
    /// state are written here; a success's are left to the caller, who writes those of
    /// a whole batch in one statement.
    async fn execute_locked(
        &self,
        tx: &mut PgConnection,
        row: Option<JobRow>,
        envelope: &Envelope,
        generation: i32,
        handler: &dyn AnyHandler,
        outside: Option<Outside>,
    ) -> anyhow::Result<Ran<'_>> {
        let Some(row) = row else {
            let reason = format!("job {} is not in the ledger", envelope.job_id);
            tracing::error!("{reason}");
            let raw = serde_json::to_vec(envelope)?;
            jobs::record_orphan(
                tx,
                &envelope.kind,
                &raw,
                ErrorClass::Unparseable,
                &reason,
                None,
            )
            .await?;
            return Ok(Ran::Nothing(Outcome::Dead));
        };
        if row.state().is_final() {
            tracing::debug!(state = %row.state, "job already finished; redelivery ignored");
            return Ok(Ran::Nothing(Outcome::Skipped));
        }
        if generation < row.generation {
            // Published before an operator replayed the job (a retry that was still
            // waiting in a delay tier): the replay's own message runs it.
            tracing::info!(
                generation,
                current = row.generation,
                "stale copy from before a replay; ignored"
            );
            return Ok(Ran::Nothing(Outcome::Skipped));
        }
        let attempt = row.attempts + 1;
        tracing::Span::current().record("attempt", attempt);
        let (job, started_at, outside_result) = match outside {
            Some(Outside {
                job,
                started_at,
                result,
            }) => (job.renumbered(attempt), started_at, result),
            None => (
                JobContext::new(row.id, row.kind.clone(), row.payload.clone(), attempt),
                Utc::now(),
                Ok(()),
            ),
        };

        let mut effects = sqlx::Connection::begin(&mut *tx).await?;
        let result = match outside_result {
            Ok(()) => self.guarded(handler.run(&mut effects, &job)).await,
            failed => failed,
        }
        // Only an outside phase may be busy (and that was handled before the lock): in
        // the transaction, it is an ordinary transient failure.
        .map_err(|error| match error {
            JobError::Busy {
                message,
                retry_after,
            } => JobError::Transient {
                message,
                retry_after: Some(retry_after),
            },
            other => other,
        });
        let mut attempt_row = Attempt {
            job_id: job.id,
            attempt,
            started_at,
            outcome: "succeeded",
            error_class: None,
            error: None,
            retry_in_ms: None,
            worker: &self.worker_name,
            provider: job.provider_report(),
        };
        let (mut error_class, mut succeeded, mut retry) = (None, None, None);
        match &result {
            Ok(()) => {
                effects.commit().await?;
                tracing::info!("job succeeded");
                succeeded = Some(Attempt {
                    error: None,
                    worker: &self.worker_name,
                    provider: job.provider_report(),
                    ..attempt_row
                });
            }
            Err(JobError::Busy { .. }) => unreachable!("busy is made transient above"),
            Err(JobError::Permanent(reason)) => {
                effects.rollback().await?;
                attempt_row.outcome = "permanent";
                attempt_row.error_class = Some(ErrorClass::Permanent);
                attempt_row.error = Some(reason);
                jobs::record_attempt(tx, &attempt_row).await?;
                self.bury(tx, handler, &job, ErrorClass::Permanent, reason)
                    .await?;
                error_class = Some(ErrorClass::Permanent);
            }
            Err(JobError::Transient {
                message,
                retry_after,
            }) => {
                effects.rollback().await?;
                attempt_row.outcome = "transient";
                attempt_row.error_class = Some(ErrorClass::Transient);
                attempt_row.error = Some(message);
                error_class = Some(ErrorClass::Transient);
                // Counted from the last replay: an operator's replay starts afresh.
                let tries = attempt - row.attempt_base;
                match self.policy.after_failure(tries, *retry_after) {
                    Decision::GiveUp => {
                        jobs::record_attempt(tx, &attempt_row).await?;
                        let reason =
                            format!("gave up after {tries} attempts; last error: {message}");
                        self.bury(tx, handler, &job, ErrorClass::Exhausted, &reason)
                            .await?;
                    }
                    Decision::RetryIn { tier, backoff } => {
                        attempt_row.retry_in_ms = Some(tier.as_millis() as i64);
                        jobs::record_attempt(tx, &attempt_row).await?;
                        let next =
                            Utc::now() + chrono::Duration::from_std(tier).unwrap_or_default();
                        jobs::mark_retrying(tx, job.id, attempt, next, message).await?;
                        tracing::warn!(error = %message, backoff_ms = backoff.as_millis() as u64, tier = %tier_label(tier), "job failed; will retry");
                        retry = Some((tier, row.generation));
                    }
                }
            }
        }
        Ok(Ran::Attempt {
            started_at,
            error_class,
            succeeded,
            retry,
        })
    }

    /// What follows a job's commit: its metrics, the relay woken, and a retry published
    /// to its delay tier.
    async fn after_commit(
        &self,
        ran: Ran<'_>,
        envelope: &Envelope,
        publisher: &Channel,
    ) -> anyhow::Result<()> {
        let Ran::Attempt {
            started_at,
            error_class,
            retry,
            ..
        } = ran
        else {
            if let Ran::Nothing(outcome) = ran {
                self.metrics.job_finished(&envelope.kind, outcome);
            }
            return Ok(());
        };
        self.metrics
            .attempt_finished(&envelope.kind, error_class, retry.is_some(), started_at);
        self.outbox.notify_one();
        if let Some((tier, generation)) = retry {
            self.publish_retry(publisher, envelope, generation, tier)
                .await?;
        }
        Ok(())
    }

    /// A handler that panics or hangs fails this attempt; it never takes the worker down.
    async fn guarded(
        &self,
        work: impl std::future::Future<Output = Result<(), JobError>>,
    ) -> Result<(), JobError> {
        let work = std::panic::AssertUnwindSafe(work).catch_unwind();
        match tokio::time::timeout(self.job_timeout, work).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(JobError::transient(format!(
                "the handler panicked: {}",
                panic_message(&*panic)
            ))),
            Err(_) => Err(JobError::transient(format!(
                "timed out after {:?}",
                self.job_timeout
            ))),
        }
    }

    /// The outside phase of a job whose handler works outside its transaction. The row
    /// is read without a lock: a job that is missing, finished or stale is left to the
    /// locked path, which decides exactly as for any other job.
    async fn run_outside(
        &self,
        envelope: &Envelope,
        generation: i32,
        handler: &dyn AnyHandler,
    ) -> anyhow::Result<Option<Outside>> {
        let row: Option<(String, i32, i32, Value)> =
            sqlx::query_as("SELECT state, attempts, generation, payload FROM jobs WHERE id = $1")
                .bind(envelope.job_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((state, attempts, current_generation, payload)) = row else {
            return Ok(None);
        };
        let finished = jobs::JobState::parse(&state).is_none_or(jobs::JobState::is_final);
        if finished || generation < current_generation {
            return Ok(None);
        }
        let job = JobContext::new(
            envelope.job_id,
            envelope.kind.clone(),
            payload,
            attempts + 1,
        );
        let started_at = Utc::now();
        let result = self.guarded(handler.outside(&job)).await;
        Ok(Some(Outside {
            job,
            started_at,
            result,
        }))
    }

    /// Marks the job dead and lets its handler mark what it served as failed.
    async fn bury(
        &self,
        conn: &mut PgConnection,
        handler: &dyn AnyHandler,
        job: &JobContext,
        class: ErrorClass,
        reason: &str,
    ) -> anyhow::Result<()> {
        jobs::mark_dead(conn, job.id, job.attempt, class, reason).await?;
        handler.on_dead(conn, job, reason).await?;
        tracing::error!(error_class = class.as_str(), reason, "job is dead");
        Ok(())
    }

    async fn publish_retry(
        &self,
        publisher: &Channel,
        envelope: &Envelope,
        generation: i32,
        tier: Duration,
    ) -> anyhow::Result<()> {
        let body = serde_json::to_vec(envelope)?;
        self.publish_delayed(
            publisher,
            &envelope.kind,
            &body,
            job_properties_at(envelope.job_id, generation),
            tier,
        )
        .await
    }

    /// Publishes `body` to wait in `tier`, after which it returns to `routing_key`'s queue.
    async fn publish_delayed(
        &self,
        publisher: &Channel,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        tier: Duration,
    ) -> anyhow::Result<()> {
        // Keeps the headers it has (a deferral's start), adding the tier's.
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            DELAY_TIER_HEADER.into(),
            AMQPValue::LongString(tier_label(tier).as_str().into()),
        );
        let confirmation = publisher
            .basic_publish(
                self.topology.delay_exchange().as_str().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties.with_headers(headers),
            )
            .await?
            .await?;
        anyhow::ensure!(
            confirmation.is_ack(),
            "the broker refused the delayed message"
        );
        anyhow::ensure!(
            confirmation.take_message().is_none(),
            "no delay queue for tier {}",
            tier_label(tier)
        );
        Ok(())
    }

    /// Acks a delivery whose outcome is committed. When our own bookkeeping failed
    /// (the database is unreachable, say), the delivery waits in the shortest delay
    /// tier and comes back, rather than being nacked: a requeue would count towards
    /// the broker's delivery limit, and a short database outage would kill good jobs.
    async fn settle(
        &self,
        delivery: Delivery,
        publisher: &Channel,
        outcome: anyhow::Result<()>,
        failure: &str,
    ) {
        let Err(error) = outcome else {
            delivery.ack(BasicAckOptions::default()).await.ok();
            return;
        };
        // Deferred since when: a delivery whose bookkeeping keeps failing (not a passing
        // outage, something about the message itself) must not loop for ever.
        let now_ms = Utc::now().timestamp_millis();
        let since_ms = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(DEFERRED_SINCE_HEADER).cloned())
            .and_then(|v| match v {
                AMQPValue::LongLongInt(ms) => Some(ms),
                _ => None,
            })
            .unwrap_or(now_ms);
        if now_ms - since_ms > self.max_deferral.as_millis() as i64 {
            // Rejected without requeue, the broker dead-letters it to `{p}.dead`, whose
            // consumer records it in the ledger with the broker's reason.
            tracing::error!(
                error = format!("{error:#}"),
                "{failure} for {} minutes; giving it to the dead-letter queue",
                self.max_deferral.as_secs() / 60
            );
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .ok();
            return;
        }
        tracing::error!(
            error = format!("{error:#}"),
            "{failure}; it will come back shortly"
        );
        let tier = self
            .topology
            .tiers
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(1));
        let mut headers = FieldTable::default();
        headers.insert(
            DEFERRED_SINCE_HEADER.into(),
            AMQPValue::LongLongInt(since_ms),
        );
        // The job's generation goes with it, or it would come back looking stale.
        headers.insert(
            GENERATION_HEADER.into(),
            AMQPValue::LongInt(generation_of(&delivery.properties)),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        match self
            .publish_delayed(
                publisher,
                delivery.routing_key.as_str(),
                &delivery.data,
                properties,
                tier,
            )
            .await
        {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await.ok();
            }
            Err(publish_error) => {
                // The broker is in trouble too: hand it back; the channel may be gone anyway.
                tracing::error!(
                    error = format!("{publish_error:#}"),
                    "could not delay it either; requeueing"
                );
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                delivery.nack(requeue).await.ok();
            }
        }
    }

    /// A delivery that is not a job we can run: recorded dead in the ledger with the
    /// reason, then acked, so the worker keeps going and operators see it.
    async fn dead_on_arrival(
        &self,
        delivery: Delivery,
        publisher: &Channel,
        class: ErrorClass,
        reason: &str,
    ) {
        tracing::error!(routing_key = %delivery.routing_key, reason, "poison message");
        self.metrics
            .job_finished(delivery.routing_key.as_str(), Outcome::Dead);
        let recorded = async {
            let mut conn = self.pool.acquire().await?;
            jobs::record_orphan(
                &mut conn,
                delivery.routing_key.as_str(),
                &delivery.data,
                class,
                reason,
                None,
            )
            .await?;
            anyhow::Ok(())
        }
        .await;
        self.settle(
            delivery,
            publisher,
            recorded,
            "could not record a poison message",
        )
        .await;
    }
}

/// How long a batch waits for more deliveries after its first: under load they are
/// there already; alone, a job waits this long at most.
const BATCH_LINGER: Duration = Duration::from_millis(2);

/// Header on a delivery deferred because its bookkeeping failed: since when (epoch ms).
const DEFERRED_SINCE_HEADER: &str = "deferred-since";

/// The usual [`Runtime::max_deferral`].
pub const DEFAULT_MAX_DEFERRAL: Duration = Duration::from_secs(15 * 60);

/// The span every log line of one job's run carries.
fn job_span(envelope: &Envelope) -> tracing::Span {
    tracing::info_span!("job", job_id = %envelope.job_id, kind = %envelope.kind, attempt = tracing::field::Empty)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Work,
    /// A work queue whose ready deliveries run together in one transaction.
    WorkInBatches,
    /// A work queue whose jobs do their slow part outside their transaction.
    WorkOutside,
    DeadLetters,
}
