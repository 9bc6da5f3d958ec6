//! The operators' view of the job ledger, shared by the api (`/api/ops/`), the workers
//! (bulk actions) and the CLI: filters, listings and counts, one job in full, replays
//! and discards (one job, or a filter in batches), their audit, and queue health from
//! the ledger's side. (Pruning is the workers' `retention`.)
//!
//! A replay puts the job back in the outbox (`pending`): the relay publishes it, so a
//! broker outage only delays it. It keeps the job's id and payload (so the providers'
//! own idempotency holds: nothing already sent is sent again) and its attempt rows;
//! `attempt_base` makes the retry policy count afresh, and `generation` makes copies
//! published before the replay stale. What it clears on the row (the last error) is
//! kept in the audit entry.
//!
//! - [`filter`]: which jobs a listing or bulk action means;
//! - [`views`]: listings, counts, one job in full;
//! - [`actions`]: replay and discard (one job, or a bulk action's batch);
//! - [`bulk`]: bulk actions and their progress;
//! - [`audit`]: the trail of what operators did;
//! - [`health`]: queue health from the ledger's side;
//! - [`activity`]: jobs run per minute and queue depths over time, for the live chart;
//! - [`rescue`]: jobs whose broker message is overdue, put back in the outbox;
//! - [`metrics`]: the Prometheus text both processes serve at `/metrics`, and the
//!   backlog gauges (jobs per state, outbox lag, queue depths) read on scrape.

mod actions;
mod activity;
mod audit;
mod bulk;
mod filter;
mod health;
pub mod metrics;
mod rescue;
mod views;

pub use self::{
    actions::*, activity::*, audit::*, bulk::*, filter::*, health::*, rescue::*, views::*,
};
