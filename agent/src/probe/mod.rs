//! The probe role: measures a link from the box behind it, blackbox_exporter and
//! smokeping_prober style. One file per probe kind (icmp, tcp, http, dns), plus link.rs for the
//! state of the interfaces in `[[links]]`.
//!
//! Every probe runs as its own task on its own cadence and leaves its latest [`Outcome`] in a
//! shared slot; `collect` turns the latest outcome of each into series at the report's tick.
//! So a probe never waits for the report, and a slow probe never delays another. Results are
//! queued in the agent's outbox like any metrics message, so those taken while the link is
//! down arrive once it is back. Link state changes are events, published at once.

mod config;
mod dns;
mod http;
mod icmp;
mod link;
mod tcp;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pantau_protocol::{AnyFamily, Event, Severity};
use pantau_runtime::supervise::Supervisor;
use thiserror::Error;
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

pub use config::{LinkConfig, ProbeConfig};

use crate::metric::FamilySet;
use crate::role::{EventSender, ReportTrigger, RoleContext};
use config::{Probe, Spec};

/// Why the role cannot start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Icmp(#[from] icmp::SocketError),
}

/// Validates `[[probes]]` and `[[links]]`; `default_interval` is `agent.interval_seconds`.
pub fn validate(
    probes: &[ProbeConfig],
    links: &[LinkConfig],
    default_interval: u64,
) -> Result<(), pantau_runtime::config::ConfigError> {
    config::validate(probes, links, default_interval).map(|_| ())
}

/// The latest result of one probe.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub success: bool,
    /// How long the run took.
    pub duration: Duration,
    /// Why it failed, for the log and the `probe_failed` event.
    pub failure: Option<String>,
    /// Seconds spent resolving the target's name (0 for an address).
    pub resolve: Option<Duration>,
    pub detail: Detail,
}

/// The kind-specific part of an outcome.
#[derive(Debug, Clone)]
pub enum Detail {
    Icmp(icmp::IcmpResult),
    Tcp(tcp::TcpResult),
    Http(http::HttpResult),
    Dns(dns::DnsResult),
}

impl Outcome {
    pub fn failed(why: impl Into<String>, started: Instant, detail: Detail) -> Self {
        Outcome {
            success: false,
            duration: started.elapsed(),
            failure: Some(why.into()),
            resolve: None,
            detail,
        }
    }
}

/// The probe role: probes and links from the config.
pub struct ProbeRole {
    probes: Vec<Probe>,
    links: Vec<LinkConfig>,
    icmp: Option<icmp::Sockets>,
    /// The latest outcome of each probe, by index in `probes`.
    results: Arc<Mutex<Vec<Option<Outcome>>>>,
    links_state: Arc<link::Shared>,
    throughput: link::Throughput,
}

impl ProbeRole {
    /// Builds the role; opens the ICMP sockets now, so a box where neither unprivileged nor
    /// raw ICMP works refuses to start instead of reporting failures forever.
    pub fn new(
        probes: &[ProbeConfig],
        links: &[LinkConfig],
        default_interval: u64,
    ) -> Result<Self, StartError> {
        let probes = config::validate(probes, links, default_interval)
            .expect("config was validated at load");
        let icmp_specs: Vec<&icmp::IcmpSpec> = probes
            .iter()
            .filter_map(|probe| match &probe.spec {
                Spec::Icmp(spec) => Some(spec),
                _ => None,
            })
            .collect();
        let icmp = match icmp_specs.is_empty() {
            true => None,
            false => Some(icmp::Sockets::open(&icmp_specs)?),
        };
        if let Some(sockets) = &icmp {
            info!(mode = sockets.mode(), "ICMP sockets open");
        }
        let results = Arc::new(Mutex::new(vec![None; probes.len()]));
        Ok(Self {
            links_state: Arc::new(link::Shared::new(links)),
            throughput: link::Throughput::default(),
            probes,
            links: links.to_vec(),
            icmp,
            results,
        })
    }

    pub fn start(&mut self, context: &RoleContext, supervisor: &mut Supervisor) {
        for (index, probe) in self.probes.iter().enumerate() {
            let runner = match &probe.spec {
                Spec::Icmp(spec) => {
                    let Some(sockets) = &self.icmp else {
                        continue;
                    };
                    Runner::Icmp(icmp::IcmpProber::new(spec.clone(), sockets, probe.interval))
                }
                Spec::Tcp(spec) => Runner::Tcp(spec.clone()),
                Spec::Http(spec) => Runner::Http(spec.clone()),
                Spec::Dns(spec) => Runner::Dns(spec.clone()),
            };
            let task = run_probe(
                probe.clone(),
                runner,
                index,
                self.results.clone(),
                context.events.clone(),
                context.report_now.clone(),
                supervisor.shutdown(),
            );
            supervisor.spawn(&format!("probe-{}", probe.name), task);
        }
        if !self.links.is_empty() {
            supervisor.spawn(
                "link-watch",
                link::watch(
                    self.links_state.clone(),
                    context.events.clone(),
                    supervisor.shutdown(),
                ),
            );
        }
    }

