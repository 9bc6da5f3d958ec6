//! The api: validates, authorizes, records and enqueues; never does slow work on the
//! request path.
//!
//! - [`startup`]: builds the app from the settings; runs the HTTP server, the outbox
//!   relay and the notifier until shutdown.
//! - [`state`]: what every route can reach ([`AppState`]).
//! - [`routes`]: one module per route group of the HTTP surface.
//! - [`accept`]: the one path every send takes: idempotency key, text or template,
//!   attachments, the communication row, its job, commit, wake the relay.
//! - [`group_commit`]: plain sends written together, one commit for many.
//! - [`paging`]: page sizes and the opaque keyset cursors of every listing.
//! - [`records`]: a communication as every answer shows it, with the original API's
//!   fields beside ours.
//! - [`auth`]: the bearer-token extractor and the tenant rules.
//! - [`body`]: JSON bodies and query strings whose errors name the problem.
//! - [`idempotency`]: `Idempotency-Key` on creating POSTs.
//! - [`limits`]: rate limits per user and route group, and per address without a token.
//! - [`middleware`]: what runs around every route: 503 while the database is down, the
//!   rate limits.
//! - [`metrics`]: HTTP requests by route template, WebSocket connections, the backlog.
//! - [`notifier`]: consumes events from RabbitMQ and pushes them to WebSocket clients;
//!   publishes typing indicators for every instance.
//! - [`presence`]: who is online on any api instance (PostgreSQL, with heartbeats).
//! - [`error`]: the one API error type and its JSON shape (the router's 405s too).
//! - [`deadline`]: a request body must arrive within a total time.
//! - [`health`]: whether PostgreSQL is reachable, checked in the background; 503 at
//!   once while it is not.

pub mod accept;
pub mod auth;
pub mod body;
pub mod deadline;
pub mod error;
pub mod group_commit;
pub mod health;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod notifier;
pub mod paging;
pub mod presence;
pub mod records;
pub mod routes;
pub mod startup;
pub mod state;

pub use startup::App;
pub use state::AppState;
