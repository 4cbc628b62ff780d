//! Switches and routers over SNMP: Debian's snmpd on a free loopback port, polled by an agent
//! over v2c and v3 (SHA + AES). The interface series for `lo` reach the collector and agree
//! with `snmpget` on the same OIDs; names, types and labels agree with Debian's
//! prometheus-snmp-exporter; a link going down is an event at once; a wrong community, a wrong
//! v3 auth or privacy password and a silent port are each reported as such.

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::time::Duration;

use pantau_tests::{
    Agent, Collector, NetnsPair, SNMP_COMMUNITY, SNMP_V3_AUTH_PASSWORD, SNMP_V3_PRIVACY_PASSWORD,
    SNMP_V3_USER, SnmpExporter, Snmpd, TestDir, promtool_metric_lints,
};

const WAIT: Duration = Duration::from_secs(40);
const SITE: &str = "dc";
/// The IF-MIB families the agent exports, by snmp_exporter's names.
const FAMILIES: [&str; 8] = [
    "ifAdminStatus",
    "ifHCInOctets",
    "ifHCOutOctets",
    "ifInErrors",
    "ifOutErrors",
    "ifOperStatus",
    "ifHighSpeed",
    "sysUpTime",
];

fn v2c_table(name: &str, target: &str, community_file: &str, extra: &str) -> String {
    format!(
        "[[snmp]]\nname = \"{name}\"\ntarget = \"{target}\"\nversion = \"2c\"\n\
         community_file = \"{community_file}\"\ntimeout_seconds = 1\nretries = 0\n{extra}\n"
    )
}

fn v3_table(
    dir: &TestDir,
    name: &str,
    target: &str,
    (auth_password, privacy_password): (&str, &str),
    extra: &str,
) -> String {
    let auth = dir.write(format!("{name}.auth"), format!("{auth_password}\n"));
    let privacy = dir.write(format!("{name}.priv"), format!("{privacy_password}\n"));
    format!(
        "[[snmp]]\nname = \"{name}\"\ntarget = \"{target}\"\nversion = \"3\"\n\
         username = \"{SNMP_V3_USER}\"\nauth_protocol = \"SHA\"\nauth_password_file = \"{}\"\n\
         privacy_protocol = \"AES\"\nprivacy_password_file = \"{}\"\n\
         timeout_seconds = 1\nretries = 0\n{extra}\n",
        auth.display(),
        privacy.display()
    )
}

fn agent(dir: &TestDir, collector: &Collector, id: &str, tables: &str) -> Agent {
    let config = dir.write(
        format!("{id}.toml"),
        format!("[agent]\nid = \"{id}\"\nsite = \"{SITE}\"\n\n{tables}"),
    );
    Agent::start_config(
        dir,
        &config.display().to_string(),
        id,
        SITE,
        &collector.broker_url(),
        1,
        &[],
    )
}

fn community_file(dir: &TestDir, community: &str) -> String {
    dir.write(format!("community-{community}"), format!("{community}\n"))
        .display()
        .to_string()
}

/// `name{device=..,ifAlias="",ifDescr="lo",ifIndex="1",ifName="lo",instance=..,site=..}`.
fn lo_series(name: &str, device: &str, id: &str) -> String {
    format!(
        r#"{name}{{device="{device}",ifAlias="",ifDescr="lo",ifIndex="1",ifName="lo",instance="{id}",site="{SITE}"}}"#
    )
}

/// Families in an exposition: name -> (type, label names, label sets), for `names`.
fn shapes(
    text: &str,
    names: &[&str],
    ignore: &[&str],
) -> BTreeMap<String, (String, BTreeSet<String>, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next())
                && names.contains(&name)
            {
                out.entry(name.to_owned()).or_default().0 = kind.to_owned();
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if !names.contains(&name) {
            continue;
        }
        let labels = line
            .split_once('{')
            .and_then(|(_, rest)| rest.rsplit_once('}'))
            .map_or("", |(labels, _)| labels);
        let mut kept = Vec::new();
        let entry = out.entry(name.to_owned()).or_default();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
            if ignore.contains(&key) {
                continue;
            }
            entry.1.insert(key.to_owned());
            kept.push(format!("{key}={}", value.trim_end_matches('"')));
        }
        entry.2.insert(kept.join(","));
    }
    out
}

