//! The state of each `[[links]]` interface from sysfs (`/sys/class/net/<if>/operstate`,
//! `carrier`, `speed`, `statistics/{rx,tx}_bytes`), as `pantau_link_*{link}` series; not
//! `node_network_*`, which the host role already sends (one message may not hold a series
//! twice).
//!
//! sysfs is polled every 500 ms, so a change of carrier or operstate becomes a `link_down` or
//! `link_up` event within a second of happening, never at the next report. The event carries
//! the time of the change as seen by the poll (`changed_ms`); while the link box's own uplink
//! is down it waits in the outbox and arrives with that time once the link is back.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pantau_protocol::{Event, Severity};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::LinkConfig;
use crate::metric::FamilySet;
use crate::role::EventSender;

/// How often sysfs is read.
const POLL: Duration = Duration::from_millis(500);

/// Where interfaces live; a field so tests can point elsewhere.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// The links and their latest state, shared by the watch task and `collect`.
pub struct Shared {
    links: Vec<LinkConfig>,
    root: PathBuf,
    states: Mutex<Vec<Option<State>>>,
}

/// One reading of an interface.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// `up`, `down`, `lowerlayerdown`, ... as the kernel writes it.
    pub operstate: String,
    /// `None` when the kernel has no answer (an interface that is administratively down).
    pub carrier: Option<bool>,
    /// Link speed in Mbit/s, when the driver knows it.
    pub speed_mbps: Option<f64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl State {
    fn is_up(&self) -> bool {
        (self.operstate == "up" || self.operstate == "unknown") && self.carrier != Some(false)
    }
}

impl Shared {
    pub fn new(links: &[LinkConfig]) -> Self {
        Self::with_root(links, PathBuf::from(SYS_CLASS_NET))
    }

    fn with_root(links: &[LinkConfig], root: PathBuf) -> Self {
        Self {
            links: links.to_vec(),
            root,
            states: Mutex::new(vec![None; links.len()]),
        }
    }

    fn read_all(&self) -> Vec<Option<State>> {
        self.links
            .iter()
            .map(|link| read_state(&self.root.join(&link.interface)))
            .collect()
    }

    fn states(&self) -> Vec<Option<State>> {
        match self.states.lock() {
            Ok(states) => states.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn store(&self, states: Vec<Option<State>>) {
        match self.states.lock() {
            Ok(mut current) => *current = states,
            Err(poisoned) => *poisoned.into_inner() = states,
        }
    }
}

/// Reads `dir` (an interface's sysfs folder); `None` when the interface does not exist.
fn read_state(dir: &std::path::Path) -> Option<State> {
    let text = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|text| text.trim().to_owned())
    };
    let operstate = text("operstate")?;
    let number = |name: &str| text(name).and_then(|text| text.parse::<i64>().ok());
    Some(State {
        operstate,
        carrier: number("carrier").map(|value| value == 1),
        speed_mbps: number("speed")
            .filter(|speed| *speed > 0)
            .map(|speed| speed as f64),
        rx_bytes: number("statistics/rx_bytes").unwrap_or(0).max(0) as u64,
        tx_bytes: number("statistics/tx_bytes").unwrap_or(0).max(0) as u64,
    })
}

/// Polls every link until shutdown, emitting an event for each change of carrier or
/// operstate.
pub async fn watch(
    shared: std::sync::Arc<Shared>,
    events: EventSender,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<Vec<Option<State>>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let reader = shared.clone();
        let Ok(states) = tokio::task::spawn_blocking(move || reader.read_all()).await else {
            continue;
        };
        let now = SystemTime::now();
        if let Some(previous) = &previous {
            for ((link, before), after) in shared.links.iter().zip(previous).zip(&states) {
                if let Some(event) = change(link, before.as_ref(), after.as_ref(), now) {
                    events.emit(event);
                }
            }
        } else {
            for (link, state) in shared.links.iter().zip(&states) {
                match state {
                    Some(state) => {
                        info!(link = %link.name, interface = %link.interface, operstate = %state.operstate, "watching link")
                    }
                    None => {
                        warn!(link = %link.name, interface = %link.interface, "link interface does not exist")
                    }
                }
            }
        }
        shared.store(states.clone());
        previous = Some(states);
    }
}

