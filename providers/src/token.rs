//! One access-token cache per client, shared by every task of the process.
//!
//! Providers allow few token requests (RingCentral: about 5 a minute), so at most one
//! refresh is in flight: callers that find the token stale queue on one lock, and whoever
//! gets it second finds the fresh token (or the failure) the first one left. A failed
//! refresh is remembered for a short cool-down, so a revoked grant gives every caller the
//! same permanent answer instead of a request each.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::error::{Failure, ProviderError};

/// An access token and what is needed to renew it.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub access_token: String,
    pub expires_at: Instant,
    /// When to renew: some time before it expires, so no call carries a token that dies
    /// in flight.
    pub renew_at: Instant,
    /// RingCentral's single-use refresh token and when it expires.
    pub refresh: Option<(String, Instant)>,
}

impl Token {
    pub fn new(
        access_token: String,
        expires_in: Duration,
        refresh: Option<(String, Duration)>,
    ) -> Self {
        let now = Instant::now();
        // A minute ahead, or half the lifetime for short-lived tokens.
        let margin = (expires_in / 2).min(Duration::from_secs(60));
        Self {
            access_token,
            expires_at: now + expires_in,
            renew_at: now + expires_in - margin,
            refresh: refresh.map(|(token, lifetime)| (token, now + lifetime)),
        }
    }
}

/// Obtains tokens from a provider's token endpoint.
pub(crate) trait TokenSource: Send + Sync {
    /// A new token; `previous` is the last one obtained (for a refresh grant).
    fn fetch(
        &self,
        previous: Option<&Token>,
    ) -> impl Future<Output = Result<Token, ProviderError>> + Send;
}

/// A token request that failed in transit. The call that needed the token has not been
/// sent, so for its caller the failure is transient, whatever became of the token request.
pub(crate) fn not_sent(mut error: ProviderError) -> ProviderError {
    if error.failure == Failure::Unknown {
        error.failure = Failure::Transient { retry_after: None };
    }
    error
}

/// How long a failed refresh is answered from memory when the provider gave no `Retry-After`.
const FAILURE_COOL_DOWN: Duration = Duration::from_secs(10);

pub(crate) struct TokenCache<S> {
    source: S,
    state: Mutex<State>,
    /// Held by the one task refreshing.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    /// Counts refreshes, so that a task can tell whether one happened while it waited.
    generation: u64,
    failure: Option<(ProviderError, Instant)>,
}

/// A token handed to a caller, with the generation it belongs to (for `reject`).
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub access_token: String,
    generation: u64,
}

