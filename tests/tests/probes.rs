//! The probe role end to end: a link of the test's own (a network namespace behind a veth
//! pair, RECIPES.md), responders of the test's own inside it, the real agent, Mosquitto and
//! the collector. No address outside 127.0.0.0/8, ::1 and the test's namespaces is used.
//!
//! Needs root (namespaces, nftables, raw sockets), as CI runs it; these tests never skip.
//! Assertions on histogram series at the collector are kept in their own test
//! (`icmp_histograms_reach_the_collector`), as they need the collector's histogram exposition;
//! everything else is checked on gauges and counters, or on the agent's messages directly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pantau_tests::{
    ChildGuard, Collector, Mosquitto, NetnsPair, TestDir, pantau_binary, poll_until,
    promtool_metric_lints, run_with_timeout, wait_until,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const SITE: &str = "gor-satria";
const LINK: &str = "gor-satria-uplink";

fn responder_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/responder.py")
}

/// Starts `responder.py ARGS` inside `ns` and waits until it listens.
fn responder(dir: &TestDir, ns: &NetnsPair, name: &str, args: &[&str]) -> ChildGuard {
    let mut command = ns.command("python3");
    command.arg(responder_script()).args(args);
    let mut guard = ChildGuard::spawn(name, &mut command, dir.path());
    guard.wait_for_log("listening", WAIT);
    guard
}

/// Writes an agent config with `body` (its `[[probes]]` and `[[links]]`) and starts the agent,
/// reporting every second to `broker_url`.
fn start_agent(dir: &TestDir, id: &str, broker_url: &str, body: &str) -> ChildGuard {
    let config = format!(
        "[agent]\nid = \"{id}\"\nsite = \"{SITE}\"\ninterval_seconds = 1\nstate_dir = \"{}\"\n\n\
         [mqtt]\nurl = \"{broker_url}\"\n\n{body}",
        dir.join(id).display()
    );
    let path = dir.write(format!("{id}.toml"), config);
    let mut command = Command::new(pantau_binary("pantau-agent"));
    command
        .arg("--config")
        .arg(&path)
        .env("PANTAU_LOG", "info,pantau_agent=debug");
    ChildGuard::spawn(&format!("agent-{id}"), &mut command, dir.path())
}

fn probe(kind: &str, name: &str, target: &str, extra: &str) -> String {
    format!(
        "[[probes]]\nkind = \"{kind}\"\nname = \"{name}\"\ntarget = \"{target}\"\nlink = \"{LINK}\"\n{extra}\n"
    )
}

