//! `[[probes]]` and `[[links]]`: parsed by serde, then validated once into [`Probe`]s whose
//! targets are already parsed, so a probe task never meets a config error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use pantau_runtime::config::ConfigError;
use serde::Deserialize;

use super::{dns, http, icmp, tcp};
use crate::metric::Pattern;

/// Longest a probe may wait or repeat: an hour, as `agent.interval_seconds`.
const MAX_SECONDS: f64 = 3600.0;
/// Most echo requests in one ICMP burst.
const MAX_COUNT: u32 = 1000;

/// One `[[probes]]` table. `kind` says which probe; fields of other kinds are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// `icmp`, `tcp`, `http` or `dns`.
    pub kind: ProbeKind,
    /// What to probe: an IP address or host name (icmp), `host:port` (tcp), a URL (http), the
    /// name to look up (dns).
    pub target: String,
    /// The link this probe watches, as staff name it (the `link` label).
    pub link: String,
    /// The `probe` label; default `<kind>-<target>`. Unique among the probes.
    pub name: Option<String>,
    /// Seconds between runs; default `agent.interval_seconds`.
    pub interval_seconds: Option<f64>,
    /// Seconds a run may take, below the interval; default 5 or half the interval if less.
    pub timeout_seconds: Option<f64>,
    /// icmp: echo requests per run (default 5).
    pub count: Option<u32>,
    /// http: status codes that count as success; default any 2xx.
    pub valid_status_codes: Option<Vec<u16>>,
    /// http: the body must match this regular expression.
    pub body_regex: Option<Pattern>,
    /// http: trust only the certificates in this PEM file (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// tcp: read until this regular expression matches what the peer sends (a banner).
    pub expect_regex: Option<Pattern>,
    /// dns: the server to ask, `ip` or `ip:port` (required for dns).
    pub server: Option<String>,
    /// dns: `A` (default) or `AAAA`.
    pub query_type: Option<String>,
}

/// A kind of probe, by its config name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Icmp,
    Tcp,
    Http,
    Dns,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Icmp => "icmp",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Http => "http",
            ProbeKind::Dns => "dns",
        }
    }
}

/// One `[[links]]` table: an interface whose state is watched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// The `link` label, as the probes name it.
    pub name: String,
    /// The network interface carrying it (`/sys/class/net/<interface>`).
    pub interface: String,
    /// The contracted capacity in Mbit/s, for utilisation on dashboards.
    pub capacity_mbps: Option<f64>,
}

/// A validated probe.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub link: String,
    pub target: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub spec: Spec,
}

/// What a probe does, with its target parsed.
#[derive(Debug, Clone)]
pub enum Spec {
    Icmp(icmp::IcmpSpec),
    Tcp(tcp::TcpSpec),
    Http(http::HttpSpec),
    Dns(dns::DnsSpec),
}

impl Spec {
    pub fn kind(&self) -> ProbeKind {
        match self {
            Spec::Icmp(_) => ProbeKind::Icmp,
            Spec::Tcp(_) => ProbeKind::Tcp,
            Spec::Http(_) => ProbeKind::Http,
            Spec::Dns(_) => ProbeKind::Dns,
        }
    }
}

