//! The Pantau binaries under test: a collector and agents started from the example configs in
//! `configs/` with `PANTAU_<SECTION>__<KEY>` overrides for ports and paths (so every test also
//! proves the shipped configs work), plus reading single series out of `/metrics`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{ChildGuard, Mosquitto, TestDir, free_port, http_get, pantau_binary, wait_until};

/// A read-only API token every collector under test accepts (`Collector::api` sends it):
/// everything under `/api/v1/` needs a login. The harness appends it to the test's own
/// `PANTAU_API__TOKEN_FILE`, or writes a token file of its own.
pub const VIEWER_TOKEN: &str = "harness-viewer-token-0123456789";

/// How long a binary may take to start and become ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The example config `name` in the repository's `configs/`.
pub fn example_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name)
}

/// A running `pantau-collector`.
pub struct Collector {
    guard: ChildGuard,
    http_port: u16,
    /// The embedded broker's port, when it runs one.
    mqtt_port: Option<u16>,
    /// How it was started, for `restart`.
    log_dir: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Collector {
    /// A collector with its embedded broker on a free port of 127.0.0.1, open to anyone (no
    /// password file: the example config's is switched off, which loopback allows).
    pub fn embedded(dir: &TestDir) -> Collector {
        Collector::embedded_with_env(dir, &[])
    }

    /// A collector whose embedded broker admits only `users` (name, password), written with
    /// the real `mosquitto_passwd`; `extra_lines` are appended to the file verbatim.
    pub fn embedded_with_users(
        dir: &TestDir,
        users: &[(&str, &str)],
        extra_lines: &[&str],
    ) -> Collector {
        let file = dir.join("broker-users");
        write_password_file(&file, users, extra_lines);
        let file = file.display().to_string();
        Collector::embedded_with_env(dir, &[("PANTAU_BROKER__PASSWORD_FILE", file.as_str())])
    }

    /// A collector with its embedded broker on a free port of 127.0.0.1, open to anyone, plus
    /// overrides (which may set a password file after all).
    pub fn embedded_with_env(dir: &TestDir, extra: &[(&str, &str)]) -> Collector {
        let mqtt_port = free_port();
        let mut env = vec![
            (
                "PANTAU_BROKER__LISTEN".to_owned(),
                format!("127.0.0.1:{mqtt_port}"),
            ),
            // Loopback needs no password file; a later override may name one.
            ("PANTAU_BROKER__PASSWORD_FILE".to_owned(), String::new()),
        ];
        env.extend(owned(extra));
        Collector::start(dir, env, Some(mqtt_port))
    }

    /// A collector subscribed to `broker` (embedded broker off).
    pub fn with_broker(dir: &TestDir, broker: &Mosquitto) -> Collector {
        Collector::with_env(dir, broker, &[])
    }

    /// As `with_broker`, plus extra environment overrides.
    pub fn with_env(dir: &TestDir, broker: &Mosquitto, extra: &[(&str, &str)]) -> Collector {
        Collector::with_config(dir, broker, &example_config("collector.toml"), extra)
    }

    /// As `with_env`, serving HTTP on `http_port` of 127.0.0.1 (a port the test chose first,
    /// e.g. for a Prometheus scrape job written before the collector starts).
    pub fn with_env_at(
        dir: &TestDir,
        broker: &Mosquitto,
        http_port: u16,
        extra: &[(&str, &str)],
    ) -> Collector {
        let env = external_broker_env(broker, extra);
        Collector::start_at(dir, &example_config("collector.toml"), env, None, http_port)
    }

    /// A collector subscribed to the external broker(s) of `broker_url` (several,
    /// comma-separated, to fail over between: a cluster's nodes), serving HTTP on
    /// `http_port`, plus overrides.
    pub fn with_url_at(
        dir: &TestDir,
        broker_url: &str,
        http_port: u16,
        extra: &[(&str, &str)],
    ) -> Collector {
        let env = external_url_env(broker_url, extra);
        Collector::start_at(dir, &example_config("collector.toml"), env, None, http_port)
    }

    /// As `with_env`, reading `config` instead of the example config.
    pub fn with_config(
        dir: &TestDir,
        broker: &Mosquitto,
        config: &Path,
        extra: &[(&str, &str)],
    ) -> Collector {
        let env = external_broker_env(broker, extra);
        Collector::start_config(dir, config, env, None)
    }

    fn start(dir: &TestDir, env: Vec<(String, String)>, mqtt_port: Option<u16>) -> Collector {
        Collector::start_config(dir, &example_config("collector.toml"), env, mqtt_port)
    }

    fn start_config(
        dir: &TestDir,
        config: &Path,
        env: Vec<(String, String)>,
        mqtt_port: Option<u16>,
    ) -> Collector {
        Collector::start_at(dir, config, env, mqtt_port, free_port())
    }

    fn start_at(
        dir: &TestDir,
        config: &Path,
        env: Vec<(String, String)>,
        mqtt_port: Option<u16>,
        http_port: u16,
    ) -> Collector {
        let env = with_viewer_token(dir, env);
        let guard = Collector::spawn(dir.path(), config, &env, http_port);
        let mut collector = Collector {
            guard,
            http_port,
            mqtt_port,
            log_dir: dir.path().to_owned(),
            config: config.to_owned(),
            env,
        };
        collector.wait_ready();
        collector
    }

    fn spawn(
        log_dir: &Path,
        config: &Path,
        env: &[(String, String)],
        http_port: u16,
    ) -> ChildGuard {
        let mut command = Command::new(pantau_binary("pantau-collector"));
        command
            .arg("--config")
            .arg(config)
            .env("PANTAU_HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .env("PANTAU_LOG", "info,pantau_collector=debug")
            // Agents in tests report every second; a short default makes silence show quickly.
            .env("PANTAU_AGENTS__DEFAULT_INTERVAL_SECONDS", "1")
            // Its own storage (sequence accounting, announcements) in the test's dir, kept
            // across `restart`; a test may name another.
            .env("PANTAU_STORAGE__DIR", log_dir.join("collector-storage"))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        ChildGuard::spawn("collector", &mut command, log_dir)
    }

    /// Stops the collector with SIGTERM (a clean shutdown), waits for it to exit, and starts
    /// it again with the same config, ports and storage; returns once it is ready.
    pub fn restart(&mut self) {
        self.guard.kill_with(crate::Signal::TERM);
        if self.guard.wait_exit(START_TIMEOUT).is_none() {
            panic!(
                "collector ignored SIGTERM for {START_TIMEOUT:?}\n{}",
                self.logs()
            );
        }
        self.guard = Collector::spawn(&self.log_dir, &self.config, &self.env, self.http_port);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let readyz = format!("http://127.0.0.1:{}/readyz", self.http_port);
        let guard = &mut self.guard;
        wait_until("the collector to be ready", START_TIMEOUT, || {
            if let Some(status) = guard.try_wait() {
                panic!(
                    "collector exited ({status}) while starting\n{}",
                    guard.logs()
                );
            }
            matches!(http_get(&readyz), Ok((200, _))).then_some(())
        });
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The embedded broker's URL for agents.
    pub fn broker_url(&self) -> String {
        let port = self.mqtt_port.expect("collector runs no embedded broker");
        format!("mqtt://127.0.0.1:{port}")
    }

    /// The embedded broker's port.
    pub fn broker_port(&self) -> u16 {
        self.mqtt_port.expect("collector runs no embedded broker")
    }

    /// The current `/metrics` text.
    pub fn metrics(&self) -> String {
        match http_get(&format!("{}/metrics", self.url())) {
            Ok((200, body)) => body,
            other => panic!("GET /metrics: {other:?}\n{}", self.guard.logs()),
        }
    }

    /// The value of the series written exactly as `series` (`name{label="v",...}`, labels in
    /// exposition order), if present.
    pub fn sample(&self, series: &str) -> Option<f64> {
        sample(&self.metrics(), series)
    }

    /// Waits until `series` is present and `accept`s its value; returns the value.
    pub fn wait_for_sample(
        &self,
        series: &str,
        timeout: Duration,
        accept: impl Fn(f64) -> bool,
    ) -> f64 {
        let found = crate::poll_until(timeout, || self.sample(series).filter(|v| accept(*v)));
        found.unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {series} (now {:?})\n{}",
                self.sample(series),
                self.guard.logs()
            )
        })
    }

