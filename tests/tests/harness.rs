//! Smoke test of the harness itself, against the real services: if one of these fails, the
//! end-to-end tests built on the helper would not mean what they say.

use std::fs;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use pantau_tests::{
    Alertmanager, ChildGuard, Mosquitto, Prometheus, Signal, TestDir, WebhookReceiver, free_port,
    http_get, http_post, http_post_json, in_ci, pantau_binary, poll_until, promtool_check_metrics,
    promtool_check_rules, promtool_test_rules, run_with_timeout, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn mosquitto_round_trip_of_a_binary_payload() {
    let broker = Mosquitto::start();
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));
    let payload = b"pantau\0\xff\n binary";

    let mut subscription = broker.subscribe("harness/+/live");
    broker.mosquitto_pub("harness/a/live", payload, false);
    let message = subscription.recv(TIMEOUT);
    assert_eq!(message.topic, "harness/a/live");
    assert_eq!(message.payload, payload);
    // One publish, one message: nothing else must be waiting.
    assert_eq!(subscription.try_recv(Duration::from_millis(300)), None);

    broker.mosquitto_pub("harness/retained", payload, true);
    assert_eq!(broker.subscribe_one("harness/retained", TIMEOUT), payload);
    broker.mosquitto_pub("harness/empty", b"", false);
}

#[test]
fn mosquitto_kill_then_restart_on_the_same_port() {
    let mut broker = Mosquitto::start();
    let port = broker.port();
    broker.mosquitto_pub("harness/retained", b"before", true);

    broker.kill();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts after SIGKILL"
    );

    broker.restart();
    assert_eq!(broker.port(), port);
    // Without persistence a restart is a fresh broker: the retained message is gone.
    let mut subscription = broker.subscribe("harness/retained");
    assert_eq!(
        subscription.try_recv(Duration::from_millis(500)),
        None,
        "{}",
        broker.logs()
    );
    broker.mosquitto_pub("harness/retained", b"after", true);
    assert_eq!(subscription.recv(TIMEOUT).payload, b"after");

    // A restart of a running broker (SIGTERM first) works too, and again forgets.
    broker.restart();
    assert_eq!(broker.port(), port);
    let mut fresh = broker.subscribe("harness/retained");
    assert_eq!(
        fresh.try_recv(Duration::from_millis(500)),
        None,
        "{}",
        broker.logs()
    );
}

#[test]
fn mosquitto_persistence_keeps_a_retained_message_across_sigkill() {
    let mut broker = Mosquitto::builder().persistence(true).start();
    assert!(broker.persistence_file().is_some());
    let payload = b"retained-across-kill\0\x01";
    broker.mosquitto_pub("harness/persisted", payload, true);
    broker.wait_persisted(payload, TIMEOUT);

    broker.kill();
    broker.restart();
    assert_eq!(
        broker.subscribe_one("harness/persisted", TIMEOUT),
        payload,
        "{}",
        broker.logs()
    );
}

#[test]
fn prometheus_scrapes_itself_and_accepts_remote_write() {
    let started = Instant::now();
    let prometheus = Prometheus::builder()
        .scrape_self()
        .out_of_order_time_window("2h")
        .start();
    let ready_after = started.elapsed();

    let up = prometheus.wait_for_query("up", Duration::from_secs(10));
    let scraped_after = started.elapsed();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["metric"]["job"], "prometheus");
    assert_eq!(
        up[0]["metric"]["instance"],
        format!("127.0.0.1:{}", prometheus.port())
    );
    assert_eq!(up[0]["value"][1], "1");
    eprintln!(
        "prometheus ready after {ready_after:?}, first scrape visible after {scraped_after:?}"
    );

    // The receiver is enabled: an empty body is a client error, not 404 (disabled).
    let (status, body) =
        http_post(&prometheus.remote_write_url(), &[], b"").expect("POST remote write");
    assert_eq!(status, 400, "{body}");

    // Labels with quotes and braces survive the query encoding.
    let none = prometheus.query(r#"up{job="no such job",instance=~".+"}"#);
    assert_eq!(none, json!([]));

    let (status, _) = http_get(&format!("{}/no/such/page", prometheus.url())).expect("GET");
    assert_eq!(status, 404);
}

