//! When and how long to wait before trying a request again.

use std::time::Duration;

/// Statuses worth retrying: rate limiting and server-side failures.
pub fn retryable(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// Exponential backoff with full jitter: attempt `n` (from 0) waits a random time up to
/// `base * 2^n`, capped at `cap`, so many hosts restarting at once do not retry in step.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The wait before retry `attempt`; `random` is a uniformly random `u64`.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self.base.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(self.cap);
        let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(fraction)
    }
}

/// A random `u64` from the standard library's randomly seeded hasher; good enough for jitter.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_rate_limits_and_server_errors_only() {
        assert!(retryable(429) && retryable(500) && retryable(503) && retryable(599));
        assert!(!retryable(200) && !retryable(400) && !retryable(401) && !retryable(404));
    }

    #[test]
    fn delay_grows_to_the_cap_and_is_jittered() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(0, 0), Duration::ZERO);
        let max = u64::MAX;
        assert!(backoff.delay(0, max) <= Duration::from_millis(200));
        assert!(backoff.delay(2, max) > Duration::from_millis(790));
        assert!(backoff.delay(30, max) <= Duration::from_secs(5));
        assert!(backoff.delay(30, max) > Duration::from_millis(4990));
        let half = backoff.delay(3, u64::MAX / 2);
        assert!(half > Duration::from_millis(790) && half < Duration::from_millis(810), "{half:?}");
    }
}
