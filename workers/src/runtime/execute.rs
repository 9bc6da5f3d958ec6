//! A job, or a batch of jobs, in its transaction: the row locks, each handler in its
//! own savepoint (or its slow part outside), the attempt and the job's new state
//! written, one commit.

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use futures_util::FutureExt;
use lapin::{Channel, message::Delivery};
use serde_json::Value;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use commcenter_shared::{
    ledger::jobs::{self, Attempt, Envelope, ErrorClass, JobRow},
    ledger::relay::generation_of,
    ledger::retry::Decision,
    platform::settings::tier_label,
};

use crate::{
    job::{AnyHandler, JobContext, JobError},
    metrics::Outcome,
};

use super::{Outside, Ran, Runtime};

impl Runtime {
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
    pub(super) fn parse(
        &self,
        delivery: &Delivery,
    ) -> Result<(Envelope, Arc<dyn AnyHandler>), String> {
        let envelope = serde_json::from_slice::<Envelope>(&delivery.data)
            .map_err(|error| format!("the message is not a job envelope: {error}"))?;
        let handler = self
            .registry
            .get(&envelope.kind)
            .cloned()
            .ok_or_else(|| format!("no handler for job kind {:?}", envelope.kind))?;
        Ok((envelope, handler))
    }

    pub(super) async fn process_parsed(
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
    pub(super) async fn run_batch_or_alone(
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
    pub(super) async fn run_batch(
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

    pub(super) async fn run_job(
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
    pub(super) async fn execute_locked(
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
        if row.state.is_final() {
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
        // A poll that found nothing at its first attempt leaves no row behind.
        let idle = result.is_ok() && job.was_idle() && row.attempts == 0;
        match &result {
            Ok(()) => {
                effects.commit().await?;
                if idle {
                    tracing::debug!("found nothing; the job is kept as idle");
                    attempt_row.outcome = jobs::IDLE;
                } else {
                    tracing::info!("job succeeded");
                }
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
            idle,
        })
    }

    /// A handler that panics or hangs fails this attempt; it never takes the worker down.
    pub(super) async fn guarded(
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
    pub(super) async fn run_outside(
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
    pub(super) async fn bury(
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
}

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