impl<S: TokenSource> TokenCache<S> {
    pub fn new(source: S) -> Self {
        Self {
            source,
            state: Mutex::new(State::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// A token fit to use now, refreshing it if it is due (one refresh at a time).
    pub async fn get(&self) -> Result<Lease, ProviderError> {
        let seen = match self.cached(None) {
            Ok(lease) => return Ok(lease),
            Err(Stale::Failed(error)) => return Err(error),
            Err(Stale::Due(generation)) => generation,
        };
        let _refreshing = self.refreshing.lock().await;
        // Whoever held the lock before may have refreshed, or failed, meanwhile.
        let previous = match self.cached(Some(seen)) {
            Ok(lease) => return Ok(lease),
            Err(Stale::Failed(error)) => return Err(error),
            Err(Stale::Due(_)) => self.lock().token.clone(),
        };
        let fetched = self.source.fetch(previous.as_ref()).await;
        let mut state = self.lock();
        state.generation += 1;
        match fetched {
            Ok(token) => {
                let lease = Lease {
                    access_token: token.access_token.clone(),
                    generation: state.generation,
                };
                state.token = Some(token);
                state.failure = None;
                Ok(lease)
            }
            Err(error) => {
                let cool_down = match error.failure {
                    Failure::Transient {
                        retry_after: Some(wait),
                    } => wait.min(Duration::from_secs(300)),
                    _ => FAILURE_COOL_DOWN,
                };
                tracing::warn!(%error, "token refresh failed");
                state.failure = Some((error.clone(), Instant::now() + cool_down));
                Err(error)
            }
        }
    }

    /// The provider refused `lease` (401): count it as expired, unless a newer token
    /// replaced it already. Its refresh token is kept for the refresh grant.
    pub fn reject(&self, lease: &Lease) {
        let mut state = self.lock();
        let generation = state.generation;
        if let Some(token) = state
            .token
            .as_mut()
            .filter(|_| generation == lease.generation)
        {
            let now = Instant::now();
            token.expires_at = now;
            token.renew_at = now;
        }
    }

    /// The cached answer, if there is one. A task that saw generation `seen` before
    /// waiting takes a newer token even if it is within its renewal margin (so waiters do
    /// not refresh one after another), as long as it has not expired.
    fn cached(&self, seen: Option<u64>) -> Result<Lease, Stale> {
        let state = self.lock();
        let now = Instant::now();
        let renewed_meanwhile = seen.is_some_and(|seen| state.generation != seen);
        if let Some(token) = &state.token {
            let deadline = if renewed_meanwhile {
                token.expires_at
            } else {
                token.renew_at
            };
            if now < deadline {
                return Ok(Lease {
                    access_token: token.access_token.clone(),
                    generation: state.generation,
                });
            }
        }
        if let Some((error, until)) = &state.failure
            && now < *until
        {
            return Err(Stale::Failed(error.clone()));
        }
        Err(Stale::Due(state.generation))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value: a panic elsewhere cannot leave it half-written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

enum Stale {
    Due(u64),
    Failed(ProviderError),
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// Counts fetches; answers with tokens of the given lifetime, or with an error.
    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: Duration,
        fail: Option<ProviderError>,
    }

    impl TokenSource for Counting {
        async fn fetch(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            match &self.fail {
                Some(error) => Err(error.clone()),
                None => Ok(Token::new(format!("token-{n}"), self.lifetime, None)),
            }
        }
    }

    fn cache(
        lifetime: Duration,
        fail: Option<ProviderError>,
    ) -> (Arc<TokenCache<Counting>>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        (
            Arc::new(TokenCache::new(Counting {
                calls: calls.clone(),
                lifetime,
                fail,
            })),
            calls,
        )
    }

    async fn get_all(
        cache: &Arc<TokenCache<Counting>>,
        n: usize,
    ) -> Vec<Result<Lease, ProviderError>> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get().await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("task"));
        }
        results
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let (cache, calls) = cache(Duration::from_secs(3600), None);
        let results = get_all(&cache, 200).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().map(|l| l.access_token.as_str()) == Ok("token-1"))
        );
    }

    #[tokio::test]
    async fn a_rejected_token_is_replaced_once() {
        let (cache, calls) = cache(Duration::from_secs(3600), None);
        let first = cache.get().await.expect("token");
        // Every holder of the old token reports it; only the first report drops it.
        cache.reject(&first);
        let second = cache.get().await.expect("token");
        cache.reject(&first);
        assert_eq!(
            cache.get().await.expect("token").access_token,
            second.access_token
        );
        assert_eq!(second.access_token, "token-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_token_is_renewed_before_it_expires() {
        let (cache, calls) = cache(Duration::from_millis(400), None);
        assert_eq!(cache.get().await.expect("token").access_token, "token-1");
        // Past the renewal point (half of a short lifetime), not yet expired.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let results = get_all(&cache, 1000).await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().map(|l| l.access_token.as_str()) == Ok("token-2"))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_refresh_is_shared_and_remembered() {
        let refused = ProviderError::permanent("invalid_grant", "the mailbox must be reconnected");
        let (cache, calls) = cache(Duration::from_secs(3600), Some(refused.clone()));
        let results = get_all(&cache, 200).await;
        assert!(results.iter().all(|r| r.as_ref().err() == Some(&refused)));
        assert_eq!(cache.get().await.err(), Some(refused));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
