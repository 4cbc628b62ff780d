//! A real Mosquitto broker per test, and the real `mosquitto_pub` / `mosquitto_sub` clients.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{
    ChildGuard, Signal, port_accepts, run_with_timeout, start_on_free_port, wait_ready,
    wait_ready_fixed_port,
};
use crate::wait::poll_until;

/// How long the broker and its clients get to start, connect or stop.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes every `mosquitto_sub` client id unique in the test process, so the broker's log line
/// for its subscription identifies it.
static NEXT_SUBSCRIBER: AtomicUsize = AtomicUsize::new(0);

/// Options for [`Mosquitto`]; start with [`Mosquitto::builder`].
#[derive(Debug, Default, Clone)]
pub struct MosquittoBuilder {
    persistence: bool,
    users: Vec<(String, String)>,
    extra_lines: Vec<String>,
    config: Option<String>,
    also_listen: Vec<String>,
    max_queued_messages: Option<u32>,
}

impl MosquittoBuilder {
    /// Keep retained messages and sessions in the broker's temp dir across [`Mosquitto::kill`]
    /// and [`Mosquitto::restart`]. The broker then saves after every change
    /// (`autosave_on_changes`), so even SIGKILL loses nothing, provided the save a moment
    /// after the PUBACK has happened: call [`Mosquitto::wait_persisted`] before killing.
    /// Off by default.
    pub fn persistence(mut self, on: bool) -> MosquittoBuilder {
        self.persistence = on;
        self
    }

    /// Require a login: only these users (name, password), written with the real
    /// `mosquitto_passwd` into a `password_file`; anonymous access is then off, so the
    /// harness's own `mosquitto_pub`/`subscribe` cannot be used with such a broker.
    pub fn users(mut self, users: &[(&str, &str)]) -> MosquittoBuilder {
        self.users = users
            .iter()
            .map(|(name, password)| ((*name).to_owned(), (*password).to_owned()))
            .collect();
        self
    }

    /// Appends `lines` to the config verbatim (`max_queued_messages 0`, ...).
    pub fn config_lines(mut self, lines: &[&str]) -> MosquittoBuilder {
        self.extra_lines
            .extend(lines.iter().map(|line| (*line).to_owned()));
        self
    }

    /// Use `config` (e.g. a file from configs/mosquitto with paths substituted) instead of the
    /// harness's own: `{port}` becomes the free port, and the harness adds `user root` and
    /// logging to stderr (debug included, so refused publishes show as "Denied PUBLISH").
    /// [`Mosquitto::url`] and the harness's clients then only fit if the listener does.
    pub fn config(mut self, config: &str) -> MosquittoBuilder {
        self.config = Some(config.to_owned());
        self
    }

    /// Also listen on `address` (an address of a namespace pair the test made, such as
    /// [`crate::NetnsPair::near_v4`]), on the same port as on 127.0.0.1, so an agent inside
    /// the namespace reaches the broker across a link the test can cut.
    pub fn also_listen(mut self, address: &str) -> MosquittoBuilder {
        self.also_listen.push(address.to_owned());
        self
    }

    /// Messages the broker queues per disconnected persistent session (Mosquitto's default is
    /// 1000; past it new ones are dropped, after the publisher had its PUBACK). A collector
    /// that reconnects after its agents needs room for all of their backlogs.
    pub fn max_queued_messages(mut self, count: u32) -> MosquittoBuilder {
        self.max_queued_messages = Some(count);
        self
    }

    /// Writes the config, starts `mosquitto` and waits until its port accepts TCP.
    pub fn start(self) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("pantau-mosquitto-")
            .tempdir()
            .expect("create a temp dir for mosquitto");
        let (child, port) = start_on_free_port("mosquitto", |port| {
            let config = match &self.config {
                Some(text) => write_given_config(&dir, port, text),
                None => write_config(&dir, port, &self),
            };
            append_lines(&config, &self.extra_lines);
            let mut child = spawn_broker(&dir, &config);
            wait_ready(&mut child, START_TIMEOUT, || port_accepts(port)).map(|()| (child, port))
        });
        Mosquitto {
            child,
            port,
            persistence: self.persistence,
            dir,
        }
    }
}

