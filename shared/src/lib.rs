//! What every Commcenter binary shares.
//!
//! The data flow, and where each piece of it lives:
//!
//! - [`settings`]: one typed settings tree, read from the environment.
//! - [`domain`]: the newtypes built at the boundary (ids, roles, statuses).
//! - [`contact`]: the other party's phone number (E.164) or email address, parsed and
//!   normalised, and which customer it belongs to.
//! - [`auth`]: the HS256 bearer tokens the api accepts and `commcenterctl token` prints.
//! - [`db`]: the PostgreSQL pool and the migrations (the one source of the schema).
//! - [`communications`]: every message, email, SMS and call: the row, its reads, what we
//!   send composed one way ([`communications::outbound`]), and every change of its
//!   state with the event it announces ([`communications::writes`]).
//! - [`store`]: repository functions over conversations, files and blobs.
//! - [`crews`]: field crews and members, projects at customers' sites, dispatches,
//!   crews' positions (and the distance between two of them).
//! - [`dispatch`]: sending a crew: dispatches, acknowledgements, arrival on site, and
//!   every text about it (the customer's, the members', broadcasts).
//! - [`jobs`]: the job ledger: enqueueing a job in the caller's transaction (the outbox),
//!   and the envelope that carries a job over RabbitMQ.
//! - [`ops`]: the operators' view of the ledger: filters, counts, one job in full,
//!   replays and discards (bulk ones in batches), their audit, retention.
//! - [`reach`]: a customer's own addresses and preferences, and the fallback of unread
//!   in-app messages to SMS or email.
//! - [`analytics`]: message volume, response times, conversations opened and closed,
//!   read rates, over a range of time, from facts the database keeps as messages are
//!   written.
//! - [`search`]: full-text search over communications, ranked and highlighted.
//! - [`templates`]: message templates: placeholders found, rendered, stored in versions.
//! - [`filetype`]: what an upload is, by its first bytes; safe display and stored names.
//! - [`http_server`]: the HTTP accept loop: connection cap, header and idle timeouts.
//! - [`events`]: what the notifier pushes to WebSocket clients, written to the event
//!   outbox in the same transaction as the effect it announces.
//! - [`broker`]: connecting to RabbitMQ with backoff, and the topology (exchanges,
//!   work queues, delay tiers, dead letters, events) every process declares.
//! - [`relay`]: the outbox relay: pending jobs and events, published with confirms.
//! - [`retry`]: the retry policy: which delay tier a failed attempt waits in.
//! - [`blob`]: the blob store of uploads and thumbnails, on the local disk or in S3:
//!   streamed puts with a size limit, ranged streamed gets, checked object keys.
//! - [`metrics`]: the Prometheus text both processes serve at `/metrics`, and the
//!   backlog gauges (jobs per state, outbox lag, queue depths) read on scrape.
//! - [`telemetry`]: tracing, initialised once per process.

pub mod analytics;
pub mod auth;
pub mod blob;
pub mod broker;
pub mod communications;
pub mod contact;
pub mod crews;
pub mod db;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod filetype;
pub mod http_server;
pub mod jobs;
pub mod metrics;
pub mod ops;
pub mod reach;
pub mod relay;
pub mod retry;
pub mod search;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod templates;
