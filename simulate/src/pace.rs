//! Pacing: when the i-th message of a connection is due, and how agents and rate are split over
//! connections. Pure arithmetic so the bounds can be tested without a clock.

use std::time::Duration;

/// When message `index` (from 0) is due after the start, at `rate` messages per second.
/// Computed from the start rather than from the previous message, so rounding and late wake-ups
/// never accumulate: a connection that fell behind catches up (as fast as its client lets it)
/// instead of silently lowering the offered rate.
pub fn due(index: u64, rate: f64) -> Duration {
    if rate <= 0.0 || !rate.is_finite() {
        return Duration::MAX;
    }
    Duration::from_secs_f64(index as f64 / rate)
}

/// The agents (indexes into the fleet) of each of `connections` connections, round robin, and
/// each connection's share of `rate` in proportion to its agents.
pub fn split(agents: usize, connections: usize, rate: f64) -> Vec<(Vec<usize>, f64)> {
    let connections = connections.clamp(1, agents.max(1));
    let mut groups = vec![Vec::new(); connections];
    for agent in 0..agents {
        groups[agent % connections].push(agent);
    }
    groups
        .into_iter()
        .map(|group| {
            let share = rate * group.len() as f64 / agents.max(1) as f64;
            (group, share)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_follow_the_rate_without_drift() {
        for rate in [0.5, 1.0, 3.0, 1000.0, 20_000.0, 99_999.0] {
            assert_eq!(due(0, rate), Duration::ZERO);
            let n = (rate * 60.0) as u64;
            // After a minute's worth of messages the schedule is at 60 s within a microsecond.
            let at = due(n, rate).as_secs_f64();
            assert!((at - n as f64 / rate).abs() < 1e-6, "rate {rate}: {at}");
            assert!((at - 60.0).abs() <= 1.0 / rate, "rate {rate}: {at}");
            let mut last = Duration::ZERO;
            for i in (0..n).step_by((n as usize / 1000).max(1)) {
                let next = due(i, rate);
                assert!(next >= last, "due times never go backwards");
                last = next;
            }
        }
    }

    #[test]
    fn a_zero_or_invalid_rate_never_becomes_due() {
        assert_eq!(due(1, 0.0), Duration::MAX);
        assert_eq!(due(1, -5.0), Duration::MAX);
        assert_eq!(due(1, f64::NAN), Duration::MAX);
    }

    #[test]
    fn split_covers_every_agent_once_and_the_whole_rate() {
        for (agents, connections) in [(1, 1), (10, 3), (1000, 8), (5, 10), (1000, 1000)] {
            let groups = split(agents, connections, 1000.0);
            assert_eq!(groups.len(), connections.min(agents));
            let mut seen: Vec<usize> = groups.iter().flat_map(|(g, _)| g.clone()).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..agents).collect::<Vec<_>>());
            let total: f64 = groups.iter().map(|(_, rate)| rate).sum();
            assert!(
                (total - 1000.0).abs() < 1e-6,
                "{agents}/{connections}: {total}"
            );
            let sizes: Vec<usize> = groups.iter().map(|(g, _)| g.len()).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1));
        }
    }
}