/// Validates every probe and link; `default_interval` is `agent.interval_seconds`.
pub fn validate(
    probes: &[ProbeConfig],
    links: &[LinkConfig],
    default_interval: u64,
) -> Result<Vec<Probe>, ConfigError> {
    let mut link_names: HashMap<&str, usize> = HashMap::new();
    for (index, link) in links.iter().enumerate() {
        let field = |key: &str| format!("links[{index}].{key}");
        check_label(&field("name"), &link.name)?;
        if let Some(first) = link_names.insert(&link.name, index) {
            return Err(ConfigError::invalid(
                field("name"),
                &link.name,
                format!("is already used by links[{first}]"),
            ));
        }
        let valid_interface = !link.interface.is_empty()
            && link.interface.len() < 16
            && !link.interface.contains(['/', ' '])
            && link.interface != "."
            && link.interface != "..";
        if !valid_interface {
            return Err(ConfigError::invalid(
                field("interface"),
                &link.interface,
                "is not an interface name",
            ));
        }
        if let Some(capacity) = link.capacity_mbps
            && !(capacity.is_finite() && capacity > 0.0)
        {
            return Err(ConfigError::invalid(
                field("capacity_mbps"),
                capacity,
                "must be above 0",
            ));
        }
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut validated = Vec::with_capacity(probes.len());
    for (index, probe) in probes.iter().enumerate() {
        let validated_probe = validate_probe(index, probe, default_interval)?;
        if let Some(first) = names.insert(validated_probe.name.clone(), index) {
            return Err(ConfigError::invalid(
                format!("probes[{index}].name"),
                &validated_probe.name,
                format!("is already used by probes[{first}] (set a distinct name)"),
            ));
        }
        validated.push(validated_probe);
    }
    Ok(validated)
}

fn validate_probe(
    index: usize,
    probe: &ProbeConfig,
    default_interval: u64,
) -> Result<Probe, ConfigError> {
    let field = |key: &str| format!("probes[{index}].{key}");
    check_label(&field("link"), &probe.link)?;
    let name = match &probe.name {
        Some(name) => {
            check_label(&field("name"), name)?;
            name.clone()
        }
        None => format!("{}-{}", probe.kind.name(), probe.target),
    };
    let interval = match probe.interval_seconds {
        Some(seconds) => seconds_field(&field("interval_seconds"), seconds)?,
        None => default_interval as f64,
    };
    let timeout = match probe.timeout_seconds {
        Some(seconds) => seconds_field(&field("timeout_seconds"), seconds)?,
        None => (interval / 2.0).min(5.0),
    };
    if timeout >= interval {
        return Err(ConfigError::invalid(
            field("timeout_seconds"),
            timeout,
            format!("must be below the interval ({interval} s)"),
        ));
    }
    let only_for = |key: &str, set: bool, kind: ProbeKind| {
        if set && probe.kind != kind {
            Err(ConfigError::invalid(
                field(key),
                "(set)",
                format!("only applies to kind '{}'", kind.name()),
            ))
        } else {
            Ok(())
        }
    };
    only_for("count", probe.count.is_some(), ProbeKind::Icmp)?;
    only_for(
        "valid_status_codes",
        probe.valid_status_codes.is_some(),
        ProbeKind::Http,
    )?;
    only_for("body_regex", probe.body_regex.is_some(), ProbeKind::Http)?;
    only_for("ca_file", probe.ca_file.is_some(), ProbeKind::Http)?;
    only_for("expect_regex", probe.expect_regex.is_some(), ProbeKind::Tcp)?;
    only_for("server", probe.server.is_some(), ProbeKind::Dns)?;
    only_for("query_type", probe.query_type.is_some(), ProbeKind::Dns)?;
    if let Some(count) = probe.count
        && !(1..=MAX_COUNT).contains(&count)
    {
        return Err(ConfigError::invalid(
            field("count"),
            count,
            format!("must be between 1 and {MAX_COUNT}"),
        ));
    }
    let spec = match probe.kind {
        ProbeKind::Icmp => Spec::Icmp(
            icmp::IcmpSpec::parse(probe)
                .map_err(|why| ConfigError::invalid(field("target"), &probe.target, why))?,
        ),
        ProbeKind::Tcp => Spec::Tcp(
            tcp::TcpSpec::parse(probe)
                .map_err(|why| ConfigError::invalid(field("target"), &probe.target, why))?,
        ),
        ProbeKind::Http => Spec::Http(http::HttpSpec::parse(probe, &field)?),
        ProbeKind::Dns => Spec::Dns(dns::DnsSpec::parse(probe, &field)?),
    };
    Ok(Probe {
        name,
        link: probe.link.clone(),
        target: probe.target.clone(),
        interval: Duration::from_secs_f64(interval),
        timeout: Duration::from_secs_f64(timeout),
        spec,
    })
}

fn seconds_field(field: &str, seconds: f64) -> Result<f64, ConfigError> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(ConfigError::invalid(field, seconds, "must be above 0"));
    }
    if seconds > MAX_SECONDS {
        return Err(ConfigError::invalid(
            field,
            seconds,
            format!("must be at most {MAX_SECONDS}"),
        ));
    }
    Ok(seconds)
}