/// A running `mosquitto` on 127.0.0.1, anonymous access, stopped on drop.
///
/// Its log (all but debug messages, including one line per subscription) is in its temp dir;
/// see [`Mosquitto::logs`].
#[derive(Debug)]
pub struct Mosquitto {
    // Dropped before `dir`, so the process is gone (and its log printed) before the files are.
    child: ChildGuard,
    port: u16,
    persistence: bool,
    dir: TempDir,
}

impl Mosquitto {
    /// A broker without persistence: `Mosquitto::builder().start()`.
    pub fn start() -> Mosquitto {
        MosquittoBuilder::default().start()
    }

    /// Options: `Mosquitto::builder().persistence(true).start()`.
    pub fn builder() -> MosquittoBuilder {
        MosquittoBuilder::default()
    }

    /// The listener's port on 127.0.0.1. It stays the same across [`Mosquitto::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id, e.g. to send it SIGHUP (reload) as `systemctl reload` would.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's output so far, across restarts.
    pub fn logs(&self) -> String {
        self.child.logs()
    }

    /// The persistence database (`mosquitto.db` in the temp dir); `None` without persistence.
    /// It exists once the broker has saved at least once.
    pub fn persistence_file(&self) -> Option<PathBuf> {
        self.persistence
            .then(|| self.dir.path().join("mosquitto.db"))
    }

    /// Waits until the persistence database holds `payload` (it stores payloads verbatim), so
    /// that a retained message published just before survives [`Mosquitto::kill`].
    ///
    /// # Panics
    /// Without persistence, or when it is not saved within `timeout`.
    pub fn wait_persisted(&self, payload: &[u8], timeout: Duration) {
        let database = self
            .persistence_file()
            .expect("wait_persisted needs Mosquitto::builder().persistence(true)");
        let saved = poll_until(timeout, || {
            let bytes = fs::read(&database).ok()?;
            bytes
                .windows(payload.len().max(1))
                .any(|window| window == payload)
                .then_some(())
        });
        if saved.is_none() {
            panic!(
                "{} does not hold the payload after {timeout:?}\n{}",
                database.display(),
                self.logs()
            );
        }
    }

    /// SIGKILL: a real broker outage. Clients see their connections drop. Start it again with
    /// [`Mosquitto::restart`].
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts the broker again on the same port with the same config, and waits until it
    /// accepts TCP. If it is still running, it is first stopped with SIGTERM (a clean
    /// shutdown, which also saves persistent state).
    pub fn restart(&mut self) {
        if self.child.try_wait().is_none() {
            self.child.kill_with(Signal::TERM);
            if self.child.wait_exit(START_TIMEOUT).is_none() {
                panic!(
                    "mosquitto ignored SIGTERM for {START_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
        }
        let config = self.dir.path().join("mosquitto.conf");
        let mut child = spawn_broker(&self.dir, &config);
        let port = self.port;
        wait_ready_fixed_port(&mut child, START_TIMEOUT, || port_accepts(port));
        self.child = child;
    }

    /// Publishes `payload` (any bytes) to `topic` with the real `mosquitto_pub -q 1`, so it
    /// returns after the broker's PUBACK. `retain` sets the retain flag; an empty retained
    /// payload clears the topic's retained message.
    ///
    /// # Panics
    /// When `mosquitto_pub` fails (broker down, for example), with its output.
    pub fn mosquitto_pub(&self, topic: &str, payload: &[u8], retain: bool) {
        mosquitto_pub(self.port, topic, payload, retain);
    }

    /// Subscribes to `topic` (wildcards allowed) with a real `mosquitto_sub -q 1`, and returns
    /// once the broker has registered the subscription, so anything published after this call
    /// is received. Retained messages arrive first.
    pub fn subscribe(&self, topic: &str) -> Subscription {
        let number = NEXT_SUBSCRIBER.fetch_add(1, Ordering::Relaxed);
        let client_id = format!("pantau-harness-sub-{number}");
        let mut child = ChildGuard::spawn(
            &format!("mosquitto_sub-{number}"),
            Command::new("mosquitto_sub").args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-i",
                &client_id,
                "-q",
                "1",
                "-t",
                topic,
                // One line per message: hex payload (binary-safe), a space, the topic.
                "-F",
                "%x %t",
            ]),
            self.dir.path(),
        );
        // Mosquitto logs "<client id> <qos> <topic>" once the subscription is in place.
        let registered = format!("{client_id} 1 {topic}");
        let subscribed = poll_until(START_TIMEOUT, || {
            if self
                .child
                .stderr()
                .lines()
                .any(|line| line.ends_with(&registered))
            {
                return Some(true);
            }
            child.try_wait().map(|_| false)
        });
        match subscribed {
            Some(true) => Subscription {
                child,
                topic: topic.to_owned(),
                consumed: 0,
            },
            Some(false) => panic!("mosquitto_sub exited before subscribing\n{}", child.logs()),
            None => panic!(
                "timed out after {START_TIMEOUT:?} waiting for the subscription to {topic:?}\n{}\n{}",
                child.logs(),
                self.logs()
            ),
        }
    }

