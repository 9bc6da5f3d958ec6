//! RingCentral's rate limits, obeyed before they bite: each answer says how many calls
//! its group (Light, Medium, Heavy, Auth) has left in the window. When none are left, or
//! after a 429 with `Retry-After`, the group's gate closes and every call in it waits
//! for the window to pass rather than earning a 429.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use reqwest::header::HeaderMap;

/// The window assumed when an exhausted group does not say its window.
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct Pacer {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Rate-limit group → closed until.
    closed_until: HashMap<String, Instant>,
    /// Endpoint → the group its answers named (RingCentral's assignment may change).
    group_of: HashMap<&'static str, String>,
}

impl Pacer {
    /// Waits while the gate of `endpoint`'s group is closed. `default_group` is the group
    /// RingCentral documents for it, used until an answer names one.
    pub async fn wait(&self, endpoint: &'static str, default_group: &str) {
        loop {
            let closed_until = {
                let state = self.lock();
                let group = state
                    .group_of
                    .get(endpoint)
                    .map_or(default_group, String::as_str);
                state.closed_until.get(group).copied()
            };
            match closed_until {
                Some(until) if until > Instant::now() => {
                    tokio::time::sleep_until(until.into()).await
                }
                // Re-read: the gate may have been closed again meanwhile.
                _ => return,
            }
        }
    }

    /// Reads the rate-limit headers of an answer; `retry_after` is the wait a 429 asked for.
    pub fn observe(
        &self,
        endpoint: &'static str,
        default_group: &str,
        headers: &HeaderMap,
        retry_after: Option<Duration>,
    ) {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
        };
        let mut state = self.lock();
        let group = match header("x-rate-limit-group") {
            Some(named) if !named.is_empty() => {
                state.group_of.insert(endpoint, named.to_owned());
                named.to_owned()
            }
            _ => state
                .group_of
                .get(endpoint)
                .cloned()
                .unwrap_or_else(|| default_group.to_owned()),
        };
        let exhausted =
            header("x-rate-limit-remaining").and_then(|v| v.parse::<u64>().ok()) == Some(0);
        let window = header("x-rate-limit-window")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let wait = match (retry_after, exhausted) {
            (Some(wait), _) => wait,
            (None, true) => window.unwrap_or(DEFAULT_WINDOW),
            (None, false) => return,
        };
        let until = Instant::now() + wait;
        let closed = state.closed_until.entry(group).or_insert(until);
        *closed = (*closed).max(until);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    async fn waited(pacer: &Pacer, endpoint: &'static str, group: &str) -> Duration {
        let start = Instant::now();
        pacer.wait(endpoint, group).await;
        start.elapsed()
    }

    #[tokio::test]
    async fn calls_pass_while_some_remain() {
        let pacer = Pacer::default();
        pacer.observe(
            "sms",
            "Medium",
            &headers(&[
                ("x-rate-limit-remaining", "3"),
                ("x-rate-limit-window", "60"),
            ]),
            None,
        );
        assert!(waited(&pacer, "sms", "Medium").await < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn an_exhausted_group_waits_for_its_window_and_others_do_not() {
        let pacer = Pacer::default();
        let exhausted = headers(&[
            ("x-rate-limit-group", "Medium"),
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-window", "1"),
        ]);
        pacer.observe("sms", "Light", &exhausted, None);
        assert!(waited(&pacer, "message", "Light").await < Duration::from_millis(50));
        // The endpoint's group is the one its answer named, not the default.
        let wait = waited(&pacer, "sms", "Light").await;
        assert!(
            wait >= Duration::from_millis(950) && wait < Duration::from_millis(1500),
            "{wait:?}"
        );
        assert!(waited(&pacer, "sms", "Light").await < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn retry_after_closes_the_gate_for_that_long() {
        let pacer = Pacer::default();
        pacer.observe(
            "call-log",
            "Heavy",
            &HeaderMap::new(),
            Some(Duration::from_millis(500)),
        );
        let wait = waited(&pacer, "call-log", "Heavy").await;
        assert!(wait >= Duration::from_millis(450), "{wait:?}");
    }
}