/// Names become label values: non-empty, printable, short.
fn check_label(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            field,
            value,
            "must be 1 to 128 printable characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(toml_text: &str) -> Result<Vec<Probe>, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            probes: Vec<ProbeConfig>,
            #[serde(default)]
            links: Vec<LinkConfig>,
        }
        let doc: Doc = toml::from_str(toml_text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        validate(&doc.probes, &doc.links, 10)
    }

    fn error(toml_text: &str) -> String {
        probes(toml_text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_kinds() {
        let parsed = probes(
            r#"
            [[probes]]
            kind = "icmp"
            target = "127.0.0.1"
            link = "uplink"
            [[probes]]
            kind = "tcp"
            target = "127.0.0.1:80"
            link = "uplink"
            interval_seconds = 2.5
            [[probes]]
            kind = "http"
            target = "http://127.0.0.1:8080/health"
            link = "uplink"
            [[probes]]
            kind = "dns"
            target = "example.lan"
            server = "127.0.0.1:5353"
            link = "uplink"
            "#,
        )
        .unwrap();
        assert_eq!(parsed[0].name, "icmp-127.0.0.1");
        assert_eq!(parsed[0].interval, Duration::from_secs(10));
        assert_eq!(parsed[0].timeout, Duration::from_secs(5));
        assert_eq!(parsed[1].timeout, Duration::from_secs_f64(1.25));
        assert!(matches!(parsed[2].spec, Spec::Http(_)));
        assert!(matches!(parsed[3].spec, Spec::Dns(_)));
    }

    #[test]
    fn errors_name_the_field() {
        let base = "[[probes]]\nlink = \"l\"\n";
        assert_eq!(
            error(&format!(
                "{base}kind = \"icmp\"\ntarget = \"127.0.0.1\"\ntimeout_seconds = 0"
            )),
            "probes[0].timeout_seconds: '0' must be above 0"
        );
        assert_eq!(
            error(&format!(
                "{base}kind = \"icmp\"\ntarget = \"127.0.0.1\"\ninterval_seconds = -1"
            )),
            "probes[0].interval_seconds: '-1' must be above 0"
        );
        assert_eq!(
            error(&format!(
                "{base}kind = \"icmp\"\ntarget = \"127.0.0.1\"\ninterval_seconds = 2\ntimeout_seconds = 2"
            )),
            "probes[0].timeout_seconds: '2' must be below the interval (2 s)"
        );
        assert_eq!(
            error(&format!("{base}kind = \"tcp\"\ntarget = \"127.0.0.1\"")),
            "probes[0].target: '127.0.0.1' must be host:port"
        );
        assert_eq!(
            error(&format!(
                "{base}kind = \"tcp\"\ntarget = \"127.0.0.1:1\"\ncount = 3"
            )),
            "probes[0].count: '(set)' only applies to kind 'icmp'"
        );
        assert_eq!(
            error(&format!(
                "{base}kind = \"icmp\"\ntarget = \"127.0.0.1\"\n{base}kind = \"icmp\"\ntarget = \"127.0.0.1\""
            )),
            "probes[1].name: 'icmp-127.0.0.1' is already used by probes[0] (set a distinct name)"
        );
        assert_eq!(
            error(&format!("{base}kind = \"dns\"\ntarget = \"a.lan\"")),
            "probes[0].server: '' is required for kind 'dns'"
        );
        assert_eq!(
            error(&format!("{base}kind = \"http\"\ntarget = \"ftp://x/\"")),
            "probes[0].target: 'ftp://x/' must be an http:// or https:// URL"
        );
        assert_eq!(
            error(
                "[[links]]\nname = \"a\"\ninterface = \"eth0\"\n[[links]]\nname = \"a\"\ninterface = \"eth1\""
            ),
            "links[1].name: 'a' is already used by links[0]"
        );
    }
}
