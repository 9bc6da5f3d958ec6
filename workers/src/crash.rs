//! Crash points, for the tests that kill a worker at each step of a send.
//!
//! `COMMCENTER_CRASH_AT=<point>` makes the process abort the first time it reaches that
//! point, as a power cut or an OOM kill would: no unwinding, no ack, no cleanup. Unset
//! (always, in production) a point costs one comparison against a cached `None`.

use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const CRASH_AT: &str = "COMMCENTER_CRASH_AT";

/// The committed intent to send exists; the provider has not been called.
pub const BEFORE_PROVIDER_CALL: &str = "send.before_provider_call";
/// The provider accepted the message; nothing about it is recorded yet.
pub const AFTER_PROVIDER_ACCEPTED: &str = "send.after_provider_accepted";
/// The provider's id is committed on the send; the job's transaction is not.
pub const AFTER_SEND_RECORDED: &str = "send.after_send_recorded";
/// The job's outcome is committed; the delivery is not acked.
pub const AFTER_JOB_COMMITTED: &str = "job.after_commit";

pub const ALL: &[&str] = &[
    BEFORE_PROVIDER_CALL,
    AFTER_PROVIDER_ACCEPTED,
    AFTER_SEND_RECORDED,
    AFTER_JOB_COMMITTED,
];

fn armed() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT
        .get_or_init(|| std::env::var(CRASH_AT).ok().filter(|p| !p.is_empty()))
        .as_deref()
}

/// Aborts the process here if this is the armed point.
pub fn point(name: &str) {
    if armed() == Some(name) {
        tracing::error!(point = name, "crashing on purpose ({CRASH_AT})");
        std::process::abort();
    }
}
