//! Enrolling an agent is one command on each side, revoking it one command: the real
//! `pantau-collector agent add|remove` and `pantau-agent init` against real Mosquitto with the
//! shipped config (TLS listener, password file, pantau-acl), reloaded by SIGHUP as
//! `systemctl reload mosquitto` does.
//!
//! The collector reads Mosquitto over a plain listener on loopback with its own login; the
//! agent connects over TLS with what its bundle gave it and nothing else.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pantau_tests::{
    Agent, Collector, Mosquitto, TestCa, TestDir, free_port, pantau_binary, poll_until,
    run_with_timeout, start_shipped,
};

const WAIT: Duration = Duration::from_secs(20);
const COLLECTOR: (&str, &str) = ("pantau-collector", "collector-secret-0123456789");
/// The collector's master command key (announcements.key_file), for sound agents.
const MASTER_KEY: &str = "the office master key, test only 0001";

/// Mosquitto as shipped plus a plain loopback listener for the collector, and a collector
/// config whose [enrolment] section points at both.
struct Office {
    broker: Mosquitto,
    plain_port: u16,
    config: PathBuf,
    dir: TestDir,
}

impl Office {
    fn start() -> Office {
        Office::start_with(false)
    }

    /// With `client_certificates`, the TLS listener requires a client certificate signed by
    /// the CA (besides the login), and `agent add` issues one.
    fn start_with(client_certificates: bool) -> Office {
        let dir = TestDir::new();
        let ca = TestCa::new(dir.path(), "Pantau test CA");
        ca.server("server", &["127.0.0.1"]);
        let plain_port = free_port();
        // per_listener_settings is false: the password file and ACL hold on both listeners.
        let plain = format!("per_listener_settings false\nlistener {plain_port} 127.0.0.1");
        let mut more = vec![("per_listener_settings false", plain.as_str())];
        if client_certificates {
            more.push(("#require_certificate true", "require_certificate true"));
        }
        let broker = start_shipped(dir.path(), "server", &[COLLECTOR], &more);
        let master = dir.write("master.key", format!("{MASTER_KEY}\n"));
        let config = dir.write(
            "collector.toml",
            format!(
                r#"[broker]
embedded = false

[mqtt]
url = "mqtt://127.0.0.1:{plain_port}"
username = "{user}"

[announcements]
key_file = "{master}"

[enrolment]
broker_urls = ["mqtts://127.0.0.1:{tls_port}"]
ca_file = "{ca}"
ca_key_file = "{ca_key}"
client_certificates = {client_certificates}
mosquitto_password_file = "{passwords}"
mosquitto_reload_command = ["kill", "-HUP", "{pid}"]
bundle_dir = "{bundles}"
"#,
                user = COLLECTOR.0,
                master = master.display(),
                tls_port = broker.port(),
                ca = ca.cert().display(),
                ca_key = dir.join("ca.key").display(),
                passwords = dir.join("passwords").display(),
                pid = broker.pid(),
                bundles = dir.join("agents").display(),
            ),
        );
        Office {
            broker,
            plain_port,
            config,
            dir,
        }
    }

    fn collector(&self) -> Collector {
        let url = format!("mqtt://127.0.0.1:{}", self.plain_port);
        Collector::with_config(
            &self.dir,
            &self.broker,
            &self.config,
            &[
                ("PANTAU_MQTT__URL", url.as_str()),
                ("PANTAU_MQTT__PASSWORD", COLLECTOR.1),
            ],
        )
    }

    /// `pantau-collector agent ARGS --config <the office's>`.
    fn agent_command(&self, args: &[&str]) -> Output {
        let mut command = Command::new(pantau_binary("pantau-collector"));
        command
            .arg("agent")
            .args(args)
            .arg("--config")
            .arg(&self.config);
        run_with_timeout(&mut command, b"", WAIT)
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join(format!("agents/{id}.bundle"))
    }

    /// A TLS login to the broker as `user`, publishing to a topic the ACL does not give it,
    /// so the message goes nowhere: what matters is the CONNACK.
    fn try_login(&self, user: &str, password: &str) -> String {
        self.try_login_with(user, password, &[])
    }

    fn try_login_with(&self, user: &str, password: &str, args: &[&Path]) -> String {
        let mut command = Command::new("mosquitto_pub");
        if let [cert, key] = args {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        command
            .args(["-h", "127.0.0.1", "-p", &self.broker.port().to_string()])
            .arg("--cafile")
            .arg(self.dir.join("ca.pem"))
            .args(["-u", user, "-P", password, "-i", "old-credentials", "-d"])
            .args(["-t", "enrolment-test/nowhere", "-m", "x"]);
        let output = run_with_timeout(&mut command, b"", WAIT);
        text(&output)
    }
}

/// An agent host's dirs, as `pantau-agent init` fills them.
struct AgentHost {
    etc: PathBuf,
    state: PathBuf,
}

impl AgentHost {
    fn new(dir: &TestDir, name: &str) -> AgentHost {
        AgentHost {
            etc: dir.join(format!("{name}/etc/pantau")),
            state: dir.join(format!("{name}/var/lib/pantau/agent")),
        }
    }