    /// The next message on `topic` (typically a retained one, or one that something else will
    /// publish within `timeout`): `self.subscribe(topic).recv(timeout).payload`.
    pub fn subscribe_one(&self, topic: &str, timeout: Duration) -> Vec<u8> {
        self.subscribe(topic).recv(timeout).payload
    }
}

/// One message received by a [`Subscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published to.
    pub topic: String,
    /// The payload, byte for byte.
    pub payload: Vec<u8>,
}

/// A running `mosquitto_sub`, from [`Mosquitto::subscribe`]; stopped on drop.
#[derive(Debug)]
pub struct Subscription {
    child: ChildGuard,
    topic: String,
    consumed: usize,
}

impl Subscription {
    /// The next message not yet returned, waiting up to `timeout`.
    ///
    /// # Panics
    /// On timeout, naming the topic.
    pub fn recv(&mut self, timeout: Duration) -> Message {
        self.try_recv(timeout).unwrap_or_else(|| {
            panic!(
                "no message on {:?} within {timeout:?}\n{}",
                self.topic,
                self.child.logs()
            )
        })
    }

    /// Like [`Subscription::recv`], but `None` on timeout: for checking that nothing arrives.
    pub fn try_recv(&mut self, timeout: Duration) -> Option<Message> {
        let message = poll_until(timeout, || {
            let out = self.child.stdout();
            // Only complete lines: mosquitto_sub may be in the middle of writing the last one.
            out.split_inclusive('\n')
                .filter(|line| line.ends_with('\n'))
                .nth(self.consumed)
                .map(parse_line)
        })?;
        self.consumed += 1;
        Some(message)
    }
}

fn parse_line(line: &str) -> Message {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let (hex, topic) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("mosquitto_sub printed {line:?}"));
    let payload = (0..hex.len())
        .step_by(2)
        .map(|at| {
            u8::from_str_radix(&hex[at..at + 2], 16)
                .unwrap_or_else(|err| panic!("hex {hex:?}: {err}"))
        })
        .collect();
    Message {
        topic: topic.to_owned(),
        payload,
    }
}

fn write_config(dir: &TempDir, port: u16, options: &MosquittoBuilder) -> PathBuf {
    let (persistence, users) = (options.persistence, &options.users);
    let mut config = format!(
        "# Run as the invoking user: as root, mosquitto would otherwise switch to the user
# `mosquitto`, which cannot write this 0700 temp dir (persistence fails with EACCES).
user root
listener {port} 127.0.0.1
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
log_type unsubscribe
log_timestamp_format %Y-%m-%dT%H:%M:%S
"
    );
    if let Some(count) = options.max_queued_messages {
        config.push_str(&format!("max_queued_messages {count}\n"));
    }
    for address in &options.also_listen {
        config.push_str(&format!("listener {port} {address}\n"));
    }
    if users.is_empty() {
        config.push_str("allow_anonymous true\n");
    } else {
        let password_file = dir.path().join("passwords");
        for (index, (user, password)) in users.iter().enumerate() {
            let mut command = Command::new("mosquitto_passwd");
            if index == 0 {
                command.arg("-c");
            }
            command
                .arg("-b")
                .arg(&password_file)
                .arg(user)
                .arg(password);
            let output = run_with_timeout(&mut command, b"", START_TIMEOUT);
            assert!(
                output.status.success(),
                "mosquitto_passwd failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        config.push_str(&format!(
            "allow_anonymous false\npassword_file {}\n",
            password_file.display()
        ));
    }
    if persistence {
        config.push_str(&format!(
            "persistence true\npersistence_location {}/\nautosave_on_changes true\nautosave_interval 1\n",
            dir.path().display()
        ));
    } else {
        config.push_str("persistence false\n");
    }
    let path = dir.path().join("mosquitto.conf");
    fs::write(&path, config).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    path
}

