//! RingCentral's rate-limit groups: each group allows `limit` requests per `window`,
//! every answer says where the group stands, and a request over the limit gets 429.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::server::lock;

/// RingCentral's API groups (each endpoint belongs to one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateGroup {
    Light,
    Medium,
    Heavy,
    Auth,
}

impl RateGroup {
    fn name(self) -> &'static str {
        match self {
            Self::Light => "Light",
            Self::Medium => "Medium",
            Self::Heavy => "Heavy",
            Self::Auth => "Auth",
        }
    }
}

/// `limit` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub window: Duration,
}

impl RateLimit {
    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            window: Duration::from_secs(60),
        }
    }
}

/// The limit of each group. The default is generous enough for benchmarks; RingCentral's
/// own are about 50/40/10/5 per 60 s, which tests set where they matter.
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub light: RateLimit,
    pub medium: RateLimit,
    pub heavy: RateLimit,
    pub auth: RateLimit,
}

impl RateLimits {
    /// RingCentral's documented defaults (Light 50, Medium 40, Heavy 10, Auth 5 per minute).
    pub fn ringcentral() -> Self {
        Self {
            light: RateLimit::per_minute(50),
            medium: RateLimit::per_minute(40),
            heavy: RateLimit::per_minute(10),
            auth: RateLimit::per_minute(5),
        }
    }

    fn of(&self, group: RateGroup) -> RateLimit {
        match group {
            RateGroup::Light => self.light,
            RateGroup::Medium => self.medium,
            RateGroup::Heavy => self.heavy,
            RateGroup::Auth => self.auth,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        let generous = RateLimit::per_minute(1_000_000);
        Self {
            light: generous,
            medium: generous,
            heavy: generous,
            auth: generous,
        }
    }
}

/// Fixed windows per group, starting at the group's first request.
pub(super) struct RateLimiter {
    limits: RateLimits,
    windows: Mutex<HashMap<RateGroup, (Instant, u32)>>,
}

/// Where a group stands after counting a request: the `X-Rate-Limit-*` headers.
pub(super) struct RateHeaders {
    group: RateGroup,
    limit: RateLimit,
    remaining: u32,
}

/// A request over its group's limit.
pub(super) struct Limited {
    headers: RateHeaders,
    retry_after: u64,
}

impl RateLimiter {
    pub(super) fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            windows: Mutex::default(),
        }
    }

    /// Counts a request against `group`, or refuses it if the window is used up.
    pub(super) fn take(&self, group: RateGroup) -> Result<RateHeaders, Limited> {
        let limit = self.limits.of(group);
        let now = Instant::now();
        let mut windows = lock(&self.windows);
        let (started, used) = windows.entry(group).or_insert((now, 0));
        if now.duration_since(*started) >= limit.window {
            *started = now;
            *used = 0;
        }
        if *used >= limit.limit {
            let left = limit.window.saturating_sub(now.duration_since(*started));
            // Whole seconds, rounded up, and never 0: a client must wait past the window's end.
            let retry_after = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Err(Limited {
                headers: RateHeaders {
                    group,
                    limit,
                    remaining: 0,
                },
                retry_after: retry_after.max(1),
            });
        }
        *used += 1;
        Ok(RateHeaders {
            group,
            limit,
            remaining: limit.limit - *used,
        })
    }
}

impl RateHeaders {
    /// Adds the `X-Rate-Limit-*` headers to an answer.
    pub(super) fn label(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(
            "x-rate-limit-group",
            HeaderValue::from_static(self.group.name()),
        );
        headers.insert("x-rate-limit-limit", HeaderValue::from(self.limit.limit));
        headers.insert("x-rate-limit-remaining", HeaderValue::from(self.remaining));
        headers.insert(
            "x-rate-limit-window",
            HeaderValue::from(self.limit.window.as_secs()),
        );
        response
    }
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let mut response = self.headers.label(exceeded_body());
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(self.retry_after));
        response
    }
}

/// RingCentral's 429 body (shape: check).
pub(super) fn exceeded_body() -> Response {
    super::error(
        StatusCode::TOO_MANY_REQUESTS,
        "CMN-301",
        "Request rate exceeded",
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_group_and_refuses_over_the_limit() {
        let limiter = RateLimiter::new(RateLimits {
            medium: RateLimit::per_minute(2),
            ..RateLimits::default()
        });
        assert_eq!(
            limiter
                .take(RateGroup::Medium)
                .map(|headers| headers.remaining)
                .ok(),
            Some(1)
        );
        assert_eq!(
            limiter
                .take(RateGroup::Medium)
                .map(|headers| headers.remaining)
                .ok(),
            Some(0)
        );
        let limited = limiter
            .take(RateGroup::Medium)
            .err()
            .expect("over the limit");
        assert!((1..=60).contains(&limited.retry_after));
        assert!(
            limiter.take(RateGroup::Light).is_ok(),
            "other groups count apart"
        );
    }

    #[test]
    fn a_new_window_starts_afresh() {
        let limit = RateLimit {
            limit: 1,
            window: Duration::from_millis(20),
        };
        let limiter = RateLimiter::new(RateLimits {
            heavy: limit,
            ..RateLimits::default()
        });
        assert!(limiter.take(RateGroup::Heavy).is_ok());
        assert!(limiter.take(RateGroup::Heavy).is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(limiter.take(RateGroup::Heavy).is_ok());
    }
}
