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
//! Kinds whose handler [`batches`](crate::job::Handler::batches) run the deliveries
//! that are ready together (up to `WORKER_BATCH_SIZE`) in one transaction: rows locked in one statement, each
//! handler in its own savepoint, the successes' attempts and states written in one
//! statement, one commit, then the acks. A batch whose transaction fails runs its jobs
//! again one at a time.
//!
//! The phases, in the order a delivery meets them:
//! - [`consume`]: channels per queue, deliveries taken (and, for batching kinds,
//!   gathered into batches), reconnection, the drain at shutdown;
//! - [`execute`]: a job (or a batch) in its transaction: row locks, the handler in a
//!   savepoint, the attempt and the new state written, the commit;
//! - [`settle`]: what follows the commit: the ack, a retry published to its delay
//!   tier, deferral when our own bookkeeping failed, poison recorded dead.

mod consume;
mod execute;
mod settle;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use commcenter_shared::{
    ledger::jobs::{Attempt, ErrorClass},
    ledger::relay::Relay,
    ledger::retry::RetryPolicy,
    platform::broker::Topology,
    platform::settings::{BrokerSettings, RelaySettings},
};

use crate::{
    job::{JobContext, JobError, Registry},
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
        /// A first attempt that succeeded finding nothing: its job is marked idle.
        idle: bool,
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
}

/// The usual [`Runtime::max_deferral`].
pub const DEFAULT_MAX_DEFERRAL: Duration = Duration::from_secs(15 * 60);
