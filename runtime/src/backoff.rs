//! Exponential reconnect backoff with jitter.
//!
//! rumqttc retries on the very next `poll()` with no delay of its own, so the task that owns the
//! event loop sleeps `next()` after each failure. The jitter keeps a site's agents from
//! reconnecting in lockstep after the collector or broker comes back.

use std::time::Duration;

/// Delays of `initial`, then doubling up to `max`, each drawn uniformly from its upper half.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        // "Equal jitter": at least half the ceiling, so the delay still grows.
        ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
    }

    /// Call after a successful connection.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ceilings = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000];
        for ceiling in ceilings {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                (ceiling / 2..=ceiling).contains(&delay),
                "{delay} not within [{}, {ceiling}]",
                ceiling / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn jitter_spreads_delays() {
        let distinct: std::collections::HashSet<_> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).next_delay())
            .collect();
        assert!(distinct.len() > 1);
    }
}
