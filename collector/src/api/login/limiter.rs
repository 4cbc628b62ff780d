//! One limiter for every way a password is checked (API Basic, console login). It counts
//! failures per remote address and per user name, and reserves a slot before the hash runs,
//! so that concurrent tries count as much as sequential ones.
//!
//! The per-user threshold slows a guess spread over many addresses, but it applies only to
//! addresses that have failed themselves: a stranger hammering `rina` from elsewhere must not
//! lock Rina out of her own desk. A success resets nothing, neither its own address's count
//! nor another's, so a right guess from one address cannot wipe the record of the others.
//! IPv6 addresses are counted by their /64, which is what one host can cheaply rotate through.
//! Both tables are bounded; when full, the entry whose window started first goes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Addresses and user names tracked at most, each.
pub const MAX_TRACKED: usize = 10_000;

/// How many failures a window allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub per_address: u32,
    pub per_user: u32,
    pub window: Duration,
}

/// A refused try, and when the window that refused it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

/// The failures of one address or user name in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: Instant,
    failures: u32,
    in_flight: u32,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            failures: 0,
            in_flight: 0,
        }
    }

    /// Starts a new window once the old one has passed; tries still running stay counted.
    fn roll(&mut self, now: Instant, window: Duration) {
        if now.saturating_duration_since(self.since) >= window {
            self.since = now;
            self.failures = 0;
        }
    }

    fn used(&self) -> u32 {
        self.failures.saturating_add(self.in_flight)
    }

    fn idle(&self, now: Instant, window: Duration) -> bool {
        self.in_flight == 0
            && (self.failures == 0 || now.saturating_duration_since(self.since) >= window)
    }

    fn retry_after(&self, now: Instant, window: Duration) -> Duration {
        (self.since + window)
            .saturating_duration_since(now)
            .max(Duration::from_secs(1))
    }
}

/// A bounded table of windows.
#[derive(Debug)]
struct Table<K> {
    windows: HashMap<K, Window>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new() -> Self {
        Self {
            windows: HashMap::new(),
        }
    }

    fn get(&mut self, key: &K, now: Instant, window: Duration) -> Option<&mut Window> {
        let entry = self.windows.get_mut(key)?;
        entry.roll(now, window);
        Some(entry)
    }

    fn entry(&mut self, key: &K, now: Instant, window: Duration) -> &mut Window {
        if !self.windows.contains_key(key) && self.windows.len() >= MAX_TRACKED {
            self.windows.retain(|_, entry| !entry.idle(now, window));
            if self.windows.len() >= MAX_TRACKED {
                let oldest = self
                    .windows
                    .iter()
                    .filter(|(_, entry)| entry.in_flight == 0)
                    .min_by_key(|(_, entry)| entry.since)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    self.windows.remove(&oldest);
                }
            }
        }
        let entry = self
            .windows
            .entry(key.clone())
            .or_insert_with(|| Window::new(now));
        entry.roll(now, window);
        entry
    }

    fn limited(&self, threshold: u32, now: Instant, window: Duration) -> Vec<(K, Window)> {
        self.windows
            .iter()
            .filter(|(_, entry)| {
                now.saturating_duration_since(entry.since) < window && entry.failures >= threshold
            })
            .map(|(key, entry)| (key.clone(), *entry))
            .collect()
    }
}

#[derive(Debug)]
struct Tables {
    addresses: Table<IpAddr>,
    users: Table<String>,
}

/// What `GET /api/v1/login-limits` lists: one address or user name over its threshold.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LimitedEntry {
    /// `address` or `user`.
    pub kind: &'static str,
    pub key: String,
    pub failures: u32,
    pub retry_after_seconds: u64,
}

/// The limiter; cheap to share.
#[derive(Debug)]
pub struct LoginLimiter {
    thresholds: Thresholds,
    tables: Mutex<Tables>,
}

