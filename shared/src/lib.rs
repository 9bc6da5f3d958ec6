//! What every Commcenter binary shares, in three layers and the operators' view on top.
//! A layer uses the ones below it; the newtypes at the root of [`domain`] are used by
//! every layer.
//!
//! - [`platform`]: what any service here needs: settings, PostgreSQL, RabbitMQ, the
//!   HTTP accept loop, tracing, the blob store, bearer tokens.
//! - [`ledger`]: the reliable work behind every request: the job ledger and its outbox,
//!   the event outbox and log, the relay that publishes both, the retry policy.
//! - [`domain`]: the Communication Center itself: the newtypes built at the boundary,
//!   communications (the one owner of their writes, and the one way sends are composed),
//!   conversations and files, contacts, templates, search, reaching customers outside
//!   the portal, crews and dispatch, analytics.
//! - [`ops`]: the operators' view: filters, listings, replays and discards, bulk
//!   actions, audit, queue health, the rescuer, metrics.

pub mod domain;
pub mod ledger;
pub mod ops;
pub mod platform;
