//! The LAN broker's topic rules, with controls: real Mosquitto started with the shipped
//! configs/mosquitto files (TLS listener, password logins written by `mosquitto_passwd`,
//! pantau-acl), and the real `mosquitto_pub` / `mosquitto_sub` logged in as one agent against
//! another agent's topics: publish, subscribe and retained, plus a room sensor outside its
//! filter.
//!
//! Every refusal comes with proof that the login worked (CONNACK 0 in `-d` output), a positive
//! control that the same login's allowed traffic arrives, and absence shown through a
//! privileged subscriber (the collector's login) with a bounded wait.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pantau_tests::{ChildGuard, Mosquitto, TestCa, TestDir, poll_until, run_with_timeout};

const WAIT: Duration = Duration::from_secs(10);
/// How long a refused message gets to show up anyway, after its control has arrived.
const ABSENCE: Duration = Duration::from_secs(2);

const COLLECTOR: (&str, &str) = ("pantau-collector", "collector-secret");
const AGENT_A: (&str, &str) = ("dc-srv-01", "secret-a");
const AGENT_B: (&str, &str) = ("dc-srv-02", "secret-b");
/// The shipped pantau-acl's example room sensor (rule `tele/+/SENSOR`).
const SENSOR: (&str, &str) = ("server-room-th", "secret-s");

/// The shipped broker with four logins, and the CA its clients trust.
struct Lan {
    broker: Mosquitto,
    ca: PathBuf,
    dir: TestDir,
}

impl Lan {
    fn start() -> Lan {
        let dir = TestDir::new();
        let ca = TestCa::new(dir.path(), "Pantau test CA");
        ca.server("server", &["127.0.0.1"]);
        let broker = pantau_tests::start_shipped(
            dir.path(),
            "server",
            &[COLLECTOR, AGENT_A, AGENT_B, SENSOR],
            &[],
        );
        Lan {
            broker,
            ca: ca.cert(),
            dir,
        }
    }

    fn client(&self, program: &str, (user, password): (&str, &str), client_id: &str) -> Command {
        // Line-buffered, so `-d` lines reach the log file as they happen (mosquitto_sub
        // flushes only after a message otherwise).
        let mut command = Command::new("stdbuf");
        command
            .args(["-oL", program])
            .args(["-h", "127.0.0.1", "-p", &self.broker.port().to_string()])
            .arg("--cafile")
            .arg(&self.ca)
            .args([
                "-u", user, "-P", password, "-i", client_id, "-d", "-V", "5", "-q", "1",
            ]);
        command
    }

    /// `mosquitto_pub` as `login`; returns its `-d` output after asserting the login worked.
    /// MQTT 5 makes the broker's verdict visible: PUBACK reason 0 (taken) or 135 (not
    /// authorized).
    fn publish(&self, login: (&str, &str), topic: &str, payload: &str, retain: bool) -> String {
        let mut command = self.client("mosquitto_pub", login, &format!("pub-{}", login.0));
        command.args(["-t", topic, "-m", payload]);
        if retain {
            command.arg("-r");
        }
        let output = run_with_timeout(&mut command, b"", WAIT);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            out.contains("received CONNACK (0)"),
            "{} did not log in: {out}",
            login.0
        );
        out
    }

    /// A publish the ACL allows: PUBACK reason 0, or 16 ("no matching subscribers", taken
    /// all the same, e.g. a retained message nobody reads yet).
    fn publish_allowed(&self, login: (&str, &str), topic: &str, payload: &str, retain: bool) {
        let out = self.publish(login, topic, payload, retain);
        assert!(
            out.contains("received PUBACK (Mid: 1, RC:0)")
                || out.contains("received PUBACK (Mid: 1, RC:16)"),
            "{out}"
        );
    }

    /// A publish the ACL refuses: PUBACK reason 135, not authorized.
    fn publish_refused(&self, login: (&str, &str), topic: &str, payload: &str, retain: bool) {
        let out = self.publish(login, topic, payload, retain);
        assert!(out.contains("received PUBACK (Mid: 1, RC:135)"), "{out}");
    }

    /// A running `mosquitto_sub -v` as `login` on `filters` (one session), once its SUBACK
    /// has arrived.
    fn subscribe(&self, login: (&str, &str), name: &str, filters: &[&str]) -> Sub {
        let mut command = self.client("mosquitto_sub", login, name);
        command.arg("-v");
        for filter in filters {
            command.args(["-t", filter]);
        }
        let mut child = ChildGuard::spawn(name, &mut command, self.dir.path());
        let ready = poll_until(WAIT, || {
            let out = child.stdout();
            if out.contains("received SUBACK") {
                return Some(true);
            }
            child.try_wait().map(|_| false)
        });
        assert_eq!(
            ready,
            Some(true),
            "{name} did not subscribe: {}",
            child.logs()
        );
        let out = child.stdout();
        assert!(
            out.contains("received CONNACK (0)"),
            "{name} did not log in: {out}"
        );
        Sub { child }
    }
}