/// The address a window is kept for: IPv6 by its /64.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl LoginLimiter {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            tables: Mutex::new(Tables {
                addresses: Table::new(),
                users: Table::new(),
            }),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves a try for `user` from `address`, or says how long to wait. The reservation
    /// counts against both thresholds until it is finished (or dropped, which counts nothing).
    pub fn begin(
        self: &Arc<Self>,
        address: IpAddr,
        user: &str,
        now: Instant,
    ) -> Result<Attempt, Limited> {
        let window = self.thresholds.window;
        let address = address_key(address);
        let mut tables = self.tables();
        let from = tables.addresses.entry(&address, now, window);
        if from.used() >= self.thresholds.per_address {
            return Err(Limited {
                retry_after: from.retry_after(now, window),
            });
        }
        let address_failed = from.failures > 0;
        let user_key = user.to_owned();
        if address_failed
            && let Some(name) = tables.users.get(&user_key, now, window)
            && name.used() >= self.thresholds.per_user
        {
            return Err(Limited {
                retry_after: name.retry_after(now, window),
            });
        }
        tables.addresses.entry(&address, now, window).in_flight += 1;
        tables.users.entry(&user_key, now, window).in_flight += 1;
        Ok(Attempt {
            limiter: self.clone(),
            address,
            user: user_key,
            done: false,
        })
    }

    fn end(&self, address: &IpAddr, user: &String, failed: bool, now: Instant) {
        let window = self.thresholds.window;
        let mut tables = self.tables();
        let Tables { addresses, users } = &mut *tables;
        let ended = [
            addresses.get(address, now, window),
            users.get(user, now, window),
        ];
        for entry in ended.into_iter().flatten() {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if failed {
                entry.failures = entry.failures.saturating_add(1);
            }
        }
    }

    /// Addresses and user names over their threshold now.
    pub fn limited(&self, now: Instant) -> Vec<LimitedEntry> {
        let Thresholds {
            per_address,
            per_user,
            window,
        } = self.thresholds;
        let tables = self.tables();
        let entry = |kind, key: String, found: Window| LimitedEntry {
            kind,
            key,
            failures: found.failures,
            retry_after_seconds: found.retry_after(now, window).as_secs(),
        };
        let mut list: Vec<LimitedEntry> = tables
            .addresses
            .limited(per_address, now, window)
            .into_iter()
            .map(|(key, found)| entry("address", key.to_string(), found))
            .chain(
                tables
                    .users
                    .limited(per_user, now, window)
                    .into_iter()
                    .map(|(key, found)| entry("user", key, found)),
            )
            .collect();
        list.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
        list
    }

    /// Forgets the failures of one address, one user name, or (both `None`) everyone.
    /// Returns how many entries were cleared.
    pub fn clear(&self, address: Option<IpAddr>, user: Option<&str>) -> usize {
        let mut tables = self.tables();
        let mut cleared = 0;
        let mut reset = |entry: &mut Window| {
            if entry.failures > 0 {
                cleared += 1;
            }
            entry.failures = 0;
        };
        match (address, user) {
            (None, None) => {
                tables.addresses.windows.values_mut().for_each(&mut reset);
                tables.users.windows.values_mut().for_each(&mut reset);
            }
            (address, user) => {
                if let Some(entry) =
                    address.and_then(|a| tables.addresses.windows.get_mut(&address_key(a)))
                {
                    reset(entry);
                }
                if let Some(entry) = user.and_then(|u| tables.users.windows.get_mut(u)) {
                    reset(entry);
                }
            }
        }
        cleared
    }
}

/// A reserved try. `succeeded` or `failed` ends it; dropping it unfinished (a cancelled
/// request) releases the slot without counting a failure.
#[derive(Debug)]
pub struct Attempt {
    limiter: Arc<LoginLimiter>,
    address: IpAddr,
    user: String,
    done: bool,
}

impl Attempt {
    pub fn succeeded(mut self, now: Instant) {
        self.done = true;
        self.limiter.end(&self.address, &self.user, false, now);
    }

