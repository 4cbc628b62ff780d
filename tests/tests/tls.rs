//! MQTT over TLS end to end: certificates made with `openssl` as README's guide says, and real
//! Mosquitto with the shipped configs/mosquitto files, logins by password (as shipped) or by
//! client certificate (its two commented lines switched on). Agents report; a forged publish is
//! dropped by the shipped ACLs; no certificate, a wrong password, a plain client on the TLS
//! port and a misnamed server certificate are refused with a clear log line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pantau_tests::{Agent, Collector, Mosquitto, TestCa, TestDir, run_with_timeout, start_shipped};

const WAIT: Duration = Duration::from_secs(20);

fn up(id: &str) -> String {
    format!(r#"pantau_agent_up{{instance="{id}",site="dc"}}"#)
}

/// The two shipped, commented lines that make client certificates the logins.
const CERTIFICATE_LOGINS: [(&str, &str); 2] = [
    ("#require_certificate true", "require_certificate true"),
    (
        "#use_identity_as_username true",
        "use_identity_as_username true",
    ),
];

/// The shipped Mosquitto with certificate logins.
fn start_mosquitto(dir: &Path, server_file: &str) -> Mosquitto {
    start_shipped(dir, server_file, &[], &CERTIFICATE_LOGINS)
}

/// `PANTAU_MQTT__*` for TLS with `ca` and, when given, a client certificate.
fn tls_env(ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> Vec<(&'static str, String)> {
    let mut env = vec![("PANTAU_MQTT__CA_FILE", ca.display().to_string())];
    if let Some((cert, key)) = client {
        env.push(("PANTAU_MQTT__CLIENT_CERT_FILE", cert.display().to_string()));
        env.push(("PANTAU_MQTT__CLIENT_KEY_FILE", key.display().to_string()));
    }
    env
}

fn start_agent(dir: &TestDir, id: &str, url: &str, env: &[(&'static str, String)]) -> Agent {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Agent::start_with(dir, id, "dc", url, 1, &env)
}

/// Waits for `needle` in the agent's log and returns that line.
fn log_line(agent: &mut Agent, needle: &str) -> String {
    agent.guard().wait_for_log(needle, WAIT);
    agent
        .logs()
        .lines()
        .find(|line| line.contains(needle))
        .unwrap_or_default()
        .to_owned()
}

/// The refusals every TLS listener must give: no client certificate, a plain client, and a
/// server certificate that does not name the host in the URL (`misnamed_url`).
fn check_refusals(
    dir: &TestDir,
    ca: &Path,
    client: &(PathBuf, PathBuf),
    port: u16,
    misnamed_url: &str,
) {
    let tls_url = format!("mqtts://127.0.0.1:{port}");
    let mut no_cert = start_agent(dir, "no-cert", &tls_url, &tls_env(ca, None));
    let mut plain = start_agent(dir, "plain", &format!("mqtt://127.0.0.1:{port}"), &[]);
    let mut misnamed = start_agent(dir, "misnamed", misnamed_url, &tls_env(ca, Some(client)));

    let line = log_line(&mut no_cert, "TLS with the broker failed");
    assert!(
        line.contains("WARN") && line.contains("reason=\"tls\""),
        "{line}"
    );
    assert!(line.contains("CertificateRequired"), "{line}");
    eprintln!("no certificate: {line}");

    // Mosquitto closes the socket, the embedded broker's rustls answers with a TLS alert: both
    // are told as a likely mqtt:// to a TLS port.
    let line = log_line(&mut plain, "use mqtts://");
    assert!(line.contains("WARN"), "{line}");
    eprintln!("plain client: {line}");

    let line = log_line(&mut misnamed, "TLS with the broker failed");
    assert!(line.contains("not valid for name"), "{line}");
    eprintln!("misnamed server: {line}");
}

#[test]
fn mosquitto_with_the_shipped_tls_config_and_acls() {
    let dir = TestDir::new();
    let ca = TestCa::new(dir.path(), "Pantau test CA");
    ca.server("server", &["localhost", "127.0.0.1"]);
    ca.server("elsewhere", &["broker.elsewhere.example"]);
    let collector_cert = ca.client("pantau-collector");
    let agent_cert = ca.client("dc-srv-01");
    let broker = start_mosquitto(dir.path(), "server");
    let url = format!("mqtts://127.0.0.1:{}", broker.port());

    // The collector starts only once it is subscribed: over TLS, with its own certificate.
    let mut collector_env = tls_env(&ca.cert(), Some(&collector_cert));
    collector_env.push(("PANTAU_MQTT__URL", url.clone()));
    let collector_env: Vec<(&str, &str)> = collector_env
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let collector = Collector::with_env(&dir, &broker, &collector_env);
    let _agent = start_agent(
        &dir,
        "dc-srv-01",
        &url,
        &tls_env(&ca.cert(), Some(&agent_cert)),
    );
    collector.wait_for_sample(&up("dc-srv-01"), WAIT, |v| v == 1.0);

    // dc-srv-01's certificate, dc-srv-02's topic: a well-formed forgery only the ACL can stop.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let forged = format!(
        r#"{{"schema":1,"agent":"dc-srv-02","site":"dc","state":"online","timestamp_ms":{now_ms},"interval_seconds":1,"version":"0.1.0","next_seq":1,"connected_ms":{now_ms}}}"#
    );
    let output = run_with_timeout(
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port().to_string(),
                "-q",
                "1",
            ])
            .arg("--cafile")
            .arg(ca.cert())
            .arg("--cert")
            .arg(&agent_cert.0)
            .arg("--key")
            .arg(&agent_cert.1)
            .args([
                "-i",
                "forger",
                "-t",
                "pantau/v1/dc/dc-srv-02/status",
                "-m",
                &forged,
            ]),
        b"",
        Duration::from_secs(10),
    );
    assert!(
        output.status.success(),
        "mosquitto_pub could not even connect: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let denied = "Denied PUBLISH from forger";
    pantau_tests::wait_until("mosquitto to log the denial", WAIT, || {
        broker.logs().contains(denied).then_some(())
    });
    // Messages dc-srv-01 publishes after the forgery was dropped reach the collector; had the
    // forgery passed, it would have arrived before them.
    let messages = r#"pantau_agent_messages_total{instance="dc-srv-01",site="dc"}"#;
    let before = collector.wait_for_sample(messages, WAIT, |_| true);
    collector.wait_for_sample(messages, WAIT, |v| v >= before + 2.0);
    assert_eq!(
        collector.sample(&up("dc-srv-02")),
        None,
        "{}",
        collector.metrics()
    );
    assert!(!collector.metrics().contains("dc-srv-02"));

    let elsewhere = start_mosquitto(dir.path(), "elsewhere");
    check_refusals(
        &dir,
        &ca.cert(),
        &agent_cert,
        broker.port(),
        &format!("mqtts://127.0.0.1:{}", elsewhere.port()),
    );
    assert_eq!(collector.sample(&up("no-cert")), None);
}

/// The shipped config as it is: a password per agent over TLS. An agent logs in with its
/// password from a file and reports; a wrong password, a plain client on the TLS port and a
/// misnamed server certificate are refused.
#[test]
fn mosquitto_with_the_shipped_password_logins_over_tls() {
    let dir = TestDir::new();
    let ca = TestCa::new(dir.path(), "Pantau test CA");
    // Named for 127.0.0.1 only, so `mqtts://localhost:PORT` is a misnamed server.
    ca.server("server", &["127.0.0.1"]);
    let broker = start_shipped(
        dir.path(),
        "server",
        &[
            ("pantau-collector", "collector-secret"),
            ("dc-srv-01", "from-a-file"),
        ],
        &[],
    );
    let url = format!("mqtts://127.0.0.1:{}", broker.port());
    let mut collector_env = tls_env(&ca.cert(), None);
    collector_env.push(("PANTAU_MQTT__URL", url.clone()));
    collector_env.push(("PANTAU_MQTT__USERNAME", "pantau-collector".to_owned()));
    collector_env.push(("PANTAU_MQTT__PASSWORD", "collector-secret".to_owned()));
    let collector_env: Vec<(&str, &str)> = collector_env
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let collector = Collector::with_env(&dir, &broker, &collector_env);

    std::fs::write(dir.join("password"), "from-a-file\n").expect("write the password file");
    let mut agent_env = tls_env(&ca.cert(), None);
    agent_env.push(("PANTAU_MQTT__USERNAME", "dc-srv-01".to_owned()));
    agent_env.push((
        "PANTAU_MQTT__PASSWORD_FILE",
        dir.join("password").display().to_string(),
    ));
    let agent = start_agent(&dir, "dc-srv-01", &url, &agent_env);
    collector.wait_for_sample(&up("dc-srv-01"), WAIT, |v| v == 1.0);
    assert!(
        !agent.logs().contains("from-a-file"),
        "the password was logged"
    );

    let mut wrong_env = tls_env(&ca.cert(), None);
    wrong_env.push(("PANTAU_MQTT__USERNAME", "dc-srv-02".to_owned()));
    wrong_env.push(("PANTAU_MQTT__PASSWORD", "guess".to_owned()));
    let mut wrong = start_agent(&dir, "dc-srv-02", &url, &wrong_env);
    let line = log_line(&mut wrong, "broker refused the login");
    assert!(line.contains("WARN"), "{line}");
    eprintln!("wrong password: {line}");

    let mut plain = start_agent(
        &dir,
        "plain",
        &format!("mqtt://127.0.0.1:{}", broker.port()),
        &[],
    );
    let line = log_line(&mut plain, "use mqtts://");
    assert!(line.contains("WARN"), "{line}");
    let misnamed_url = format!("mqtts://localhost:{}", broker.port());
    let mut misnamed = start_agent(&dir, "misnamed", &misnamed_url, &agent_env);
    let line = log_line(&mut misnamed, "TLS with the broker failed");
    assert!(line.contains("not valid for name"), "{line}");
    assert_eq!(collector.sample(&up("dc-srv-02")), None);
}

/// README's revocation steps: `openssl ca -revoke`, `-gencrl`, and the shipped `crlfile` line
/// uncommented. The revoked agent is refused; another agent of the same CA still gets in.
#[test]
fn mosquitto_refuses_a_revoked_agent_certificate() {
    let dir = TestDir::new();
    let ca = TestCa::new(dir.path(), "Pantau test CA");
    ca.server("server", &["localhost", "127.0.0.1"]);
    let revoked = ca.client("dc-srv-02");
    let kept = ca.client("dc-srv-01");
    ca.revoke("dc-srv-02");
    let broker = start_shipped(
        dir.path(),
        "server",
        &[],
        &[
            CERTIFICATE_LOGINS[0],
            CERTIFICATE_LOGINS[1],
            ("#crlfile", "crlfile"),
        ],
    );
    let url = format!("mqtts://localhost:{}", broker.port());

    let mut agent = start_agent(
        &dir,
        "dc-srv-02",
        &url,
        &tls_env(&ca.cert(), Some(&revoked)),
    );
    let line = log_line(&mut agent, "TLS with the broker failed");
    assert!(line.contains("CertificateRevoked"), "{line}");
    eprintln!("revoked: {line}");

    let mut agent = start_agent(&dir, "dc-srv-01", &url, &tls_env(&ca.cert(), Some(&kept)));
    agent
        .guard()
        .wait_for_log("connected to broker, publishing birth message", WAIT);
}