    fn init(&self, bundle: &str, stdin: &[u8]) -> Output {
        let mut command = Command::new(pantau_binary("pantau-agent"));
        command
            .args(["init", "--bundle", bundle, "--etc-dir"])
            .arg(&self.etc)
            .arg("--state-dir")
            .arg(&self.state)
            .args(["--service-user", "root", "--no-start"]);
        run_with_timeout(&mut command, stdin, WAIT)
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn series(name: &str, id: &str, site: &str) -> String {
    format!(r#"{name}{{instance="{id}",site="{site}"}}"#)
}

#[test]
fn an_enrolled_agent_reports_over_tls_and_a_revoked_one_is_cut_off() {
    let office = Office::start();
    let collector = office.collector();
    let id = "gor-link-01";

    let added = office.agent_command(&["add", id, "--role", "link", "--site", "gor-satria"]);
    let said = text(&added);
    assert!(added.status.success(), "{said}");
    assert!(said.contains("SECRET"), "{said}");
    let bundle = office.bundle(id);
    assert!(said.contains(&bundle.display().to_string()), "{said}");
    assert_eq!(mode(&bundle), 0o600);
    assert_eq!(mode(bundle.parent().unwrap()), 0o700);

    let host = AgentHost::new(&office.dir, "link-host");
    let init = host.init(&bundle.display().to_string(), b"");
    assert!(init.status.success(), "{}", text(&init));
    let config = host.etc.join("agent.toml");
    let env_file = host.etc.join("agent.env");
    assert_eq!(mode(&config), 0o640);
    assert_eq!(mode(&env_file), 0o600);
    assert_eq!(mode(&host.etc.join("tls/agent-ca.pem")), 0o644);
    let check = run_with_timeout(
        Command::new(pantau_binary("pantau-agent"))
            .arg("--config")
            .arg(&config)
            .arg("--check-config"),
        b"",
        WAIT,
    );
    assert!(check.status.success(), "{}", text(&check));
    let password = std::fs::read_to_string(&env_file)
        .unwrap()
        .trim()
        .strip_prefix("PANTAU_MQTT__PASSWORD=")
        .expect("agent.env holds the password")
        .to_owned();
    // Control: the bundle's login works before it is revoked.
    let login = office.try_login(id, &password);
    assert!(login.contains("received CONNACK (0)"), "{login}");

    // Reporting every second (instead of the written 15 s) only makes silence show sooner.
    let agent = Agent::start_installed(
        &office.dir,
        id,
        &config,
        &env_file,
        &host.state,
        &[("PANTAU_AGENT__INTERVAL_SECONDS", "1")],
    );
    let up = series("pantau_agent_up", id, "gor-satria");
    let messages = series("pantau_agent_messages_total", id, "gor-satria");
    collector.wait_for_sample(&up, WAIT, |value| value == 1.0);
    collector.wait_for_sample(&messages, WAIT, |value| value >= 2.0);
    assert!(
        agent.logs().contains("mqtts://127.0.0.1"),
        "{}",
        agent.logs()
    );

    let removed = office.agent_command(&["remove", id]);
    let said = text(&removed);
    assert!(removed.status.success(), "{said}");
    assert!(said.contains("ended its live connection"), "{said}");
    assert!(!bundle.exists(), "the bundle is deleted");

    // Mosquitto drops the live connection at the reload and refuses every reconnect.
    let client = format!("pantau-agent-{id}");
    let refused = poll_until(WAIT, || {
        let logs = office.broker.logs();
        let after_reload = &logs[logs.rfind("Reloading config")?..];
        (after_reload.contains(&format!("Client {client} disconnected"))
            && after_reload.contains("not authorised"))
        .then_some(())
    });
    assert!(
        refused.is_some(),
        "no disconnect and refusal after the reload:\n{}",
        office.broker.logs()
    );
    // Mosquitto 2.0.11 publishes no last will for a client it drops at a reload (none in its
    // log after "Reloading config."): the collector marks the agent down by its silence,
    // three of its intervals later.
    collector.wait_for_sample(&up, WAIT, |value| value == 0.0);
    // Nothing more arrives from it: its count stays where it stopped.
    let stopped = collector.metrics();
    let count = pantau_tests::sample(&stopped, &messages).expect("its count stays");
    let grew = poll_until(Duration::from_secs(3), || {
        let now = pantau_tests::sample(&collector.metrics(), &messages)?;
        (now > count).then_some(now)
    });
    assert_eq!(grew, None, "messages still arrive after the revocation");
    let login = office.try_login(id, &password);
    assert!(login.contains("not authorised"), "{login}");
    assert!(!login.contains("received CONNACK (0)"), "{login}");

    let listed = office.agent_command(&["list"]);
    let said = text(&listed);
    assert!(listed.status.success(), "{said}");
    assert!(said.contains("  pantau-collector\n"), "{said}");
    assert!(!said.contains(id), "{said}");
}

#[test]
fn a_sound_agent_gets_the_key_the_collector_derives_for_it() {
    let office = Office::start();
    let id = "office-sound";
    let added = office.agent_command(&["add", id, "--role", "sound", "--site", "office"]);
    assert!(added.status.success(), "{}", text(&added));
    // The line pasted on standard input, as the printed instructions offer.
    let line = std::fs::read(office.bundle(id)).unwrap();
    let host = AgentHost::new(&office.dir, "sound-host");
    let init = host.init("-", &line);
    assert!(init.status.success(), "{}", text(&init));

    let derived = run_with_timeout(
        Command::new(pantau_binary("pantau-collector"))
            .args(["key", "derive", id, "--key-file"])
            .arg(office.dir.join("master.key")),
        b"",
        WAIT,
    );
    assert!(derived.status.success(), "{}", text(&derived));
    let key_file = host.etc.join("sound.key");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        String::from_utf8_lossy(&derived.stdout).trim()
    );
    assert_eq!(mode(&key_file), 0o640);
    let config = std::fs::read_to_string(host.etc.join("agent.toml")).unwrap();
    assert!(
        config.contains(&format!("key_file = \"{}\"", key_file.display())),
        "{config}"
    );
}

#[test]
fn a_damaged_bundle_is_refused_and_nothing_is_written() {
    let office = Office::start();
    let id = "dc-srv-01";
    let added = office.agent_command(&["add", id, "--role", "server"]);
    assert!(added.status.success(), "{}", text(&added));
    let mut line = std::fs::read_to_string(office.bundle(id)).unwrap();
    line.truncate(line.len() - 20);
    let damaged = office.dir.write("damaged.bundle", &line);

    let host = AgentHost::new(&office.dir, "server-host");
    let init = host.init(&damaged.display().to_string(), b"");
    let said = text(&init);
    assert!(!init.status.success(), "{said}");
    assert!(said.contains("the bundle is damaged"), "{said}");
    assert!(
        !host.etc.exists(),
        "nothing is written for a damaged bundle"
    );

    // A second `agent add` for the same id is refused without --replace.
    let again = office.agent_command(&["add", id, "--role", "server"]);
    let said = text(&again);
    assert!(!again.status.success(), "{said}");
    assert!(said.contains("--replace"), "{said}");
}

#[test]
fn with_client_certificates_the_agent_logs_in_with_the_one_its_bundle_brought() {
    let office = Office::start_with(true);
    let collector = office.collector();
    let id = "dc-srv-07";
    let added = office.agent_command(&["add", id, "--role", "server", "--site", "dc"]);
    assert!(added.status.success(), "{}", text(&added));
    let host = AgentHost::new(&office.dir, "cert-host");
    let init = host.init(&office.bundle(id).display().to_string(), b"");
    assert!(init.status.success(), "{}", text(&init));
    let (cert, key) = (
        host.etc.join("tls/agent.pem"),
        host.etc.join("tls/agent.key"),
    );
    assert_eq!(mode(&cert), 0o644);
    assert_eq!(mode(&key), 0o640);
    let env_file = host.etc.join("agent.env");
    let password = std::fs::read_to_string(&env_file).unwrap();
    let password = password.trim().trim_start_matches("PANTAU_MQTT__PASSWORD=");
    // Control: the password alone is not enough on this listener.
    let without = office.try_login(id, password);
    assert!(!without.contains("received CONNACK (0)"), "{without}");
    let with = office.try_login_with(id, password, &[&cert, &key]);
    assert!(with.contains("received CONNACK (0)"), "{with}");

    let _agent = Agent::start_installed(
        &office.dir,
        id,
        &host.etc.join("agent.toml"),
        &env_file,
        &host.state,
        &[("PANTAU_AGENT__INTERVAL_SECONDS", "1")],
    );
    collector.wait_for_sample(&series("pantau_agent_up", id, "dc"), WAIT, |v| v == 1.0);
}
