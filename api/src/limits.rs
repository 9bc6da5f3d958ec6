//! Rate limits: a token bucket (GCRA, `governor`) per user for each route group that
//! queues work or costs the database (sends, uploads, receipts, search), and one per
//! client address for requests without a valid token (the RingCentral webhook, failed
//! sign-ins). Over the limit: 429 in our JSON shape with `Retry-After`; every limited
//! answer carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
//!
//! The buckets live in this process: with several api instances behind a balancer, a
//! user may get up to the limit from each (documented in docs/configuration.md).

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use axum::{
    http::{HeaderMap, HeaderValue, Method, header},
    response::{IntoResponse, Response},
};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

use commcenter_shared::platform::settings::{Rate, RateLimits};

use crate::error::ApiError;

/// The route groups with a limit of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Sends,
    Uploads,
    Receipts,
    Search,
}

impl Group {
    /// The group of a request, by its method and route template.
    pub(crate) fn of(method: &Method, route: &str) -> Option<Self> {
        if method != Method::POST {
            return None;
        }
        match route {
            "/api/messages/send"
            | "/api/integrations/ringcentral/sms"
            | "/api/integrations/gmail/send"
            | "/api/integrations/ringcentral/call-log" => Some(Self::Sends),
            "/api/communications/upload" => Some(Self::Uploads),
            "/api/communications/{id}/mark-read" | "/api/communications/{id}/mark-delivered" => {
                Some(Self::Receipts)
            }
            "/api/communications/search" => Some(Self::Search),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sends => "sends",
            Self::Uploads => "uploads",
            Self::Receipts => "receipts",
            Self::Search => "searches",
        }
    }
}

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One limit: its rate, and a bucket per key.
pub(crate) struct Limit<K: std::hash::Hash + Eq + Clone> {
    rate: Rate,
    buckets: Keyed<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Limit<K> {
    fn new(rate: Option<Rate>) -> Option<Self> {
        let rate = rate?;
        let count = NonZeroU32::new(rate.count)?;
        let quota = Quota::with_period(rate.per / rate.count)?.allow_burst(count);
        Some(Self {
            rate,
            buckets: RateLimiter::<K, _, _, StateInformationMiddleware>::new(
                quota,
                DefaultKeyedStateStore::default(),
                DefaultClock::default(),
            ),
        })
    }

    /// Takes one request from `key`'s bucket: the headers to answer with, or the
    /// refusal.
    pub(crate) fn take(&self, key: &K, what: &str) -> Result<HeaderMap, Refused> {
        let limit = self.rate.count;
        let refill = self.rate.per / self.rate.count;
        match self.buckets.check_key(key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                // Until the bucket is full again.
                let reset = refill * (limit - remaining.min(limit));
                Ok(headers(limit, remaining, reset))
            }
            Err(not_until) => Err(Refused {
                limit,
                wait: not_until.wait_time_from(DefaultClock::default().now()),
                message: format!(
                    "too many {what}: at most {limit} per {}",
                    per_word(self.rate.per)
                ),
            }),
        }
    }
}

/// A request over its limit.
#[derive(Debug)]
pub(crate) struct Refused {
    limit: u32,
    wait: Duration,
    message: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let seconds = whole_seconds(self.wait);
        let mut response =
            ApiError::TooManyRequests(format!("{}; try again in {seconds} s", self.message))
                .into_response();
        let h = response.headers_mut();
        h.extend(headers(self.limit, 0, self.wait));
        h.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        response
    }
}

fn per_word(per: Duration) -> &'static str {
    match per.as_secs() {
        1 => "second",
        60 => "minute",
        _ => "hour",
    }
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn headers(limit: u32, remaining: u32, reset: Duration) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("ratelimit-limit", HeaderValue::from(limit));
    h.insert("ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("ratelimit-reset", HeaderValue::from(whole_seconds(reset)));
    h
}

/// Every limit of this api instance.
pub struct Limits {
    sends: Option<Limit<String>>,
    uploads: Option<Limit<String>>,
    receipts: Option<Limit<String>>,
    search: Option<Limit<String>>,
    pub(crate) anonymous: Option<Limit<IpAddr>>,
}

impl Limits {
    pub fn new(rates: &RateLimits) -> Self {
        Self {
            sends: Limit::new(rates.sends),
            uploads: Limit::new(rates.uploads),
            receipts: Limit::new(rates.receipts),
            search: Limit::new(rates.search),
            anonymous: Limit::new(rates.anonymous),
        }
    }

    pub(crate) fn of(&self, group: Group) -> Option<&Limit<String>> {
        match group {
            Group::Sends => self.sends.as_ref(),
            Group::Uploads => self.uploads.as_ref(),
            Group::Receipts => self.receipts.as_ref(),
            Group::Search => self.search.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_route_template_and_method() {
        assert_eq!(
            Group::of(&Method::POST, "/api/messages/send"),
            Some(Group::Sends)
        );
        assert_eq!(
            Group::of(&Method::POST, "/api/integrations/gmail/send"),
            Some(Group::Sends)
        );
        assert_eq!(
            Group::of(&Method::POST, "/api/communications/{id}/mark-read"),
            Some(Group::Receipts)
        );
        assert_eq!(
            Group::of(&Method::POST, "/api/communications/upload"),
            Some(Group::Uploads)
        );
        assert_eq!(Group::of(&Method::GET, "/api/communications"), None);
        assert_eq!(Group::of(&Method::GET, "/api/messages/send"), None);
    }

    #[test]
    fn a_bucket_gives_its_burst_then_refuses_with_the_wait() {
        let limit = Limit::<String>::new(Some(Rate {
            count: 3,
            per: Duration::from_secs(60),
        }))
        .unwrap();
        let key = "alice".to_owned();
        let remaining: Vec<String> = (0..3)
            .map(|_| {
                limit.take(&key, "sends").unwrap()["ratelimit-remaining"]
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(remaining, ["2", "1", "0"]);
        let refused = limit.take(&key, "sends").unwrap_err().into_response();
        assert_eq!(refused.status(), 429);
        let wait: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=20).contains(&wait), "one request back in 20 s: {wait}");
        assert_eq!(refused.headers()["ratelimit-remaining"], "0");
        // Another user's bucket is untouched.
        assert!(limit.take(&"bob".to_owned(), "sends").is_ok());
    }
}