/// A `mosquitto_sub` and the messages it printed (`topic payload` lines).
struct Sub {
    child: ChildGuard,
}

impl Sub {
    fn messages(&self) -> Vec<String> {
        self.child
            .stdout()
            .lines()
            .filter(|line| !line.starts_with("Client ") && !line.starts_with("Subscribed "))
            .map(str::to_owned)
            .collect()
    }

    /// Waits (bounded) until `line` has arrived.
    fn wait_for(&self, line: &str) {
        let arrived = poll_until(WAIT, || {
            self.messages().iter().any(|m| m == line).then_some(())
        });
        assert!(
            arrived.is_some(),
            "{line:?} did not arrive: {:?}",
            self.messages()
        );
    }

    /// Asserts that no message on `topic` with `payload` arrives within `ABSENCE`.
    fn never_gets_payload(&self, topic: &str, payload: &str) {
        let line = format!("{topic} {payload}");
        let arrived = poll_until(ABSENCE, || {
            self.messages().into_iter().find(|message| *message == line)
        });
        assert_eq!(arrived, None);
    }

    /// Asserts that no message on `topic` arrives within `ABSENCE` (bounded).
    fn never_gets(&self, topic: &str) {
        let prefix = format!("{topic} ");
        let arrived = poll_until(ABSENCE, || {
            self.messages()
                .into_iter()
                .find(|message| message.starts_with(&prefix))
        });
        assert_eq!(arrived, None, "a message on {topic} arrived");
    }
}

fn topic(agent: &str, kind: &str) -> String {
    format!("pantau/v1/dc/{agent}/{kind}")
}

#[test]
fn an_agent_cannot_publish_under_another_agents_id() {
    let lan = Lan::start();
    let watcher = lan.subscribe(COLLECTOR, "collector-watch", &["pantau/#"]);
    for kind in ["status", "metrics", "events"] {
        let forged = topic(AGENT_B.0, kind);
        lan.publish_refused(AGENT_A, &forged, "forged", false);
        // Control: the same login's own topic, right after.
        let own = topic(AGENT_A.0, kind);
        lan.publish_allowed(AGENT_A, &own, "own", false);
        watcher.wait_for(&format!("{own} own"));
        watcher.never_gets(&forged);
    }
    // Writing commands is the collector's alone, for another agent and for itself.
    lan.publish_refused(AGENT_A, &topic(AGENT_B.0, "cmd/stop"), "forged", false);
    lan.publish_refused(AGENT_A, &topic(AGENT_A.0, "cmd/stop"), "forged", false);
    lan.publish_allowed(COLLECTOR, &topic(AGENT_B.0, "cmd/ping"), "real", false);
    watcher.wait_for(&format!("{} real", topic(AGENT_B.0, "cmd/ping")));
    watcher.never_gets(&topic(AGENT_B.0, "cmd/stop"));
    watcher.never_gets(&topic(AGENT_A.0, "cmd/stop"));
    assert!(
        lan.broker
            .logs()
            .contains("Denied PUBLISH from pub-dc-srv-01"),
        "{}",
        lan.broker.logs()
    );
}

