//! The connection caps: `http.max_connections` open at once overall and
//! `http.max_connections_per_address` per remote address. A connection holds a [`Slot`] from
//! accept to close; dropping it gives the room back.
//!
//! IPv6 clients are grouped by their /64: a stranger with SLAAC picks new addresses inside
//! their network's /64 at will, so one address per slot would be no cap at all.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::IntGauge;

/// Why a connection was refused; also the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerAddress,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::MaxConnections, Refusal::MaxConnectionsPerAddress];

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerAddress => "max_connections_per_address",
        }
    }
}

/// Open connections, overall and per address.
#[derive(Debug)]
pub struct Slots {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
    /// `pantau_collector_http_open_connections`.
    gauge: IntGauge,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One open connection's room; released on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
}

impl Slots {
    pub fn new(max_total: usize, max_per_address: usize, gauge: IntGauge) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            open: Mutex::new(Open::default()),
            gauge,
        })
    }

    /// Room for one more connection from `address`, or the cap that is full.
    pub fn take(self: &Arc<Self>, address: IpAddr) -> Result<Slot, Refusal> {
        let key = key_of(address);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.max_total {
            return Err(Refusal::MaxConnections);
        }
        let count = open.by_address.entry(key).or_insert(0);
        if *count >= self.max_per_address {
            return Err(Refusal::MaxConnectionsPerAddress);
        }
        *count += 1;
        open.total += 1;
        self.gauge.set(open.total as i64);
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        // Removing an address at zero keeps the map as small as the open connections.
        if let Some(count) = open.by_address.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.by_address.remove(&self.key);
            }
        }
        self.slots.gauge.set(open.total as i64);
    }
}

/// The address a connection counts against: IPv4 as is (also when mapped into IPv6), IPv6 by
/// its /64.
pub fn key_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(total: usize, per_address: usize) -> Arc<Slots> {
        Slots::new(
            total,
            per_address,
            IntGauge::new("open", "open connections").unwrap(),
        )
    }

    #[test]
    fn one_address_cannot_take_more_than_its_share() {
        let slots = slots(10, 2);
        let stranger: IpAddr = "192.0.2.7".parse().unwrap();
        let staff: IpAddr = "192.0.2.8".parse().unwrap();
        let first = slots.take(stranger).unwrap();
        let _second = slots.take(stranger).unwrap();
        assert_eq!(
            slots.take(stranger).unwrap_err(),
            Refusal::MaxConnectionsPerAddress
        );
        let _staff = slots.take(staff).unwrap();
        assert_eq!(slots.gauge.get(), 3);
        drop(first);
        assert_eq!(slots.gauge.get(), 2);
        let _third = slots.take(stranger).unwrap();
    }

    #[test]
    fn the_overall_cap_holds_across_addresses() {
        let slots = slots(3, 3);
        let held: Vec<Slot> = (1..=3)
            .map(|i| slots.take(IpAddr::from([192, 0, 2, i])).unwrap())
            .collect();
        assert_eq!(
            slots.take(IpAddr::from([192, 0, 2, 9])).unwrap_err(),
            Refusal::MaxConnections
        );
        drop(held);
        assert_eq!(slots.open(), 0);
        assert_eq!(slots.gauge.get(), 0);
        assert!(slots.open.lock().unwrap().by_address.is_empty());
    }

    #[test]
    fn ipv6_addresses_of_one_network_share_a_cap() {
        let slots = slots(10, 1);
        let _one = slots.take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(
            slots
                .take("2001:db8:1:2:ffff::9".parse().unwrap())
                .unwrap_err(),
            Refusal::MaxConnectionsPerAddress
        );
        let _other_network = slots.take("2001:db8:1:3::1".parse().unwrap()).unwrap();
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        assert_eq!(
            key_of("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            key_of("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }
}
