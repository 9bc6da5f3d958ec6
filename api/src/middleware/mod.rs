//! The request middleware: what runs around every route. It depends on the state and
//! the pieces it guards with ([`crate::health`], [`crate::limits`]), never the reverse.
//!
//! - [`database`]: 503 at once while PostgreSQL is known to be down;
//! - [`rate_limit`]: each request's share of its rate limits;
//! - [`unstorable_text`]: 400 for a URL with `%00`.

pub mod database;
pub mod rate_limit;
pub mod unstorable_text;
