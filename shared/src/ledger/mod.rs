//! The reliable work behind every request, written in the caller's transaction and
//! carried over RabbitMQ.
//!
//! - [`jobs`]: the job ledger: the one list of job kinds and their payloads, and every
//!   write to `jobs` (enqueue in the caller's transaction, the outbox; published,
//!   attempts, successes, retries, dead, replays, discards, rescue, retention).
//! - [`events`]: what the notifier pushes to WebSocket clients, written to the event
//!   outbox in the same transaction as the effect it announces; the event types.
//! - [`relay`]: the outbox relay: pending jobs and events, published with confirms.
//! - [`retry`]: the retry policy: which delay tier a failed attempt waits in.

pub mod events;
pub mod jobs;
pub mod relay;
pub mod retry;