    pub fn failed(mut self, now: Instant) {
        self.done = true;
        self.limiter.end(&self.address, &self.user, true, now);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.limiter
                .end(&self.address, &self.user, false, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    fn limiter(per_address: u32, per_user: u32) -> Arc<LoginLimiter> {
        Arc::new(LoginLimiter::new(Thresholds {
            per_address,
            per_user,
            window: WINDOW,
        }))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn fail(limiter: &Arc<LoginLimiter>, address: &str, user: &str, now: Instant) {
        limiter
            .begin(ip(address), user, now)
            .expect("not limited yet")
            .failed(now);
    }

    #[test]
    fn failures_are_limited_per_address_and_window() {
        let limiter = limiter(3, 100);
        let now = Instant::now();
        for _ in 0..3 {
            fail(&limiter, "10.0.0.1", "rina", now);
        }
        let refused = limiter.begin(ip("10.0.0.1"), "rina", now).unwrap_err();
        assert_eq!(refused.retry_after, WINDOW);
        // Another address is untouched, and so is another user from it.
        assert!(limiter.begin(ip("10.0.0.2"), "rina", now).is_ok());
        // The window passes.
        let later = now + WINDOW;
        assert!(limiter.begin(ip("10.0.0.1"), "rina", later).is_ok());
    }

    #[test]
    fn concurrent_tries_count_before_they_finish() {
        let limiter = limiter(3, 100);
        let now = Instant::now();
        let held: Vec<Attempt> = (0..3)
            .map(|_| limiter.begin(ip("10.0.0.1"), "rina", now).unwrap())
            .collect();
        assert!(limiter.begin(ip("10.0.0.1"), "rina", now).is_err());
        // A cancelled try gives its slot back without counting as a failure.
        drop(held);
        assert!(limiter.begin(ip("10.0.0.1"), "rina", now).is_ok());
        assert!(limiter.limited(now).is_empty());
    }

    #[test]
    fn a_user_under_attack_elsewhere_can_still_log_in_from_a_clean_address() {
        let limiter = limiter(2, 5);
        let now = Instant::now();
        for n in 0..5 {
            fail(&limiter, &format!("10.0.1.{n}"), "rina", now);
        }
        // Each of those addresses has failed once: guessing more for rina from them is slowed.
        assert!(limiter.begin(ip("10.0.1.0"), "rina", now).is_err());
        // They may still try another user (the per-address threshold is not reached).
        assert!(limiter.begin(ip("10.0.1.0"), "budi", now).is_ok());
        // An address that has not failed still gets in.
        let attempt = limiter.begin(ip("192.168.7.7"), "rina", now).unwrap();
        attempt.succeeded(now);
        // A success there resets nobody else's count.
        assert!(limiter.begin(ip("10.0.1.1"), "rina", now).is_err());
        let listed = limiter.limited(now);
        assert_eq!(
            listed,
            vec![LimitedEntry {
                kind: "user",
                key: "rina".to_owned(),
                failures: 5,
                retry_after_seconds: 300
            }]
        );
    }

    #[test]
    fn ipv6_is_counted_by_its_64() {
        let limiter = limiter(2, 100);
        let now = Instant::now();
        fail(&limiter, "2001:db8:1:2::1", "rina", now);
        fail(&limiter, "2001:db8:1:2::ffff", "rina", now);
        assert!(
            limiter
                .begin(ip("2001:db8:1:2:aaaa::9"), "rina", now)
                .is_err()
        );
        assert!(limiter.begin(ip("2001:db8:1:3::1"), "rina", now).is_ok());
        // An IPv4-mapped address is the IPv4 address.
        fail(&limiter, "::ffff:10.0.0.9", "x", now);
        fail(&limiter, "10.0.0.9", "x", now);
        assert!(limiter.begin(ip("10.0.0.9"), "x", now).is_err());
    }

    #[test]
    fn clearing_forgets_failures() {
        let limiter = limiter(1, 100);
        let now = Instant::now();
        fail(&limiter, "10.0.0.1", "rina", now);
        fail(&limiter, "10.0.0.2", "budi", now);
        assert_eq!(limiter.limited(now).len(), 2);
        assert_eq!(limiter.clear(Some(ip("10.0.0.1")), None), 1);
        assert!(limiter.begin(ip("10.0.0.1"), "rina", now).is_ok());
        assert!(limiter.begin(ip("10.0.0.2"), "budi", now).is_err());
        // 10.0.0.2, and the names rina and budi.
        assert_eq!(limiter.clear(None, None), 3);
        assert!(limiter.limited(now).is_empty());
    }

    #[test]
    fn tables_stay_bounded() {
        let limiter = limiter(1, 1);
        let now = Instant::now();
        for n in 0..(MAX_TRACKED as u32 + 50) {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            fail(&limiter, &address.to_string(), &format!("u{n}"), now);
        }
        let tables = limiter.tables();
        assert!(tables.addresses.windows.len() <= MAX_TRACKED);
        assert!(tables.users.windows.len() <= MAX_TRACKED);
    }
}