    /// `GET` of an API path with the harness's viewer token, as JSON.
    pub fn api(&self, path: &str) -> (u16, serde_json::Value) {
        let bearer = format!("Bearer {VIEWER_TOKEN}");
        let (status, body) = crate::http_get_with(
            &format!("{}{path}", self.url()),
            &[("Authorization", bearer.as_str())],
        )
        .unwrap_or_else(|error| panic!("GET {path}: {error}"));
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|error| panic!("GET {path}: not JSON ({error}): {body}"));
        (status, json)
    }

    /// Waits until `GET path` answers `status` with JSON that `accept`s; returns the JSON.
    pub fn wait_for_api(
        &self,
        path: &str,
        status: u16,
        timeout: Duration,
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let found = crate::poll_until(timeout, || {
            let (got, json) = self.api(path);
            (got == status && accept(&json)).then_some(json)
        });
        found.unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for GET {path} to answer {status} as expected \
                 (now {:?})\n{}",
                self.api(path),
                self.guard.logs()
            )
        })
    }

    /// `GET /readyz`: status and body.
    pub fn readyz(&self) -> (u16, String) {
        http_get(&format!("{}/readyz", self.url()))
            .unwrap_or_else(|error| panic!("GET /readyz: {error}\n{}", self.guard.logs()))
    }

    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }

    /// The collector's process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn logs(&self) -> String {
        self.guard.logs()
    }
}