#[test]
fn lo_over_v2c_and_v3_matches_snmpget() {
    let dir = TestDir::new();
    let snmpd = Snmpd::start();
    let collector = Collector::embedded(&dir);
    let id = "gor-switch-poller";
    let tables = format!(
        "{}{}",
        v2c_table(
            "sw-v2c",
            &snmpd.address(),
            &community_file(&dir, SNMP_COMMUNITY),
            "interfaces = [\"lo\"]"
        ),
        v3_table(
            &dir,
            "sw-v3",
            &snmpd.address(),
            (SNMP_V3_AUTH_PASSWORD, SNMP_V3_PRIVACY_PASSWORD),
            "interfaces = [\"lo\"]"
        ),
    );
    let agent = agent(&dir, &collector, id, &tables);
    for device in ["sw-v2c", "sw-v3"] {
        let get = |oid: &str| {
            if device == "sw-v2c" {
                snmpd.get_v2c(oid)
            } else {
                snmpd.get_v3(oid)
            }
        };
        // Counters and uptime only grow: the agent's value lies between a reading taken
        // before the poll it came from and one taken after.
        for (name, oid) in [
            ("ifHCInOctets", "1.3.6.1.2.1.31.1.1.1.6.1"),
            ("ifHCOutOctets", "1.3.6.1.2.1.31.1.1.1.10.1"),
            ("ifInErrors", "1.3.6.1.2.1.2.2.1.14.1"),
            ("ifOutErrors", "1.3.6.1.2.1.2.2.1.20.1"),
            ("sysUpTime", "1.3.6.1.2.1.1.3.0"),
        ] {
            let series = if name == "sysUpTime" {
                format!(r#"sysUpTime{{device="{device}",instance="{id}",site="{SITE}"}}"#)
            } else {
                lo_series(name, device, id)
            };
            let before = get(oid);
            let value = collector.wait_for_sample(&series, WAIT, |v| v >= before);
            let after = get(oid);
            assert!(
                value <= after,
                "{series}: {value} not within snmpget's {before}..={after}\n{}",
                agent.logs()
            );
        }
        for (name, oid) in [
            ("ifAdminStatus", "1.3.6.1.2.1.2.2.1.7.1"),
            ("ifOperStatus", "1.3.6.1.2.1.2.2.1.8.1"),
            ("ifHighSpeed", "1.3.6.1.2.1.31.1.1.1.15.1"),
        ] {
            assert_eq!(
                collector.sample(&lo_series(name, device, id)),
                Some(get(oid)),
                "{name} of {device}"
            );
        }
        assert_eq!(
            collector.sample(&format!(
                r#"pantau_device_up{{device="{device}",instance="{id}",kind="snmp",site="{SITE}"}}"#
            )),
            Some(1.0)
        );
    }
    // `interfaces = ["lo"]` keeps the other interfaces out.
    let text = collector.metrics();
    let others: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("ifHCInOctets{") && !line.contains(r#"ifName="lo""#))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert!(
        !text.contains("pantau_device_poll_errors_total{device=\"sw-"),
        "no poll failed\n{text}"
    );
}

#[test]
fn names_types_and_labels_match_snmp_exporter() {
    let dir = TestDir::new();
    let snmpd = Snmpd::start();
    let exporter = SnmpExporter::start();
    let collector = Collector::embedded(&dir);
    let id = "gor-switch-parity";
    let _agent = agent(
        &dir,
        &collector,
        id,
        &v2c_table("sw1", &snmpd.address(), &community_file(&dir, "public"), ""),
    );
    collector.wait_for_sample(&lo_series("ifOperStatus", "sw1", id), WAIT, |v| v == 1.0);
    let ours = shapes(
        &collector.metrics(),
        &FAMILIES,
        &["device", "instance", "site"],
    );
    let reference = shapes(&exporter.scrape_if_mib(&snmpd.address()), &FAMILIES, &[]);
    for name in FAMILIES {
        let (our_type, our_labels, our_sets) =
            ours.get(name).unwrap_or_else(|| panic!("{name} missing"));
        let (their_type, their_labels, their_sets) = reference
            .get(name)
            .unwrap_or_else(|| panic!("snmp_exporter has no {name}"));
        assert_eq!(our_type, their_type, "type of {name}");
        assert_eq!(our_labels, their_labels, "label names of {name}");
        // Same interfaces with the same lookups (values differ: counters move).
        assert_eq!(our_sets, their_sets, "label values of {name}");
    }
    // promtool finds nothing in our families that it does not find in snmp_exporter's own
    // (camelCase names and counters without _total are snmp_exporter's, kept on purpose).
    let lints = |text: &str| -> BTreeSet<String> {
        promtool_metric_lints(text)
            .expect("promtool parses the exposition")
            .into_iter()
            .filter(|line| {
                FAMILIES
                    .iter()
                    .any(|name| line.starts_with(&format!("{name} ")))
            })
            .collect()
    };
    let our_lints = lints(&collector.metrics());
    let their_lints = lints(&exporter.scrape_if_mib(&snmpd.address()));
    assert!(
        our_lints.is_subset(&their_lints),
        "ours {our_lints:?}\nsnmp_exporter {their_lints:?}"
    );
}

#[test]
fn a_link_going_down_is_an_event_at_once() {
    let dir = TestDir::new();
    let ns = NetnsPair::new();
    let snmpd = Snmpd::start();
    let collector = Collector::embedded(&dir);
    let id = "gor-switch-link";
    let interface = ns.near_interface.clone();
    let _agent = agent(
        &dir,
        &collector,
        id,
        &v2c_table(
            "sw-link",
            &snmpd.address(),
            &community_file(&dir, SNMP_COMMUNITY),
            &format!("interfaces = [\"{interface}\"]"),
        ),
    );
    let up_line = |text: &str| -> Option<f64> {
        text.lines()
            .find(|line| {
                line.starts_with("ifOperStatus{device=\"sw-link\"")
                    && line.contains(&format!("ifName=\"{interface}\""))
            })
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    };
    let found =
        pantau_tests::poll_until(WAIT, || up_line(&collector.metrics()).filter(|v| *v == 1.0));
    assert!(
        found.is_some(),
        "{interface} never up\n{}",
        collector.metrics()
    );
    ns.link_down();
    let down =
        pantau_tests::poll_until(WAIT, || up_line(&collector.metrics()).filter(|v| *v != 1.0));
    assert!(
        down.is_some(),
        "{interface} never down\n{}",
        collector.metrics()
    );
    let body = collector.wait_for_api(&format!("/api/v1/agents/{id}/events"), 200, WAIT, |body| {
        body.to_string().contains("snmp_interface_down")
    });
    assert!(body.to_string().contains(&interface), "{body}");
    drop(snmpd);
}

#[test]
fn wrong_credentials_and_silence_are_each_reported_as_such() {
    let dir = TestDir::new();
    let snmpd = Snmpd::start();
    let collector = Collector::embedded(&dir);
    // Bound and never read: requests to it get no answer and no ICMP error.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind a silent UDP socket");
    let silent_address = silent.local_addr().expect("its address").to_string();
    let id = "gor-switch-faults";
    let tables = format!(
        "{}{}{}{}",
        v2c_table(
            "sw-community",
            &snmpd.address(),
            &community_file(&dir, "salah"),
            ""
        ),
        v3_table(
            &dir,
            "sw-password",
            &snmpd.address(),
            ("salah-sandi", SNMP_V3_PRIVACY_PASSWORD),
            ""
        ),
        v3_table(
            &dir,
            "sw-privacy",
            &snmpd.address(),
            (SNMP_V3_AUTH_PASSWORD, "salah-rahasia"),
            ""
        ),
        v2c_table(
            "sw-silent",
            &silent_address,
            &community_file(&dir, SNMP_COMMUNITY),
            ""
        ),
    );
    let mut agent = agent(&dir, &collector, id, &tables);
    for (device, reason) in [
        ("sw-community", "wrong_community"),
        ("sw-password", "auth_failed"),
        ("sw-privacy", "privacy_failed"),
        ("sw-silent", "timeout"),
    ] {
        collector.wait_for_sample(
            &format!(
                r#"pantau_device_poll_errors_total{{device="{device}",instance="{id}",kind="snmp",reason="{reason}",site="{SITE}"}}"#
            ),
            WAIT,
            |v| v >= 1.0,
        );
        assert_eq!(
            collector.sample(&format!(
                r#"pantau_device_up{{device="{device}",instance="{id}",kind="snmp",site="{SITE}"}}"#
            )),
            Some(0.0),
            "{device}"
        );
    }
    let text = collector.metrics();
    assert!(
        !text.contains("ifHCInOctets{"),
        "no rows without an answer\n{text}"
    );
    let guard = agent.guard();
    guard.wait_for_log("the community is wrong", WAIT);
    guard.wait_for_log("refused the SNMPv3 authentication of user 'pantau'", WAIT);
    guard.wait_for_log("cannot read our encrypted requests for user 'pantau'", WAIT);
    let body = collector.wait_for_api(&format!("/api/v1/agents/{id}/events"), 200, WAIT, |body| {
        let text = body.to_string();
        ["sw-community", "sw-password", "sw-privacy", "sw-silent"]
            .iter()
            .all(|device| text.contains(device))
    });
    assert!(body.to_string().contains("device_unreachable"), "{body}");
    drop(silent);
    drop(snmpd);
}