#[test]
fn alertmanager_delivers_a_posted_alert_to_the_webhook() {
    let webhook = WebhookReceiver::start();
    let alertmanager = Alertmanager::start(&webhook.url());
    let started = Instant::now();
    let alert = json!([{
        "labels": {"alertname": "HarnessSmoke", "severity": "test"},
        "annotations": {"summary": "posted by the harness smoke test"},
    }]);
    let (status, body) = http_post_json(&format!("{}/api/v2/alerts", alertmanager.url()), &alert)
        .expect("POST alert");
    assert_eq!(status, 200, "{body}");

    let received = webhook.wait_for(1, TIMEOUT);
    eprintln!("webhook notified {:?} after the POST", started.elapsed());
    let notification = &received[0];
    assert_eq!(notification["status"], "firing", "{notification}");
    assert_eq!(
        notification["alerts"][0]["labels"]["alertname"],
        "HarnessSmoke"
    );
    assert_eq!(
        notification["alerts"][0]["annotations"]["summary"],
        "posted by the harness smoke test"
    );
}

#[test]
fn prometheus_rule_fires_through_alertmanager_to_the_webhook() {
    let dir = TestDir::new();
    let rules = dir.write(
        "rules.yml",
        "groups:
  - name: harness
    rules:
      - alert: HarnessAlwaysFiring
        expr: vector(1) > 0
        labels:
          severity: test
",
    );
    promtool_check_rules(&rules).expect("valid rule file");

    let webhook = WebhookReceiver::start();
    let alertmanager = Alertmanager::start(&webhook.url());
    let prometheus = Prometheus::builder()
        .rule_file(&rules)
        .alertmanager(&alertmanager)
        .start();
    let started = Instant::now();
    let received = webhook.wait_for(1, Duration::from_secs(20));
    eprintln!("rule to webhook took {:?}", started.elapsed());
    assert_eq!(
        received[0]["alerts"][0]["labels"]["alertname"],
        "HarnessAlwaysFiring",
        "{}",
        prometheus.logs()
    );
}

#[test]
fn promtool_checks_metrics_and_rules() {
    promtool_check_metrics("# HELP x_total Things seen.\n# TYPE x_total counter\nx_total 1\n")
        .expect("a valid exposition");

    let lint =
        promtool_check_metrics("# TYPE x counter\nx 1\n").expect_err("counter without _total");
    assert!(
        lint.contains(r#"x counter metrics should have "_total" suffix"#),
        "{lint}"
    );
    assert!(lint.contains("exit status: 3"), "{lint}");

    let parse = promtool_check_metrics("x{ 1\n").expect_err("not an exposition");
    assert!(parse.contains("text format parsing error"), "{parse}");

    let dir = TestDir::new();
    let bad = dir.write(
        "bad.yml",
        "groups:\n  - name: bad\n    rules:\n      - alert: Bad\n        expr: rate(x[\n",
    );
    let error = promtool_check_rules(&bad).expect_err("broken expression");
    assert!(error.contains("bad.yml"), "{error}");

    dir.write(
        "rules.yml",
        "groups:
  - name: harness
    rules:
      - alert: Down
        expr: up == 0
        for: 1m
",
    );
    let passing = dir.write(
        "pass.yml",
        "rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job=\"a\"}'
        values: '0x5'
    alert_rule_test:
      - eval_time: 3m
        alertname: Down
        exp_alerts:
          - exp_labels: {job: a}
",
    );
    promtool_test_rules(&passing).expect("passing rule test");
    let failing = dir.write(
        "fail.yml",
        fs::read_to_string(&passing)
            .unwrap()
            .replace("'0x5'", "'1x5'"),
    );
    let error = promtool_test_rules(&failing).expect_err("the alert does not fire on up == 1");
    assert!(error.contains("Down"), "{error}");
}

#[test]
fn http_get_reports_a_closed_port_as_an_error() {
    let port = free_port();
    let error = http_get(&format!("http://127.0.0.1:{port}/")).expect_err("nothing listens");
    eprintln!("http_get on a closed port: {error}");
    assert!(error.contains(&port.to_string()), "{error}");
    assert!(
        error.to_lowercase().contains("connection refused"),
        "{error}"
    );
}

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
}

#[test]
fn test_dir_writes_nested_files() {
    let dir = TestDir::new();
    let path = dir.write("a/b/config.toml", "x = 1\n");
    assert_eq!(path, dir.join("a/b/config.toml"));
    assert!(path.starts_with(dir.path()));
    assert_eq!(fs::read_to_string(&path).unwrap(), "x = 1\n");
    let kept = dir.path().to_path_buf();
    drop(dir);
    assert!(!kept.exists());
}

