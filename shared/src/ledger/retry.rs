//! The retry policy: after a transient failure, how long to wait and in which delay
//! tier. Exponential backoff (doubling from `base`, capped at the longest tier) with
//! ±50 % jitter, so jobs that failed together do not come back together.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Ascending delay tiers (each a TTL queue).
    pub tiers: Vec<Duration>,
    /// The first retry's backoff before jitter; each next one doubles.
    pub base: Duration,
    /// Attempts, the first included, before a job is given up as exhausted.
    pub max_attempts: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait in `tier`, the shortest tier not shorter than `backoff`.
    RetryIn { tier: Duration, backoff: Duration },
    /// No attempts left.
    GiveUp,
}

impl RetryPolicy {
    /// What to do after attempt number `attempt` (1-based) failed transiently.
    /// `retry_after` is the provider's own word (`Retry-After`) and is never undercut.
    pub fn after_failure(&self, attempt: i32, retry_after: Option<Duration>) -> Decision {
        if attempt >= self.max_attempts {
            return Decision::GiveUp;
        }
        let largest = self.tiers.last().copied().unwrap_or(self.base);
        let doublings = u32::try_from(attempt.max(1) - 1).unwrap_or(0);
        let nominal = self
            .base
            .saturating_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .min(largest);
        let delay = nominal.mul_f64(rand::random_range(0.5..=1.5));
        let delay = delay.max(retry_after.unwrap_or_default());
        Decision::RetryIn {
            tier: self.tier_for(delay),
            backoff: delay,
        }
    }

    /// The shortest tier at least `delay` long, or the longest tier.
    pub fn tier_for(&self, delay: Duration) -> Duration {
        self.tiers
            .iter()
            .copied()
            .find(|tier| *tier >= delay)
            .or_else(|| self.tiers.last().copied())
            .unwrap_or(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            tiers: [1, 5, 30, 120, 600, 3600].map(Duration::from_secs).to_vec(),
            base: Duration::from_secs(1),
            max_attempts: 8,
        }
    }

    #[test]
    fn backoff_grows_and_lands_in_a_tier() {
        let p = policy();
        let mut previous_tier = Duration::ZERO;
        for attempt in 1..8 {
            let Decision::RetryIn { tier, backoff } = p.after_failure(attempt, None) else {
                panic!("attempt {attempt} should retry");
            };
            assert!(p.tiers.contains(&tier));
            assert!(tier >= backoff || tier == *p.tiers.last().unwrap());
            // Jitter is ±50%, so the n-th backoff is at least half of base * 2^(n-1).
            let floor = Duration::from_secs(1 << (attempt - 1)).min(Duration::from_secs(3600)) / 2;
            assert!(
                backoff >= floor,
                "attempt {attempt}: {backoff:?} < {floor:?}"
            );
            assert!(tier >= previous_tier / 6, "tiers should broadly grow");
            previous_tier = tier;
        }
    }

    #[test]
    fn gives_up_after_max_attempts() {
        assert_eq!(policy().after_failure(8, None), Decision::GiveUp);
        assert_eq!(policy().after_failure(9, None), Decision::GiveUp);
    }

    #[test]
    fn retry_after_is_never_undercut() {
        let Decision::RetryIn { tier, backoff } =
            policy().after_failure(1, Some(Duration::from_secs(60)))
        else {
            panic!("should retry");
        };
        assert!(backoff >= Duration::from_secs(60));
        assert_eq!(tier, Duration::from_secs(120));
    }

    #[test]
    fn jitter_spreads_delays() {
        let p = policy();
        let delays: std::collections::HashSet<_> = (0..50)
            .map(|_| match p.after_failure(3, None) {
                Decision::RetryIn { backoff, .. } => backoff,
                Decision::GiveUp => Duration::ZERO,
            })
            .collect();
        assert!(delays.len() > 10, "jitter should vary the delay");
    }
}