/// A probe series at the collector, labels in exposition order.
fn series(name: &str, id: &str, probe: &str, target: &str, extra: &[(&str, &str)]) -> String {
    let mut labels: Vec<(&str, &str)> = vec![
        ("instance", id),
        ("site", SITE),
        ("link", LINK),
        ("probe", probe),
        ("target", target),
    ];
    labels.extend_from_slice(extra);
    labels.sort_unstable();
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!(r#"{k}="{v}""#))
        .collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// The value of `family` for `probe` in a metrics message (a histogram's `count` and `sum`).
fn message_value(message: &Value, family: &str, probe: &str) -> Option<Value> {
    let families = message["families"].as_array()?;
    let family = families.iter().find(|f| f["name"] == family)?;
    let sample = family["samples"]
        .as_array()?
        .iter()
        .find(|s| s["labels"]["probe"] == probe)?;
    Some(sample.clone())
}

fn events(collector: &Collector, id: &str) -> Vec<Value> {
    let (status, body) = collector.api(&format!("/api/v1/agents/{id}/events"));
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[test]
fn a_healthy_link_passes_every_probe_kind() {
    let dir = TestDir::new();
    let ns = NetnsPair::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let _tcp = responder(&dir, &ns, "tcp", &["tcp", "7000", "0"]);
    let _http = responder(&dir, &ns, "http", &["http", "8080", "0"]);
    let _dns = responder(&dir, &ns, "dns", &["dns", "5353"]);
    let (v4, v6) = (ns.far_v4.as_str(), ns.far_v6.as_str());
    let tcp_target = format!("{v4}:7000");
    let http_target = format!("http://{v4}:8080/health");
    let body = [
        probe("icmp", "gw-v4", v4, "count = 5\ninterval_seconds = 1"),
        probe("icmp", "gw-v6", v6, "count = 5\ninterval_seconds = 1"),
        probe("tcp", "tcp", &tcp_target, "interval_seconds = 1"),
        probe(
            "http",
            "site",
            &http_target,
            "interval_seconds = 1\nbody_regex = \"pantau ok\"",
        ),
        probe(
            "dns",
            "dns",
            "ok.registration.test",
            &format!("interval_seconds = 1\nserver = \"{v4}:5353\""),
        ),
        format!(
            "[[links]]\nname = \"{LINK}\"\ninterface = \"{}\"\ncapacity_mbps = 50\n",
            ns.near_interface
        ),
    ]
    .concat();
    let id = "gor-link-healthy";
    let agent = start_agent(&dir, id, &broker.url(), &body);
    for (name, target) in [
        ("gw-v4", v4),
        ("gw-v6", v6),
        ("tcp", tcp_target.as_str()),
        ("site", http_target.as_str()),
        ("dns", "ok.registration.test"),
    ] {
        let success = series("probe_success", id, name, target, &[]);
        collector.wait_for_sample(&success, WAIT, |v| v == 1.0);
    }
    for (name, target) in [("gw-v4", v4), ("gw-v6", v6)] {
        let max = series("pantau_probe_icmp_rtt_max_seconds", id, name, target, &[]);
        let rtt = collector.wait_for_sample(&max, WAIT, |_| true);
        // A veth hop answers in well under a millisecond; the bound only tells a measured
        // round trip from a timeout, with room for a loaded CI machine (7.7 ms was seen).
        assert!(rtt > 0.0 && rtt < 0.1, "{name}: max RTT {rtt} s");
        let loss = series("pantau_probe_icmp_packet_loss_ratio", id, name, target, &[]);
        assert_eq!(collector.sample(&loss), Some(0.0), "{name}");
    }
    let status = series("probe_http_status_code", id, "site", &http_target, &[]);
    assert_eq!(collector.sample(&status), Some(200.0));
    let rcode = series(
        "pantau_probe_dns_rcode",
        id,
        "dns",
        "ok.registration.test",
        &[],
    );
    assert_eq!(collector.sample(&rcode), Some(0.0));
    let answers = series(
        "probe_dns_answer_rrs",
        id,
        "dns",
        "ok.registration.test",
        &[],
    );
    assert_eq!(collector.sample(&answers), Some(1.0));
    let link_up = format!(r#"pantau_link_up{{instance="{id}",link="{LINK}",site="{SITE}"}}"#);
    collector.wait_for_sample(&link_up, WAIT, |v| v == 1.0);
    let capacity = format!(
        r#"pantau_link_capacity_bytes_per_second{{instance="{id}",link="{LINK}",site="{SITE}"}}"#
    );
    assert_eq!(collector.sample(&capacity), Some(50e6 / 8.0));

    // promtool is clean for every family the probes add.
    let text = collector.metrics();
    let lints = promtool_metric_lints(&text).expect("promtool parses /metrics");
    let ours: Vec<&String> = lints
        .iter()
        .filter(|line| {
            ["probe_", "pantau_probe_", "pantau_link_", "smokeping_"]
                .iter()
                .any(|prefix| line.starts_with(prefix))
        })
        .collect();
    assert!(ours.is_empty(), "promtool: {ours:?}");
    assert!(!agent.logs().contains("probe failed"), "{}", agent.logs());
}

#[test]
fn icmp_histograms_reach_the_collector() {
    // Needs the collector's histogram exposition (protocol v1 histograms).
    let dir = TestDir::new();
    let ns = NetnsPair::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let v4 = ns.far_v4.clone();
    let id = "gor-link-histogram";
    let _agent = start_agent(
        &dir,
        id,
        &broker.url(),
        &probe("icmp", "gw", &v4, "count = 5\ninterval_seconds = 1"),
    );
    let ip = [("ip", v4.as_str())];
    let count = series(
        "smokeping_response_duration_seconds_count",
        id,
        "gw",
        &v4,
        &ip,
    );
    collector.wait_for_sample(&count, WAIT, |v| v >= 5.0);
    let inf = series(
        "smokeping_response_duration_seconds_bucket",
        id,
        "gw",
        &v4,
        &[("ip", v4.as_str()), ("le", "+Inf")],
    );
    assert!(collector.sample(&inf).is_some_and(|v| v >= 5.0));
    let requests = series("smokeping_requests_total", id, "gw", &v4, &ip);
    assert!(collector.sample(&requests).is_some_and(|v| v >= 5.0));
    let lints = promtool_metric_lints(&collector.metrics()).expect("promtool parses /metrics");
    assert!(
        lints.iter().all(|line| !line.starts_with("smokeping_")),
        "{lints:?}"
    );
}

#[test]
fn loss_matches_what_nftables_dropped() {
    let dir = TestDir::new();
    let ns = NetnsPair::new();
    let broker = Mosquitto::start();
    ns.exec_ok(&["nft", "add", "table", "inet", "t"]);
    ns.exec_ok(&[
        "nft",
        "add",
        "chain",
        "inet",
        "t",
        "in",
        "{ type filter hook input priority 0 ; }",
    ]);
    ns.exec_ok(&[
        "nft",
        "add",
        "rule",
        "inet",
        "t",
        "in",
        "icmp",
        "type",
        "echo-request",
        "numgen",
        "random",
        "mod",
        "10",
        "<",
        "3",
        "counter",
        "drop",
    ]);
    let v4 = ns.far_v4.clone();
    let mut messages = broker.subscribe(&format!("pantau/v1/{SITE}/+/metrics"));
    // One burst of 200 requests (20 ms apart); the next one is 60 s away.
    let _agent = start_agent(
        &dir,
        "gor-link-loss",
        &broker.url(),
        &probe(
            "icmp",
            "gw",
            &v4,
            "count = 200\ninterval_seconds = 60\ntimeout_seconds = 1",
        ),
    );
    let deadline = Instant::now() + WAIT;
    let (requests, replies) = loop {
        assert!(Instant::now() < deadline, "no burst of 200 reported");
        let message = messages.recv(WAIT);
        let Ok(message) = serde_json::from_slice::<Value>(&message.payload) else {
            continue;
        };
        let Some(requests) = message_value(&message, "smokeping_requests_total", "gw") else {
            continue;
        };
        let histogram = message_value(&message, "smokeping_response_duration_seconds", "gw")
            .expect("the histogram comes with the counter");
        break (
            requests["value"].as_f64().unwrap_or(0.0) as i64,
            histogram["count"].as_i64().unwrap_or(0),
        );
    };
    let ruleset = ns.exec_ok(&["nft", "list", "chain", "inet", "t", "in"]);
    let dropped: i64 = ruleset
        .split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {ruleset}"));
    let lost = requests - replies;
    eprintln!("requests {requests}, replies {replies}, lost {lost}, nftables dropped {dropped}");
    assert!(requests >= 200, "{requests}");
    assert!(
        (lost - dropped).abs() <= 2,
        "agent lost {lost}, nftables dropped {dropped}"
    );
    assert!(dropped > 20, "the rule drops about 30%: {dropped}");
}

#[test]
fn latency_of_200_ms_is_reported_as_such() {
    let dir = TestDir::new();
    let ns = NetnsPair::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    ns.sysctl("net.ipv4.icmp_echo_ignore_all", "1");
    let _icmp = responder(&dir, &ns, "icmp", &["icmp", "0.2"]);
    let _tcp = responder(&dir, &ns, "tcp", &["tcp", "7000", "0.2"]);
    let _http = responder(&dir, &ns, "http", &["http", "8080", "0.2"]);
    let v4 = ns.far_v4.clone();
    let tcp_target = format!("{v4}:7000");
    let http_target = format!("http://{v4}:8080/");
    let id = "gor-link-slow";
    let body = [
        probe(
            "icmp",
            "gw",
            &v4,
            "count = 3\ninterval_seconds = 2\ntimeout_seconds = 1",
        ),
        probe(
            "tcp",
            "banner",
            &tcp_target,
            "interval_seconds = 2\ntimeout_seconds = 1\nexpect_regex = \"^ready\"",
        ),
        probe(
            "http",
            "site",
            &http_target,
            "interval_seconds = 2\ntimeout_seconds = 1",
        ),
    ]
    .concat();
    let _agent = start_agent(&dir, id, &broker.url(), &body);
    let within = |v: f64| (0.16..=0.24).contains(&v);
    let rtt = series(
        "probe_icmp_duration_seconds",
        id,
        "gw",
        &v4,
        &[("phase", "rtt")],
    );
    let icmp = collector.wait_for_sample(&rtt, WAIT, |_| true);
    assert!(within(icmp), "ICMP RTT {icmp} s");
    let min = series("pantau_probe_icmp_rtt_min_seconds", id, "gw", &v4, &[]);
    assert!(collector.sample(&min).is_some_and(within));
    let tcp = series("probe_duration_seconds", id, "banner", &tcp_target, &[]);
    let tcp = collector.wait_for_sample(&tcp, WAIT, |_| true);
    assert!(within(tcp), "TCP banner after {tcp} s");
    let processing = series(
        "probe_http_duration_seconds",
        id,
        "site",
        &http_target,
        &[("phase", "processing")],
    );
    let http = collector.wait_for_sample(&processing, WAIT, |_| true);
    assert!(within(http), "HTTP processing {http} s");
    for (probe, target) in [
        ("gw", v4.as_str()),
        ("banner", &tcp_target),
        ("site", &http_target),
    ] {
        let success = series("probe_success", id, probe, target, &[]);
        assert_eq!(collector.sample(&success), Some(1.0), "{probe}");
    }
}

/// `notAfter` of a PEM certificate in Unix seconds, as openssl reads it.
fn not_after(cert: &Path) -> i64 {
    let output = run_with_timeout(
        Command::new("openssl")
            .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
            .arg(cert),
        b"",
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let date = text.trim().trim_start_matches("notAfter=");
    let output = run_with_timeout(
        Command::new("date").args(["-u", "-d", date, "+%s"]),
        b"",
        Duration::from_secs(20),
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("cannot read the expiry of {}: {text}", cert.display()))
}

#[test]
fn https_expiry_and_nxdomain() {
    let dir = TestDir::new();
    let ns = NetnsPair::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let v4 = ns.far_v4.clone();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let output = run_with_timeout(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "17", "-subj", "/CN=gor-satria-far"])
            .args(["-addext", &format!("subjectAltName=IP:{v4}")])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        b"",
        Duration::from_secs(30),
    );
    assert!(output.status.success(), "{output:?}");
    let expiry = not_after(&cert);
    let cert_arg = cert.display().to_string();
    let key_arg = key.display().to_string();
    let _https = responder(
        &dir,
        &ns,
        "https",
        &["http", "8443", "0", &cert_arg, &key_arg],
    );
    let _dns = responder(&dir, &ns, "dns", &["dns", "5353"]);
    let https_target = format!("https://{v4}:8443/");
    let id = "gor-link-tls";
    let body = [
        probe(
            "http",
            "site",
            &https_target,
            &format!("interval_seconds = 1\nca_file = \"{cert_arg}\""),
        ),
        probe(
            "dns",
            "missing",
            "missing.registration.test",
            &format!("interval_seconds = 1\nserver = \"{v4}:5353\""),
        ),
    ]
    .concat();
    let agent = start_agent(&dir, id, &broker.url(), &body);
    let success = series("probe_success", id, "site", &https_target, &[]);
    collector.wait_for_sample(&success, WAIT, |v| v == 1.0);
    let expiry_series = series(
        "probe_ssl_earliest_cert_expiry",
        id,
        "site",
        &https_target,
        &[],
    );
    assert_eq!(collector.sample(&expiry_series), Some(expiry as f64));
    let ssl = series("probe_http_ssl", id, "site", &https_target, &[]);
    assert_eq!(collector.sample(&ssl), Some(1.0));
    let tls_phase = series(
        "probe_http_duration_seconds",
        id,
        "site",
        &https_target,
        &[("phase", "tls")],
    );
    assert!(collector.sample(&tls_phase).is_some());

    let target = "missing.registration.test";
    let rcode = series("pantau_probe_dns_rcode", id, "missing", target, &[]);
    collector.wait_for_sample(&rcode, WAIT, |v| v == 3.0);
    let success = series("probe_success", id, "missing", target, &[]);
    assert_eq!(collector.sample(&success), Some(0.0));
    let failed = wait_until("the probe_failed event", WAIT, || {
        events(&collector, id)
            .into_iter()
            .find(|e| e["kind"] == "probe_failed" && e["labels"]["probe"] == "missing")
    });
    assert!(
        failed["message"]
            .as_str()
            .unwrap_or_default()
            .contains("NXDOMAIN"),
        "{failed}\n{}",
        agent.logs()
    );
}

#[test]
fn a_cut_is_seen_within_an_interval_and_as_events_within_two_seconds() {
    let dir = TestDir::new();
    let ns = NetnsPair::new();
    let broker = Mosquitto::start();
    let collector = Collector::with_broker(&dir, &broker);
    let v4 = ns.far_v4.clone();
    let id = "gor-link-cut";
    let body = [
        probe(
            "icmp",
            "gw",
            &v4,
            "count = 3\ninterval_seconds = 1\ntimeout_seconds = 0.5",
        ),
        format!(
            "[[links]]\nname = \"{LINK}\"\ninterface = \"{}\"\n",
            ns.near_interface
        ),
    ]
    .concat();
    let agent = start_agent(&dir, id, &broker.url(), &body);
    let success = series("probe_success", id, "gw", &v4, &[]);
    collector.wait_for_sample(&success, WAIT, |v| v == 1.0);

    let cut_ms = unix_ms();
    let cut = Instant::now();
    ns.link_down();
    let down = poll_until(Duration::from_secs(2), || {
        events(&collector, id)
            .into_iter()
            .find(|e| e["kind"] == "link_down")
    })
    .unwrap_or_else(|| panic!("no link_down event within 2 s\n{}", agent.logs()));
    eprintln!("link_down at the collector after {:?}", cut.elapsed());
    assert_eq!(down["labels"]["link"], LINK, "{down}");
    assert_eq!(down["severity"], "critical");
    let changed: i64 = down["labels"]["changed_ms"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("changed_ms label");
    assert!(
        (cut_ms..cut_ms + 1000).contains(&changed),
        "changed_ms {changed}, cut at {cut_ms}"
    );
    // One probe interval (1 s) plus the run's timeout and the next report.
    collector.wait_for_sample(&success, Duration::from_secs(3), |v| v == 0.0);
    eprintln!("probe_success 0 after {:?}", cut.elapsed());
    let link_up = format!(r#"pantau_link_up{{instance="{id}",link="{LINK}",site="{SITE}"}}"#);
    collector.wait_for_sample(&link_up, Duration::from_secs(3), |v| v == 0.0);

    let restored = Instant::now();
    ns.link_up();
    poll_until(Duration::from_secs(2), || {
        events(&collector, id)
            .into_iter()
            .find(|e| e["kind"] == "link_up")
    })
    .unwrap_or_else(|| panic!("no link_up event within 2 s\n{}", agent.logs()));
    eprintln!("link_up at the collector after {:?}", restored.elapsed());
    collector.wait_for_sample(&success, WAIT, |v| v == 1.0);
}

/// Starts the agent inside `ns` without CAP_NET_RAW, against a Mosquitto inside `ns`.
fn unprivileged_agent(dir: &TestDir, ns: &NetnsPair, id: &str) -> ChildGuard {
    let port = "18830";
    let config = format!(
        "[agent]\nid = \"{id}\"\nsite = \"{SITE}\"\ninterval_seconds = 1\nstate_dir = \"{}\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n\n{}",
        dir.join(id).display(),
        probe(
            "icmp",
            "loopback",
            "127.0.0.1",
            "count = 3\ninterval_seconds = 1"
        )
    );
    let config = dir.write(format!("{id}.toml"), config);
    let mut command = ns.command("setpriv");
    command
        .args(["--inh-caps=-net_raw", "--bounding-set=-net_raw", "--"])
        .arg(pantau_binary("pantau-agent"))
        .arg("--config")
        .arg(&config)
        .env("PANTAU_LOG", "info,pantau_agent=debug");
    ChildGuard::spawn(&format!("agent-{id}"), &mut command, dir.path())
}

#[test]
fn unprivileged_icmp_works_and_without_it_the_agent_names_both_fixes() {
    let dir = TestDir::new();
    let ns = NetnsPair::new();
    let mut mosquitto = ns.command("mosquitto");
    mosquitto.arg("-c").arg(dir.write(
        "mosquitto-ns.conf",
        "listener 18830 127.0.0.1\nallow_anonymous true\npersistence false\n",
    ));
    let mut broker = ChildGuard::spawn("mosquitto-ns", &mut mosquitto, dir.path());
    broker.wait_for_log("running", WAIT);

    // Both closed: no raw sockets, no unprivileged ICMP.
    ns.sysctl("net.ipv4.ping_group_range", "1 0");
    let mut refused = unprivileged_agent(&dir, &ns, "gor-link-nocap");
    let status = refused
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("the agent kept running\n{}", refused.logs()));
    assert!(!status.success(), "{status}");
    let logs = refused.logs();
    assert!(logs.contains("net.ipv4.ping_group_range"), "{logs}");
    assert!(logs.contains("CAP_NET_RAW"), "{logs}");

    // ping_group_range open: ICMP works without CAP_NET_RAW.
    ns.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    let mut agent = unprivileged_agent(&dir, &ns, "gor-link-dgram");
    agent.wait_for_log("mode=\"unprivileged\"", WAIT);
    let mut subscriber = ns.command("mosquitto_sub");
    subscriber.args([
        "-p",
        "18830",
        "-h",
        "127.0.0.1",
        "-t",
        "pantau/v1/+/+/metrics",
        "-C",
        "4",
        "-W",
        "20",
    ]);
    let output = run_with_timeout(&mut subscriber, b"", WAIT);
    let text = String::from_utf8_lossy(&output.stdout);
    let succeeded = text.lines().any(|line| {
        serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|m| message_value(&m, "probe_success", "loopback"))
            .is_some_and(|s| s["value"] == 1.0)
    });
    assert!(succeeded, "{text}\n{}", agent.logs());
}
