//! Rate limiting for log lines a remote peer can trigger (bad payloads, bad API calls), so a
//! misbehaving agent cannot flood the journal. Counters still count every occurrence.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows one log line per key per period and counts what it held back.
#[derive(Debug)]
pub struct LogLimiter {
    period: Duration,
    keys: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    suppressed: u64,
}

/// What the caller should do with one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` occurrences of the same key were held back since the last line.
    Log { suppressed: u64 },
    /// Skip it.
    Suppress,
}

impl LogLimiter {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            keys: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, key: &str) -> Verdict {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Verdict {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match keys.get_mut(key) {
            Some(window) if now.duration_since(window.opened) < self.period => {
                window.suppressed += 1;
                Verdict::Suppress
            }
            Some(window) => {
                let suppressed = window.suppressed;
                *window = Window {
                    opened: now,
                    suppressed: 0,
                };
                Verdict::Log { suppressed }
            }
            None => {
                keys.insert(
                    key.to_owned(),
                    Window {
                        opened: now,
                        suppressed: 0,
                    },
                );
                Verdict::Log { suppressed: 0 }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_per_key() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(limiter.check_at("a", start), Verdict::Log { suppressed: 0 });
        assert_eq!(limiter.check_at("a", start), Verdict::Suppress);
        assert_eq!(limiter.check_at("b", start), Verdict::Log { suppressed: 0 });
        assert_eq!(
            limiter.check_at("a", start + Duration::from_secs(9)),
            Verdict::Suppress
        );
        assert_eq!(
            limiter.check_at("a", start + Duration::from_secs(10)),
            Verdict::Log { suppressed: 2 }
        );
    }
}