    /// The latest result of each probe and the state of each link.
    pub fn collect(&mut self) -> Vec<AnyFamily> {
        let mut set = FamilySet::default();
        let results = match self.results.lock() {
            Ok(results) => results.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for (probe, outcome) in self.probes.iter().zip(&results) {
            if let Some(outcome) = outcome {
                write_outcome(probe, outcome, &mut set);
            }
        }
        link::write(&self.links_state, &mut self.throughput, &mut set);
        set.build()
    }
}

/// What a probe task owns between runs.
enum Runner {
    Icmp(icmp::IcmpProber),
    Tcp(tcp::TcpSpec),
    Http(http::HttpSpec),
    Dns(dns::DnsSpec),
}

impl Runner {
    async fn run(&mut self, timeout: Duration) -> Outcome {
        match self {
            Runner::Icmp(prober) => prober.run(timeout).await,
            Runner::Tcp(spec) => tcp::run(spec, timeout).await,
            Runner::Http(spec) => http::run(spec, timeout).await,
            Runner::Dns(spec) => dns::run(spec, timeout).await,
        }
    }
}

async fn run_probe(
    probe: Probe,
    mut runner: Runner,
    index: usize,
    results: Arc<Mutex<Vec<Option<Outcome>>>>,
    events: EventSender,
    report_now: ReportTrigger,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(probe.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_success: Option<bool> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Every kind bounds its own waits by the timeout; this is the backstop.
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = tokio::time::timeout(probe.timeout + probe.interval, runner.run(probe.timeout)) => outcome,
        };
        let outcome = outcome
            .unwrap_or_else(|_| Outcome::failed("timed out", started, empty_detail(&probe.spec)));
        let changed = last_success != Some(outcome.success);
        if changed && let Some(event) = transition(&probe, &outcome, last_success.is_none()) {
            events.emit(event);
        }
        last_success = Some(outcome.success);
        match results.lock() {
            Ok(mut results) => results[index] = Some(outcome),
            Err(poisoned) => poisoned.into_inner()[index] = Some(outcome),
        }
        // A probe that starts or stops failing is reported now, not at the next tick (the
        // reporter spaces such reports at least a second apart).
        if changed {
            report_now.request();
        }
    }
}

fn empty_detail(spec: &Spec) -> Detail {
    match spec {
        Spec::Icmp(_) => Detail::Icmp(icmp::IcmpResult::default()),
        Spec::Tcp(_) => Detail::Tcp(tcp::TcpResult::default()),
        Spec::Http(_) => Detail::Http(http::HttpResult::default()),
        Spec::Dns(_) => Detail::Dns(dns::DnsResult::default()),
    }
}

/// `probe_failed` when a probe starts failing, `probe_recovered` when it works again; a probe
/// that succeeds from its first run says nothing.
fn transition(probe: &Probe, outcome: &Outcome, first: bool) -> Option<Event> {
    let labels = [
        ("link".to_owned(), probe.link.clone()),
        ("probe".to_owned(), probe.name.clone()),
        ("target".to_owned(), probe.target.clone()),
        ("kind".to_owned(), probe.spec.kind().name().to_owned()),
    ]
    .into();
    match (outcome.success, first) {
        (true, true) => None,
        (true, false) => {
            info!(probe = %probe.name, "probe recovered");
            Some(Event {
                kind: "probe_recovered".to_owned(),
                severity: Severity::Info,
                message: format!("{} ({}) succeeds again", probe.name, probe.target),
                labels,
            })
        }
        (false, _) => {
            let why = outcome.failure.as_deref().unwrap_or("failed");
            warn!(probe = %probe.name, target = %probe.target, reason = why, "probe failed");
            Some(Event {
                kind: "probe_failed".to_owned(),
                severity: Severity::Warning,
                message: format!("{} ({}): {why}", probe.name, probe.target),
                labels,
            })
        }
    }
}

fn write_outcome(probe: &Probe, outcome: &Outcome, set: &mut FamilySet) {
    let labels = [
        ("link", probe.link.as_str()),
        ("probe", probe.name.as_str()),
        ("target", probe.target.as_str()),
    ];
    set.gauge(
        "probe_success",
        "blackbox_exporter: Displays whether or not the probe was a success.",
    )
    .sample(&labels, if outcome.success { 1.0 } else { 0.0 });
    set.gauge(
        "probe_duration_seconds",
        "blackbox_exporter: Returns how long the probe took to complete in seconds.",
    )
    .sample(&labels, outcome.duration.as_secs_f64());
    if let Some(resolve) = outcome.resolve {
        set.gauge(
            "probe_dns_lookup_time_seconds",
            "blackbox_exporter: Returns the time taken for probe dns lookup in seconds \
             (for dns probes: the query's round trip).",
        )
        .sample(&labels, resolve.as_secs_f64());
    }
    match &outcome.detail {
        Detail::Icmp(result) => result.write(&labels, set),
        Detail::Tcp(result) => result.write(&labels, set),
        Detail::Http(result) => result.write(&labels, set),
        Detail::Dns(result) => result.write(&labels, set),
    }
}

/// Resolves `host` (a name or an address) to its first address, timing the lookup.
pub(crate) async fn resolve(
    host: &str,
    port: u16,
) -> Result<(std::net::SocketAddr, Duration), String> {
    let started = Instant::now();
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok((std::net::SocketAddr::new(ip, port), started.elapsed()));
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut addresses) => match addresses.next() {
            Some(address) => Ok((address, started.elapsed())),
            None => Err(format!("{host} has no address")),
        },
        Err(error) => Err(format!("cannot resolve {host}: {error}")),
    }
}