/// The event for a change between two readings, if the link went up or down (or its carrier
/// or operstate changed while it stayed down).
fn change(
    link: &LinkConfig,
    before: Option<&State>,
    after: Option<&State>,
    now: SystemTime,
) -> Option<Event> {
    let describe = |state: Option<&State>| match state {
        Some(state) => (
            state.operstate.clone(),
            match state.carrier {
                Some(true) => "1",
                Some(false) => "0",
                None => "unknown",
            },
        ),
        None => ("absent".to_owned(), "unknown"),
    };
    let (operstate_before, carrier_before) = describe(before);
    let (operstate, carrier) = describe(after);
    if operstate_before == operstate && carrier_before == carrier {
        return None;
    }
    let was_up = before.is_some_and(State::is_up);
    let is_up = after.is_some_and(State::is_up);
    let changed_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    let (kind, severity, text) = match (was_up, is_up) {
        (false, true) => ("link_up", Severity::Info, "is up"),
        (true, false) => ("link_down", Severity::Critical, "is down"),
        _ => ("link_state_changed", Severity::Warning, "changed state"),
    };
    let message = format!(
        "{} ({}) {text}: operstate {operstate}, carrier {carrier} (was {operstate_before}, carrier {carrier_before})",
        link.name, link.interface
    );
    if is_up {
        info!(link = %link.name, %operstate, carrier, "link up");
    } else {
        warn!(link = %link.name, %operstate, carrier, "link down");
    }
    Some(Event {
        kind: kind.to_owned(),
        severity,
        message,
        labels: [
            ("link", link.name.as_str()),
            ("interface", link.interface.as_str()),
            ("operstate", operstate.as_str()),
            ("carrier", carrier),
            ("changed_ms", changed_ms.to_string().as_str()),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .into(),
    })
}

/// Byte counters at the previous report, for throughput.
#[derive(Debug, Default)]
pub struct Throughput {
    previous: Vec<Option<(Instant, u64, u64)>>,
}

/// Writes the `pantau_link_*` series of every link.
pub fn write(shared: &Shared, throughput: &mut Throughput, set: &mut FamilySet) {
    let states = shared.states();
    throughput.previous.resize(states.len(), None);
    let now = Instant::now();
    for ((link, state), previous) in shared
        .links
        .iter()
        .zip(&states)
        .zip(throughput.previous.iter_mut())
    {
        let labels = [("link", link.name.as_str())];
        set.gauge(
            "pantau_link_info",
            "Always 1; the interface carrying each link.",
        )
        .sample(
            &[
                ("link", link.name.as_str()),
                ("interface", link.interface.as_str()),
            ],
            1.0,
        );
        if let Some(capacity) = link.capacity_mbps {
            set.gauge(
                "pantau_link_capacity_bytes_per_second",
                "The link's contracted capacity (links[].capacity_mbps / 8, in base units).",
            )
            .sample(&labels, capacity * 1e6 / 8.0);
        }
        let Some(state) = state else {
            set.gauge(
                "pantau_link_up",
                "1 if the interface is operationally up with carrier, else 0.",
            )
            .sample(&labels, 0.0);
            continue;
        };
        set.gauge(
            "pantau_link_up",
            "1 if the interface is operationally up with carrier, else 0.",
        )
        .sample(&labels, if state.is_up() { 1.0 } else { 0.0 });
        set.gauge(
            "pantau_link_oper_state",
            "1 for the interface's current operstate (RFC 2863, as in /sys/class/net/*/operstate).",
        )
        .sample(
            &[
                ("link", link.name.as_str()),
                ("operstate", state.operstate.as_str()),
            ],
            1.0,
        );
        if let Some(carrier) = state.carrier {
            set.gauge("pantau_link_carrier", "1 if the interface has carrier.")
                .sample(&labels, if carrier { 1.0 } else { 0.0 });
        }
        if let Some(speed) = state.speed_mbps {
            set.gauge(
                "pantau_link_speed_bytes_per_second",
                "The interface's negotiated speed (as node_network_speed_bytes).",
            )
            .sample(&labels, speed * 1e6 / 8.0);
        }
        set.counter(
            "pantau_link_receive_bytes_total",
            "Bytes received on the link's interface.",
        )
        .sample(&labels, state.rx_bytes as f64);
        set.counter(
            "pantau_link_transmit_bytes_total",
            "Bytes sent on the link's interface.",
        )
        .sample(&labels, state.tx_bytes as f64);
        if let Some((at, rx, tx)) = *previous {
            let seconds = now.duration_since(at).as_secs_f64();
            // A counter that went back (interface re-created) gives no rate this round.
            if seconds > 0.0 && state.rx_bytes >= rx && state.tx_bytes >= tx {
                set.gauge(
                    "pantau_link_receive_bytes_per_second",
                    "Receive throughput since the previous report.",
                )
                .sample(&labels, (state.rx_bytes - rx) as f64 / seconds);
                set.gauge(
                    "pantau_link_transmit_bytes_per_second",
                    "Transmit throughput since the previous report.",
                )
                .sample(&labels, (state.tx_bytes - tx) as f64 / seconds);
            }
        }
        *previous = Some((now, state.rx_bytes, state.tx_bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> LinkConfig {
        LinkConfig {
            name: "uplink".to_owned(),
            interface: "eth1".to_owned(),
            capacity_mbps: Some(50.0),
        }
    }

    fn state(operstate: &str, carrier: Option<bool>) -> State {
        State {
            operstate: operstate.to_owned(),
            carrier,
            speed_mbps: Some(1000.0),
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    #[test]
    fn reads_a_sysfs_folder() {
        let dir = tempfile::tempdir().unwrap();
        let eth = dir.path().join("eth1");
        std::fs::create_dir_all(eth.join("statistics")).unwrap();
        for (file, text) in [
            ("operstate", "up\n"),
            ("carrier", "1\n"),
            ("speed", "-1\n"),
            ("statistics/rx_bytes", "1000\n"),
            ("statistics/tx_bytes", "2000\n"),
        ] {
            std::fs::write(eth.join(file), text).unwrap();
        }
        let shared = Shared::with_root(&[link()], dir.path().to_owned());
        let states = shared.read_all();
        let read = states[0].clone().unwrap();
        assert_eq!(read.operstate, "up");
        assert_eq!(read.carrier, Some(true));
        assert_eq!(read.speed_mbps, None);
        assert_eq!((read.rx_bytes, read.tx_bytes), (1000, 2000));
        std::fs::remove_dir_all(&eth).unwrap();
        assert_eq!(shared.read_all()[0], None);
    }

    #[test]
    fn events_for_changes_only() {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let up = state("up", Some(true));
        let down = state("down", Some(false));
        assert!(change(&link(), Some(&up), Some(&up), now).is_none());
        let event = change(&link(), Some(&up), Some(&down), now).unwrap();
        assert_eq!(event.kind, "link_down");
        assert_eq!(event.severity, Severity::Critical);
        assert_eq!(event.labels["changed_ms"], "1800000000123");
        assert_eq!(event.labels["link"], "uplink");
        let event = change(&link(), Some(&down), Some(&up), now).unwrap();
        assert_eq!(event.kind, "link_up");
        let event = change(&link(), Some(&down), Some(&state("down", None)), now).unwrap();
        assert_eq!(event.kind, "link_state_changed");
    }

    #[test]
    fn series_with_throughput_from_the_second_report() {
        let shared = Shared::with_root(&[link()], PathBuf::from("/nonexistent"));
        let mut reading = state("up", Some(true));
        shared.store(vec![Some(reading.clone())]);
        let mut throughput = Throughput::default();
        let mut set = FamilySet::default();
        write(&shared, &mut throughput, &mut set);
        let names: Vec<String> = set.build().iter().map(|f| f.name().to_owned()).collect();
        assert!(names.contains(&"pantau_link_up".to_owned()));
        assert!(!names.contains(&"pantau_link_receive_bytes_per_second".to_owned()));
        reading.rx_bytes = 1_000_000;
        shared.store(vec![Some(reading)]);
        let mut set = FamilySet::default();
        write(&shared, &mut throughput, &mut set);
        let names: Vec<String> = set.build().iter().map(|f| f.name().to_owned()).collect();
        assert!(names.contains(&"pantau_link_receive_bytes_per_second".to_owned()));
        assert!(names.contains(&"pantau_link_capacity_bytes_per_second".to_owned()));
    }
}
