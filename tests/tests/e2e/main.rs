//! End-to-end tests: each spawns a whole Commcenter against the real PostgreSQL and
//! RabbitMQ, with its own database and queue prefix.

// In a test, a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod analytics;
mod auth;
mod bad_input;
mod batches;
mod browser;
mod cli;
mod console;
mod conversations;
mod crews;
mod deployment;
mod edits;
mod email;
mod files;
mod first_start;
mod group_commit;
mod health;
mod inbound_email;
mod inbox;
mod integrations;
mod limits;
mod listing;
mod messages;
mod metrics;
mod openapi;
mod ops;
mod parity;
mod portal;
mod push;
mod reach;
mod realtime;
mod receipts;
mod reliability;
mod rescue;
mod retries;
mod scale;
mod search;
mod sms;
mod templates;
mod unstorable_text;
mod websocket;

use std::time::Duration;

/// How long a test waits for something that should take milliseconds.
pub const WAIT: Duration = Duration::from_secs(10);