/// `env` with a token file that holds `VIEWER_TOKEN`: the test's own file gets it appended
/// (once), otherwise the harness writes one in `dir`.
fn with_viewer_token(dir: &TestDir, mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    let line = format!("{VIEWER_TOKEN} viewer\n");
    let named = env
        .iter()
        .rev()
        .find(|(key, _)| key == "PANTAU_API__TOKEN_FILE")
        .map(|(_, value)| value.clone());
    match named {
        Some(file) if !file.is_empty() => {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if !text.contains(VIEWER_TOKEN) {
                let separator = if text.is_empty() || text.ends_with('\n') {
                    ""
                } else {
                    "\n"
                };
                std::fs::write(&file, format!("{text}{separator}{line}"))
                    .unwrap_or_else(|error| panic!("writing {file}: {error}"));
            }
        }
        _ => {
            let file = dir.join("harness-api-tokens");
            std::fs::write(&file, &line).expect("write the harness's token file");
            env.push((
                "PANTAU_API__TOKEN_FILE".to_owned(),
                file.display().to_string(),
            ));
        }
    }
    env
}

/// The environment of a collector that uses `broker` instead of its embedded one, plus `extra`.
fn external_broker_env(broker: &Mosquitto, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    external_url_env(&broker.url(), extra)
}

fn external_url_env(broker_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("PANTAU_BROKER__EMBEDDED".to_owned(), "false".to_owned()),
        ("PANTAU_MQTT__URL".to_owned(), broker_url.to_owned()),
    ];
    env.extend(owned(extra));
    env
}

fn owned<'a>(pairs: &'a [(&str, &str)]) -> impl Iterator<Item = (String, String)> + 'a {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
}

/// A running `pantau-agent` with host metrics, started from `configs/agent-server.toml`.
pub struct Agent {
    guard: ChildGuard,
    pub id: String,
    pub state_dir: PathBuf,
}

impl Agent {
    /// Starts agent `id` of site `site` reporting every `interval_seconds` to `broker_url`,
    /// keeping its state in `<dir>/<id>`.
    pub fn start(
        dir: &TestDir,
        id: &str,
        site: &str,
        broker_url: &str,
        interval_seconds: u64,
    ) -> Agent {
        Agent::start_with(dir, id, site, broker_url, interval_seconds, &[])
    }

    /// As `start`, plus extra environment overrides.
    pub fn start_with(
        dir: &TestDir,
        id: &str,
        site: &str,
        broker_url: &str,
        interval_seconds: u64,
        extra: &[(&str, &str)],
    ) -> Agent {
        Agent::start_config(
            dir,
            "agent-server.toml",
            id,
            site,
            broker_url,
            interval_seconds,
            extra,
        )
    }

    /// As `start_with`, from another example config in `configs/`.
    pub fn start_config(
        dir: &TestDir,
        config: &str,
        id: &str,
        site: &str,
        broker_url: &str,
        interval_seconds: u64,
        extra: &[(&str, &str)],
    ) -> Agent {
        let command = Command::new(pantau_binary("pantau-agent"));
        Agent::start_command(
            command,
            dir,
            config,
            id,
            site,
            broker_url,
            interval_seconds,
            extra,
        )
    }

