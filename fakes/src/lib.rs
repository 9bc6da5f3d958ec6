//! Fake RingCentral and Gmail servers on loopback. They speak the real APIs (paths,
//! OAuth, bodies, headers, rate-limit headers, error bodies, as listed in the handbook's
//! PROVIDERS.md), validate what they receive like the real services, record every
//! request, and fail on command. The clients in `providers/`, the workers' tests, the
//! end-to-end tests and the benchmarks drive them; the `commcenter-fakes` binary runs
//! both so the whole system can be tried without provider accounts.
//!
//! # Use
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use commcenter_fakes::*;
//! let rc = FakeRingCentral::start(RingCentralConfig::default()).await?; // 127.0.0.1:0
//! let gmail = FakeGmail::start(GmailConfig::default()).await?;
//! // Point the clients at rc.url() (RingCentral server URL), gmail.token_url() and gmail.url().
//! rc.fail_next(Endpoint::Send, Fault::AcceptThenDrop, 1);
//! gmail.fail_next(Endpoint::Send, Fault::RateLimited { retry_after: Some(2) }, 3);
//! // … run the code under test, then look at rc.sent(), gmail.sent(), rc.requests() …
//! # Ok(()) }
//! ```
//!
//! # What both fakes share
//! - `start(config)`, `url()` (no trailing slash), `addr()`, `config()`, `shutdown()`;
//!   a fake stops when dropped.
//! - `fail_next(Endpoint, Fault, times)`: the next `times` requests to that endpoint meet
//!   the fault, in the order scripted. A fault's request still counts against RingCentral's
//!   rate limit. `Stall` does the work and then holds the answer; `AcceptThenDrop` does
//!   the work (the message is in `sent()`) and closes the TCP connection unanswered.
//! - `expire_tokens()`, `revoke()`, `token_requests()`, `requests()` (every provider
//!   request with method, path, query, headers, body and answered status; `None` when the
//!   connection was dropped), `set_latency()`.
//! - A control API under `/_fake/` (not recorded): `GET sent`, `GET requests`,
//!   `POST faults` (`{"endpoint":"send","fault":{"kind":"server_error","status":503},"times":1}`,
//!   kinds: status, rate_limited, server_error, expired_token, invalid_grant, stall
//!   (`millis`), accept_then_drop), `POST expire-tokens`, `POST revoke`.
//!
//! # RingCentral ([`ringcentral`])
//! Token endpoint (Auth group, HTTP Basic, JWT and single-use refresh grants), SMS and
//! MMS (Medium), message store get and list (Light), call log (Heavy), webhook
//! subscriptions with the Validation-Token handshake (Medium). Message ids are JSON
//! numbers, as RingCentral's. Extra: `sent()`, `set_status(id, status)`,
//! `add_call(record) -> id`, `inbound_sms(from, text).await -> id`, `subscriptions()`;
//! control `POST inbound-sms`, `POST status`, `POST calls`.
//!
//! # Gmail ([`gmail`])
//! `POST /token` (refresh grant), `messages.send` simple (5 MiB) and upload (`media`,
//! `multipart`; 35 MiB), `messages.list?q=rfc822msgid:` and `messages.get`, quota units
//! per minute. Extra: `sent() -> Vec<SentMail>`, `mark_daily_limit(bool)`,
//! `set_quota_answer(QuotaAnswer)`, `token_url()`; control `POST daily-limit`.
//!
//! # Web Push ([`push`])
//! A push service with browsers subscribed to it: checks VAPID and `aes128gcm`, decrypts
//! each push with the browser's keys, records it (`received()`), answers 404 for an
//! unknown browser, 410 once `forget(name)`, or what `answer_next` scripts.
//!
//! Layout: `server` (accept loop, request log, latency, multipart), `faults`, `control`
//! (shared control-API pieces), `ringcentral/`, `gmail/`, `push`.

// Handlers refuse with a finished `Response` as their error: built once per refused
// request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod control;
mod faults;
pub mod gmail;
pub mod push;
pub mod ringcentral;
mod server;

pub use faults::{Endpoint, Fault};
pub use gmail::{FakeGmail, GmailConfig, QuotaAnswer, SentAttachment, SentMail};
pub use push::{Browser, Delivery, FakePush};
pub use ringcentral::{FakeRingCentral, RateGroup, RateLimit, RateLimits, RingCentralConfig};
pub use server::Recorded;
