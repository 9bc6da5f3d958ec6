//! What this system says to RingCentral and Gmail, and how it reads their answers.
//!
//! The worker handlers call these clients; each is built once per process and shared by
//! every task (`Clone` is an `Arc`).
//!
//! - [`ringcentral`]: SMS and MMS sends, message-store reads and reconciliation, the call log.
//! - [`gmail`]: composing RFC 5322 messages, sending them, finding one by Message-ID.
//! - [`mms`]: RingCentral's MMS limits, and shrinking photos to fit them.
//! - [`settings`]: what the clients are told (where, credentials, time limits), read
//!   from the environment by the settings tree.
//! - [`error`]: what a failure means for the caller (transient, permanent, or unknown:
//!   reconcile before sending again), with the rules that classify provider answers.
//!
//! Inside, `token` keeps each client's OAuth token (one refresh in flight at a time),
//! `pacing` holds calls back while a RingCentral rate-limit group is exhausted, and
//! `transport` makes the HTTP calls and reads transport failures.

pub mod error;
pub mod gmail;
mod mime;
pub mod mms;
mod pacing;
pub mod ringcentral;
pub mod settings;
mod token;
mod transport;

pub use error::{Failure, ProviderError};
pub use mms::Attachment;