    /// A sound agent from `configs/agent-sound.toml` playing into `capture`, with its own
    /// command key derived from the collector's master key in `master_key_file`, a `clips`
    /// dir of its own and no quiet hours; returns once it listens for commands.
    pub fn start_sound(
        dir: &TestDir,
        id: &str,
        site: &str,
        broker_url: &str,
        capture: &crate::AudioCapture,
        master_key_file: &Path,
    ) -> Agent {
        let clips = dir.join(format!("{id}-clips"));
        std::fs::create_dir_all(&clips).expect("create the clips dir");
        let key_file = crate::derive_agent_key_file(dir.path(), master_key_file, id);
        let mut env = capture.env();
        env.push((
            "PANTAU_SOUND__KEY_FILE".to_owned(),
            key_file.display().to_string(),
        ));
        env.push((
            "PANTAU_SOUND__CLIPS_DIR".to_owned(),
            clips.display().to_string(),
        ));
        env.push(("PANTAU_SOUND__QUIET_HOURS".to_owned(), String::new()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut agent = Agent::start_config(dir, "agent-sound.toml", id, site, broker_url, 1, &env);
        agent
            .guard()
            .wait_for_log("subscribed to commands", Duration::from_secs(30));
        agent
    }

    /// As `start_config`, running inside network namespace `netns` (a [`crate::NetnsPair`]'s
    /// `name`): `ip netns exec` replaces itself with the agent, so the guard's process is the
    /// agent's.
    #[allow(clippy::too_many_arguments)]
    pub fn start_in_netns(
        netns: &str,
        dir: &TestDir,
        config: &str,
        id: &str,
        site: &str,
        broker_url: &str,
        interval_seconds: u64,
        extra: &[(&str, &str)],
    ) -> Agent {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns])
            .arg(pantau_binary("pantau-agent"));
        Agent::start_command(
            command,
            dir,
            config,
            id,
            site,
            broker_url,
            interval_seconds,
            extra,
        )
    }

    /// An agent as installed by `pantau-agent init`: `config` as written, with the
    /// `KEY=value` lines of `env_file` in its environment (systemd's EnvironmentFile), plus
    /// `extra` overrides. `state_dir` is the config's `agent.state_dir`.
    pub fn start_installed(
        dir: &TestDir,
        id: &str,
        config: &Path,
        env_file: &Path,
        state_dir: &Path,
        extra: &[(&str, &str)],
    ) -> Agent {
        let text = std::fs::read_to_string(env_file)
            .unwrap_or_else(|error| panic!("{}: {error}", env_file.display()));
        let env: Vec<(&str, &str)> = text
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .map(|line| line.split_once('=').expect("a KEY=value line"))
            .collect();
        let mut command = Command::new(pantau_binary("pantau-agent"));
        command
            .arg("--config")
            .arg(config)
            .env("PANTAU_LOG", "info,pantau_agent=debug")
            .envs(env)
            .envs(extra.iter().copied());
        let guard = ChildGuard::spawn(&format!("agent-{id}"), &mut command, dir.path());
        Agent {
            guard,
            id: id.to_owned(),
            state_dir: state_dir.to_owned(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_command(
        mut command: Command,
        dir: &TestDir,
        config: &str,
        id: &str,
        site: &str,
        broker_url: &str,
        interval_seconds: u64,
        extra: &[(&str, &str)],
    ) -> Agent {
        let state_dir = dir.join(id);
        command
            .arg("--config")
            .arg(example_config(config))
            .env("PANTAU_AGENT__ID", id)
            .env("PANTAU_AGENT__SITE", site)
            .env(
                "PANTAU_AGENT__INTERVAL_SECONDS",
                interval_seconds.to_string(),
            )
            .env("PANTAU_AGENT__STATE_DIR", &state_dir)
            .env("PANTAU_MQTT__URL", broker_url)
            .env("PANTAU_LOG", "info,pantau_agent=debug")
            .envs(extra.iter().copied());
        let guard = ChildGuard::spawn(&format!("agent-{id}"), &mut command, dir.path());
        Agent {
            guard,
            id: id.to_owned(),
            state_dir,
        }
    }

    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }

    pub fn logs(&self) -> String {
        self.guard.logs()
    }
}

/// Writes a Mosquitto password file with the real `mosquitto_passwd`, plus `extra_lines`.
pub fn write_password_file(path: &Path, users: &[(&str, &str)], extra_lines: &[&str]) {
    std::fs::write(path, "").expect("create the password file");
    for (user, password) in users {
        let output = crate::run_with_timeout(
            Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(path)
                .arg(user)
                .arg(password),
            b"",
            START_TIMEOUT,
        );
        assert!(
            output.status.success(),
            "mosquitto_passwd: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if !extra_lines.is_empty() {
        let mut text = std::fs::read_to_string(path).expect("read the password file");
        for line in extra_lines {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(path, text).expect("write the password file");
    }
}

/// The value of the series written exactly as `series` in exposition `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_finds_exact_series_only() {
        let text = "# TYPE x gauge\nx{a=\"1\"} 2.5\nx{a=\"10\"} 7\nxy 1\n";
        assert_eq!(sample(text, "x{a=\"1\"}"), Some(2.5));
        assert_eq!(sample(text, "x{a=\"10\"}"), Some(7.0));
        assert_eq!(sample(text, "x"), None);
        assert_eq!(sample(text, "xy"), Some(1.0));
    }
}