#[test]
fn a_forged_retained_status_is_never_stored() {
    let lan = Lan::start();
    let forged = topic(AGENT_B.0, "status");
    let own = topic(AGENT_A.0, "status");
    lan.publish_refused(AGENT_A, &forged, "forged-retained", true);
    lan.publish_allowed(AGENT_A, &own, "own-retained", true);
    // A subscriber that comes later gets what is retained: A's own status, not the forgery.
    let fresh = lan.subscribe(COLLECTOR, "collector-fresh", &["pantau/v1/dc/+/status"]);
    fresh.wait_for(&format!("{own} own-retained"));
    fresh.never_gets(&forged);
    // B's own status, published after, is retained in its place: the topic works.
    lan.publish_allowed(AGENT_B, &forged, "b-real", true);
    let later = lan.subscribe(COLLECTOR, "collector-later", &["pantau/v1/dc/+/status"]);
    later.wait_for(&format!("{forged} b-real"));
    assert!(
        !later
            .messages()
            .iter()
            .any(|m| m.contains("forged-retained")),
        "{:?}",
        later.messages()
    );
}

#[test]
fn an_agent_cannot_read_another_agents_commands() {
    let lan = Lan::start();
    let command_a = topic(AGENT_A.0, "cmd/announce");
    let command_b = topic(AGENT_B.0, "cmd/announce");
    // A retained command for B, in place before anyone subscribes.
    lan.publish_allowed(COLLECTOR, &command_b, "for-b-retained", true);
    // A in one session: its own commands (the control), B's, and everything it can name.
    let a = lan.subscribe(
        AGENT_A,
        "a-snoop",
        &[
            "pantau/v1/dc/dc-srv-01/cmd/#",
            "pantau/v1/dc/dc-srv-02/cmd/#",
            "pantau/#",
        ],
    );
    let b = lan.subscribe(AGENT_B, "b-own", &["pantau/v1/dc/dc-srv-02/cmd/#"]);
    b.wait_for(&format!("{command_b} for-b-retained"));
    lan.publish_allowed(COLLECTOR, &command_b, "for-b", false);
    lan.publish_allowed(COLLECTOR, &command_a, "for-a", false);
    // B got its command, A got its own (after B's was sent), never B's.
    b.wait_for(&format!("{command_b} for-b"));
    a.wait_for(&format!("{command_a} for-a"));
    a.never_gets(&command_b);
    // Nor agents' reports: only the collector reads those.
    lan.publish_allowed(AGENT_B, &topic(AGENT_B.0, "metrics"), "b-metrics", false);
    let watcher = lan.subscribe(COLLECTOR, "collector-watch", &["pantau/#"]);
    lan.publish_allowed(AGENT_B, &topic(AGENT_B.0, "metrics"), "b-metrics-2", false);
    watcher.wait_for(&format!("{} b-metrics-2", topic(AGENT_B.0, "metrics")));
    a.never_gets(&topic(AGENT_B.0, "metrics"));
}

#[test]
fn a_sensor_login_publishes_only_within_its_filter() {
    let lan = Lan::start();
    let watcher = lan.subscribe(COLLECTOR, "collector-watch", &["tele/#", "pantau/#"]);
    let outside = [
        "tele/other-room-th/SENSOR".to_owned(),
        "tele/server-room-th/STATE".to_owned(),
        topic(AGENT_A.0, "status"),
        topic(SENSOR.0, "metrics").replace("metrics", "cmd/stop"),
    ];
    for forged in &outside {
        lan.publish_refused(SENSOR, forged, "forged", false);
    }
    let own = "tele/server-room-th/SENSOR";
    lan.publish_allowed(SENSOR, own, "{\"AM2301\":{\"Temperature\":24.5}}", false);
    watcher.wait_for(&format!("{own} {{\"AM2301\":{{\"Temperature\":24.5}}}}"));
    for forged in &outside {
        watcher.never_gets(forged);
    }
    // An agent login cannot pass for the sensor either.
    lan.publish_refused(AGENT_A, own, "forged", false);
    watcher.never_gets_payload(own, "forged");
}

/// README shows the shipped ACL itself, not a second copy that drifts from it.
#[test]
fn the_readme_shows_the_shipped_acl_verbatim() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).expect("read README.md");
    let marker = "The shipped `configs/mosquitto/pantau-acl`, as it is";
    let after = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README lost {marker:?}"))
        .1;
    let block = after
        .split_once("```\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .map(|(block, _)| block)
        .expect("a code block after the marker");
    assert_eq!(block, pantau_tests::shipped_mosquitto_file("pantau-acl"));
}