#[test]
fn child_guard_captures_output_signals_and_kills_on_drop() {
    let dir = TestDir::new();
    let mut child = ChildGuard::spawn(
        "sh",
        Command::new("sh").args(["-c", "echo to-stdout; echo to-stderr >&2; exec sleep 60"]),
        dir.path(),
    );
    child.wait_for_log("to-stderr", TIMEOUT);
    child.wait_for_log("to-stdout", TIMEOUT);
    assert_eq!(child.stdout(), "to-stdout\n");
    assert_eq!(child.stderr(), "to-stderr\n");
    assert!(child.logs().contains("to-stdout") && child.logs().contains("to-stderr"));
    assert_eq!(
        child.wait_exit(Duration::from_millis(100)),
        None,
        "still running"
    );

    child.kill_with(Signal::TERM);
    let status = child.wait_exit(TIMEOUT).expect("sleep exits on SIGTERM");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
    child.kill_with(Signal::KILL); // already reaped: must be a no-op

    let other = ChildGuard::spawn("sleep", Command::new("sleep").arg("60"), dir.path());
    let proc_dir = format!("/proc/{}", other.pid());
    assert!(fs::metadata(&proc_dir).is_ok());
    drop(other);
    assert!(
        fs::metadata(&proc_dir).is_err(),
        "killed and reaped on drop"
    );
}

/// Does nothing in a normal run; `a_panicking_test_prints_the_child_logs` runs it in a child
/// test process with `PANTAU_HARNESS_PANIC=1`, where it panics while holding a ChildGuard.
#[test]
fn panics_while_holding_a_child_when_asked() {
    if std::env::var_os("PANTAU_HARNESS_PANIC").is_none() {
        return;
    }
    let dir = TestDir::new();
    let mut child = ChildGuard::spawn(
        "noisy",
        Command::new("sh").args(["-c", "echo last-words-of-the-child >&2; exec sleep 60"]),
        dir.path(),
    );
    child.wait_for_log("last-words", TIMEOUT);
    panic!("deliberate failure");
}

#[test]
fn a_panicking_test_prints_the_child_logs() {
    let output = run_with_timeout(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "panics_while_holding_a_child_when_asked",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PANTAU_HARNESS_PANIC", "1"),
        b"",
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the inner test should fail\n{stderr}"
    );
    assert!(stderr.contains("deliberate failure"), "{stderr}");
    assert!(stderr.contains("---- noisy (pid "), "{stderr}");
    assert!(stderr.contains("last-words-of-the-child"), "{stderr}");
}

#[test]
#[should_panic(expected = "timed out after 200ms waiting for the impossible")]
fn wait_until_panics_with_what_it_waited_for() {
    let started = Instant::now();
    let never: Option<()> = poll_until(Duration::from_millis(100), || None);
    assert_eq!(never, None);
    assert!(started.elapsed() >= Duration::from_millis(100));
    let mut calls = 0;
    assert_eq!(
        wait_until("a third call", TIMEOUT, || {
            calls += 1;
            (calls == 3).then_some(calls)
        }),
        3
    );
    wait_until("the impossible", Duration::from_millis(200), || None::<()>);
}

#[test]
#[should_panic(expected = "still running after 200ms")]
fn run_with_timeout_kills_a_hanging_command() {
    let echoed = run_with_timeout(&mut Command::new("cat"), b"in\0out", TIMEOUT);
    assert_eq!(echoed.stdout, b"in\0out");
    run_with_timeout(
        Command::new("sleep").arg("30"),
        b"",
        Duration::from_millis(200),
    );
}

#[test]
fn pantau_binary_names_the_build_command_when_missing() {
    let expected_dir = match std::env::var_os("PANTAU_BIN_DIR") {
        Some(dir) => dir.into(),
        None => std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf(),
    };
    let panic =
        std::panic::catch_unwind(|| pantau_binary("pantau-no-such-binary")).expect_err("missing");
    let message = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        message.contains("build the binaries first: cargo build --workspace --bins"),
        "{message}"
    );
    assert!(
        message.contains(
            &expected_dir
                .join("pantau-no-such-binary")
                .display()
                .to_string()
        ),
        "{message}"
    );
    // `in_ci` only words messages; it must agree with the environment CI sets.
    assert_eq!(
        in_ci(),
        std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
    );
}
