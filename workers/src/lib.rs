//! The workers: the job runtime every job kind runs on, and the handlers.
//!
//! - [`job`]: the handler vocabulary: [`Handler`] over a job's payload type,
//!   [`JobError`], [`JobContext`], the [`Registry`].
//! - [`runtime`]: consume each kind's work queue (bounded by prefetch), run the
//!   handler in a transaction with the ledger row locked, record the attempt, ack after
//!   commit; transient failures wait in a delay tier, permanent ones and exhausted
//!   attempts are dead; reconnect with backoff; drain on shutdown.
//! - [`dead_letters`]: what the broker dead-letters on its own (delivery limit,
//!   rejected, expired) is recorded into the same ledger, with the broker's reason.
//! - [`handlers`]: one module per job kind; [`handlers::sends`] is how a provider
//!   send is never made twice.
//! - [`crash`]: abort points for the tests that kill a worker mid-send.
//! - [`metrics`]: jobs by kind and outcome, attempts, durations, in flight; served at
//!   `/metrics` on `METRICS_ADDR`.
//! - [`activity`]: jobs finished per minute and queue depths, written for the
//!   operators' live chart.
//! - [`process`]: a whole workers process (the runtime and its clocks), as the binary
//!   runs it.
//! - [`retention`]: finished jobs and old idempotency keys pruned on a schedule.
//! - [`media`]: what an upload is (sniffed from its bytes), its SHA-256 and its
//!   thumbnail; called by the `file.process` handler (and by the api, to sniff).

pub mod activity;
pub mod crash;
pub mod dead_letters;
pub mod handlers;
pub mod job;
pub mod media;
pub mod metrics;
pub mod process;
pub mod retention;
pub mod runtime;
pub mod schedule;

pub use job::{AnyHandler, Handler, JobContext, JobError, Registry};
pub use runtime::Runtime;
