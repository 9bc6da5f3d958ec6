//! What any service here needs, knowing nothing of communications.
//!
//! - [`settings`]: one typed settings tree, read from the environment.
//! - [`db`]: the PostgreSQL pool and the migrations (the one source of the schema).
//! - [`broker`]: connecting to RabbitMQ with backoff, and the topology (exchanges,
//!   work queues, delay tiers, dead letters, events) every process declares.
//! - [`http_server`]: the HTTP accept loop: connection cap, header and idle timeouts.
//! - [`telemetry`]: tracing, initialised once per process.
//! - [`blob`]: the blob store of uploads and thumbnails, on the local disk or in S3:
//!   streamed puts with a size limit, ranged streamed gets, checked object keys.
//! - [`auth`]: the HS256 bearer tokens the api accepts and `commcenterctl token` prints.

pub mod auth;
pub mod blob;
pub mod broker;
pub mod db;
pub mod http_server;
pub mod settings;
pub mod telemetry;
