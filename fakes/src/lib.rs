//! Fake RingCentral and Gmail servers (placeholder doc, completed below).

mod control;
mod faults;
pub mod gmail;
pub mod ringcentral;
mod server;

pub use faults::{Endpoint, Fault};
pub use gmail::{FakeGmail, GmailConfig, QuotaAnswer, SentAttachment, SentMail};
pub use ringcentral::{FakeRingCentral, RateGroup, RateLimit, RateLimits, RingCentralConfig};
pub use server::Recorded;