fn append_lines(config: &std::path::Path, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let mut text = fs::read_to_string(config).expect("read the mosquitto config");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    fs::write(config, text).expect("write the mosquitto config");
}

fn write_given_config(dir: &TempDir, port: u16, text: &str) -> PathBuf {
    let config = format!(
        "user root\nlog_dest stderr\nlog_type all\n{}\n",
        text.replace("{port}", &port.to_string())
    );
    let path = dir.path().join("mosquitto.conf");
    fs::write(&path, config).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    path
}

fn spawn_broker(dir: &TempDir, config: &std::path::Path) -> ChildGuard {
    ChildGuard::spawn(
        "mosquitto",
        Command::new("mosquitto").arg("-c").arg(config),
        dir.path(),
    )
}

/// Publishes `payload` with the real `mosquitto_pub -q 1` to any broker on 127.0.0.1:`port`
/// (Mosquitto, or the collector's embedded broker); returns after the broker's PUBACK.
///
/// # Panics
/// When `mosquitto_pub` fails, with its output.
pub fn mosquitto_pub(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let mut command = Command::new("mosquitto_pub");
    command.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
    ]);
    if retain {
        command.arg("-r");
    }
    // `-s` reads all of stdin as the payload, so any bytes work; `-n` is the empty one.
    command.arg(if payload.is_empty() { "-n" } else { "-s" });
    let output = run_with_timeout(&mut command, payload, START_TIMEOUT);
    if !output.status.success() {
        panic!(
            "mosquitto_pub to {topic:?} on port {port} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

/// A file of configs/mosquitto, as shipped.
pub fn shipped_mosquitto_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/mosquitto")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Mosquitto with the shipped configs/mosquitto/mosquitto.conf and pantau-acl, as README's
/// LAN setup installs them: every `/etc/mosquitto/pantau/` path points into `dir`, the TLS
/// listener is on 127.0.0.1 and persistence is off, nothing else changes. `dir` must hold
/// `ca.pem` and `server_file`.pem/.key ([`crate::TestCa`]); `users` (name, password) are
/// written with the real `mosquitto_passwd` into `dir/passwords`. `more` are further
/// `(from, to)` substitutions, each of which must apply (uncommenting a shipped option).
pub fn start_shipped(
    dir: &std::path::Path,
    server_file: &str,
    users: &[(&str, &str)],
    more: &[(&str, &str)],
) -> Mosquitto {
    fs::write(dir.join("pantau-acl"), shipped_mosquitto_file("pantau-acl"))
        .expect("write pantau-acl");
    crate::write_password_file(&dir.join("passwords"), users, &[]);
    let mut config = shipped_mosquitto_file("mosquitto.conf");
    let replacements = [
        ("/etc/mosquitto/pantau/", format!("{}/", dir.display())),
        ("listener 8883", "listener {port} 127.0.0.1".to_owned()),
        ("persistence true", "persistence false".to_owned()),
        ("persistence_location /var/lib/mosquitto/\n", String::new()),
        ("server.pem", format!("{server_file}.pem")),
        ("server.key", format!("{server_file}.key")),
    ];
    let more = more.iter().map(|(from, to)| (*from, (*to).to_owned()));
    for (from, to) in replacements.into_iter().chain(more) {
        assert!(config.contains(from), "mosquitto.conf lost {from:?}");
        config = config.replace(from, &to);
    }
    Mosquitto::builder().config(&config).start()
}
