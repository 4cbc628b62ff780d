//! The Debian packages on a Debian machine with real systemd as PID 1 (systemd-nspawn):
//! installed with apt as an admin would, set up with `init`, `agent add` and `agent init`,
//! restarted, rebooted, upgraded from the previous release and removed.
//!
//! The packages come from `scripts/package` (a release build; incremental after the first),
//! the previous release's from `scripts/package --ref v0.1.0` (built once per machine and
//! cached). Each container has a private network: everything the test talks to is inside it.
//! Needs root, systemd-nspawn and debootstrap (scripts/install-test-packages). The tests are
//! `#[ignore]`d in a plain `cargo test`, because they build packages for minutes:
//! scripts/test runs them with `--ignored`, alongside the rest of the suite, so CI always does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use pantau_tests::{Container, TestDir, run_with_timeout};
use serde_json::Value;

/// The release the upgrade starts from: main as it was before the packages existed.
const PREVIOUS_RELEASE: &str = "v0.1.0";
/// The commit that tag names, for a clone without tags.
const PREVIOUS_RELEASE_COMMIT: &str = "f801cc1";
const NAME: &str = "pantau.test";
const ADMIN_PASSWORD: &str = "Kantor-Kominfo-2026";
const OPERATOR_PASSWORD: &str = "Operator-Rina-2026";
const WAIT: Duration = Duration::from_secs(90);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

/// Runs scripts/package with `args` into `out` (once per test process and set of arguments).
fn package(out: &str, args: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = workspace().join("target").join(out);
    if !built.contains(&out.to_owned()) {
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        // The environment of a shell, not of `cargo test` (CARGO_*, OUT_DIR...), so the build
        // reuses what an admin's `scripts/package` compiled, and the other way round.
        let mut command = Command::new(workspace().join("scripts/package"));
        command.env_clear();
        for name in [
            "PATH",
            "HOME",
            "LANG",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_AUTO_INSTALL",
        ] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let output = run_with_timeout(
            command.arg("--out").arg(&dir).args(args),
            b"",
            Duration::from_secs(3600),
        );
        assert!(
            output.status.success(),
            "scripts/package {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!(
            "scripts/package {args:?}: {:.0} s\n{}",
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&output.stdout)
        );
        built.push(out.to_owned());
    }
    dir
}

fn new_packages() -> PathBuf {
    package("debian-test", &["--profile", "package-test"])
}

fn previous_packages() -> PathBuf {
    let tagged = Command::new("git")
        .args([
            "-C",
            &workspace().display().to_string(),
            "rev-parse",
            "--verify",
            "-q",
        ])
        .arg(format!("{PREVIOUS_RELEASE}^{{commit}}"))
        .output()
        .is_ok_and(|output| output.status.success());
    let reference = if tagged {
        PREVIOUS_RELEASE
    } else {
        PREVIOUS_RELEASE_COMMIT
    };
    package(
        "debian-previous",
        &["--profile", "package-test", "--ref", reference, "--no-lean"],
    )
}

/// `name_<version>_<arch>.deb` in `dir`, as its path inside the container (under /share).
fn deb(dir: &Path, name: &str, inside: &str) -> String {
    let prefix = format!("{name}_");
    let file = std::fs::read_dir(dir)
        .expect("the package dir")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|file| file.starts_with(&prefix) && file.ends_with(".deb"))
        .unwrap_or_else(|| panic!("no {name} package in {}", dir.display()));
    format!("{inside}/{file}")
}

/// The ALSA default device of the container: a file the test reads, as in the other sound
/// tests (the container has no sound card). The agent's state dir is where it may write.
const ASOUND_CONF: &str = r#"pcm.!default {
    type plug
    slave { pcm "capture"; format S16_LE; rate 48000; channels 2 }
}
pcm.capture {
    type file
    slave.pcm "null"
    file "/var/lib/pantau/agent/played.raw"
    format "raw"
}
"#;

fn prepare(container: &Container) {
    container.stdout(&format!(
        "echo '127.0.0.1 {NAME}' >> /etc/hosts && cat > /etc/asound.conf <<'EOF'\n{ASOUND_CONF}EOF"
    ));
}

/// An HTTPS request to the collector inside the container with curl and the office CA;
/// returns (status, body).
fn https(container: &Container, args: &str, path: &str) -> (u16, String) {
    let output = container.run(&format!(
        "curl -sS --cacert /etc/pantau/tls/ca.pem -o /tmp/body -w '%{{http_code}}' {args} 'https://{NAME}:9810{path}'; echo; cat /tmp/body"
    ));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// A bearer-token request with the operator token init wrote.
fn api(container: &Container, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut args = format!(
        "-X {method} -H \"Authorization: Bearer $(awk 'NR==1{{print $1}}' /etc/pantau/api-tokens)\""
    );
    if let Some(body) = body {
        args.push_str(&format!(
            " -H 'Content-Type: application/json' --data '{body}'"
        ));
    }
    let (status, text) = https(container, &args, path);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn metrics(container: &Container) -> String {
    let (status, text) = https(
        container,
        "-H \"Authorization: Bearer $(awk 'NR==1{print $1}' /etc/pantau/metrics-tokens)\"",
        "/metrics",
    );
    assert_eq!(status, 200, "{text}");
    text
}

fn announce(container: &Container, agent: &str, text: &str) -> String {
    let (status, body) = api(
        container,
        "POST",
        "/api/v1/announcements",
        Some(&format!(
            r#"{{"text":"{text}","targets":["{agent}"],"chime":false}}"#
        )),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("an announcement id").to_owned()
}

fn wait_for_outcome(container: &Container, id: &str) -> String {
    let started = Instant::now();
    loop {
        let (_, body) = api(
            container,
            "GET",
            &format!("/api/v1/announcements/{id}"),
            None,
        );
        let status = body["targets"][0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if ["finished", "failed", "expired", "stopped"].contains(&status.as_str()) {
            return status;
        }
        assert!(
            started.elapsed() < WAIT,
            "announcement {id} stayed {status}: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn agent_view(container: &Container, agent: &str) -> Value {
    let (status, body) = api(container, "GET", &format!("/api/v1/agents/{agent}"), None);
    assert_eq!(status, 200, "{body}");
    body
}

fn show(container: &Container, unit: &str, property: &str) -> String {
    container
        .stdout(&format!("systemctl show -p {property} --value {unit}"))
        .trim()
        .to_owned()
}

/// Every unit is active under its shipped unit and has not restarted in 20 s.
fn assert_running_without_restarts(container: &Container, units: &[&str]) {
    for unit in units {
        container.wait_for(
            &format!("{unit} active"),
            WAIT,
            &format!("systemctl is-active {unit}"),
        );
    }
    std::thread::sleep(Duration::from_secs(20));
    for unit in units {
        assert_eq!(show(container, unit, "ActiveState"), "active", "{unit}");
        assert_eq!(show(container, unit, "NRestarts"), "0", "{unit} restarted");
    }
}

fn exposure(container: &Container, unit: &str) -> f64 {
    let text = container.stdout(&format!(
        "systemd-analyze security --no-pager {unit} 2>&1 | tail -n 1"
    ));
    let score = text
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {text}"));
    eprintln!("systemd-analyze security {unit}: {score}");
    score
}

fn rss_kib(container: &Container, program: &str) -> u64 {
    container
        .stdout(&format!("ps -o rss= -C {program} | head -n 1"))
        .trim()
        .parse()
        .expect("an RSS")
}

/// What the test seeded, looked up again after each restart.
struct Seeded {
    announcements: Vec<String>,
    messages_before: u64,
}

fn assert_kept(container: &Container, seeded: &Seeded, agent: &str) {
    container.wait_for(
        "the collector ready",
        WAIT,
        &format!("curl -fsS --cacert /etc/pantau/tls/ca.pem https://{NAME}:9810/readyz"),
    );
    for id in &seeded.announcements {
        let (status, body) = api(
            container,
            "GET",
            &format!("/api/v1/announcements/{id}"),
            None,
        );
        assert_eq!(status, 200, "announcement {id} is gone: {body}");
    }
    let (status, _) = https(
        container,
        &format!("-u rina:{OPERATOR_PASSWORD}"),
        "/api/v1/agents",
    );
    assert_eq!(status, 200, "the operator added before the restart logs in");
    let view = agent_view(container, agent);
    let messages = view["messages_total"].as_u64().unwrap_or(0);
    assert!(
        messages >= seeded.messages_before,
        "the sequence accounting started again: {messages} < {}: {view}",
        seeded.messages_before
    );
}

#[test]
#[ignore = "scripts/test runs it alongside the suite (root, systemd-nspawn, package builds)"]
fn packages_install_run_sandboxed_survive_restarts_and_remove_cleanly() {
    let started = Instant::now();
    let debs = new_packages();
    let dir = TestDir::new();
    let mut container = Container::boot(dir.path(), "pantau-install", &[(&debs, "/share")]);
    prepare(&container);
    let collector_deb = deb(&debs, "pantau-collector", "/share");
    let agent_deb = deb(&debs, "pantau-agent", "/share");
    container.stdout(&format!(
        "apt-get install -y -q {collector_deb} {agent_deb}"
    ));

    // Installed, enabled, and waiting for init (inactive, not failed).
    for unit in ["pantau-collector", "pantau-agent"] {
        assert_eq!(show(&container, unit, "UnitFileState"), "enabled", "{unit}");
        assert_eq!(show(&container, unit, "ActiveState"), "inactive", "{unit}");
    }
    assert_eq!(
        container.stdout("stat -c '%U:%G %a' /etc/pantau").trim(),
        "root:pantau 750"
    );

    // The admin's path: init, then agent add, then agent init.
    let init = container.run_with_input(
        &format!("pantau-collector init --name {NAME} --address 127.0.0.1 --admin-password-stdin"),
        format!("{ADMIN_PASSWORD}\n").as_bytes(),
    );
    assert!(init.status.success(), "init: {init:?}");
    container.wait_for(
        "the collector ready over HTTPS",
        WAIT,
        &format!("curl -fsS --cacert /etc/pantau/tls/ca.pem https://{NAME}:9810/readyz"),
    );
    let without_ca = container.run(&format!("curl -sS https://{NAME}:9810/readyz"));
    assert_eq!(
        without_ca.status.code(),
        Some(60),
        "curl without the CA: {without_ca:?}"
    );

    let add =
        container.stdout("pantau-collector agent add office-sound --role sound --site office");
    assert!(
        add.to_lowercase().contains("secret"),
        "the bundle is called a secret: {add}"
    );
    assert_eq!(
        container
            .stdout("stat -c '%U %a' /etc/pantau/agents/office-sound.bundle")
            .trim(),
        "root 600"
    );
    container.stdout("pantau-agent init --bundle /etc/pantau/agents/office-sound.bundle");
    let start = Instant::now();
    while !metrics(&container).lines().any(|line| {
        line.starts_with("pantau_agent_up{")
            && line.contains("office-sound")
            && line.ends_with(" 1")
    }) {
        assert!(
            start.elapsed() < WAIT,
            "the agent never reached /metrics:\n{}",
            container.stdout("journalctl -u pantau-agent -u mosquitto --no-pager | tail -n 40")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The agent reached Mosquitto's TLS listener, not the loopback one.
    let agent_config = container.stdout("cat /etc/pantau/agent.toml");
    assert!(agent_config.contains("mqtts://"), "{agent_config}");

    // The console over HTTPS with the admin password init was given.
    let login = container.stdout(&format!(
        "cd /tmp && rm -f jar && curl -sS --cacert /etc/pantau/tls/ca.pem -c jar -b jar https://{NAME}:9810/console/login > form.html \
         && csrf=$(grep -o 'name=\"csrf\" value=\"[^\"]*\"' form.html | head -n 1 | sed 's/.*value=\"//; s/\"$//') \
         && curl -sS --cacert /etc/pantau/tls/ca.pem -c jar -b jar -o /dev/null -w '%{{http_code}} %{{redirect_url}}' \
            --data-urlencode user=admin --data-urlencode password='{ADMIN_PASSWORD}' --data-urlencode csrf=\"$csrf\" \
            https://{NAME}:9810/console/login"
    ));
    assert!(
        login.starts_with("303") && login.contains("/console/now"),
        "console login: {login}"
    );

    // An announcement reaches the sound agent and its speakers (ALSA's file plugin).
    let first = announce(&container, "office-sound", "Mohon tetap memakai masker");
    assert_eq!(wait_for_outcome(&container, &first), "finished");
    let played: u64 = container
        .stdout("stat -c %s /var/lib/pantau/agent/played.raw")
        .trim()
        .parse()
        .expect("a size");
    assert!(
        played > 48_000 * 4,
        "about a second of audio or more: {played} bytes"
    );

    // The units as shipped, with their sandbox.
    assert_running_without_restarts(
        &container,
        &["mosquitto", "pantau-collector", "pantau-agent"],
    );
    assert_eq!(
        show(&container, "pantau-collector", "ProtectSystem"),
        "strict"
    );
    assert_eq!(show(&container, "pantau-collector", "User"), "pantau");
    assert_eq!(
        show(&container, "pantau-agent", "DeviceAllow"),
        "char-alsa rw"
    );
    let collector_exposure = exposure(&container, "pantau-collector");
    assert!(
        collector_exposure <= 2.5,
        "collector exposure {collector_exposure}"
    );
    let agent_exposure = exposure(&container, "pantau-agent");
    assert!(agent_exposure < 5.0, "agent exposure {agent_exposure}");
    // The peer in the same machine: Debian's own unit for Mosquitto (BENCHMARKS.md).
    exposure(&container, "mosquitto");
    eprintln!(
        "idle RSS: pantau-collector {} KiB, pantau-agent {} KiB, mosquitto {} KiB",
        rss_kib(&container, "pantau-collector"),
        rss_kib(&container, "pantau-agent"),
        rss_kib(&container, "mosquitto")
    );
    // journalctl shows the lines as written: no second timestamp, no colours, priorities.
    let journal = container.stdout("journalctl -u pantau-collector -o cat --no-pager");
    assert!(
        !journal.contains('\u{1b}'),
        "ANSI colours in the journal:\n{journal}"
    );
    assert!(
        !journal
            .lines()
            .any(|line| line.len() > 4 && line.as_bytes()[..4].iter().all(u8::is_ascii_digit)),
        "a line starts with a timestamp of its own:\n{journal}"
    );
    let info = container
        .stdout("journalctl -u pantau-collector -p info -o cat --no-pager | grep -c . || true");
    assert!(
        info.trim().parse::<u32>().unwrap_or(0) > 0,
        "priorities reach the journal"
    );

    // Seed users, history and sequence accounting; then restart, and reboot.
    container.stdout(&format!(
        "printf '%s\\n' '{OPERATOR_PASSWORD}' | pantau-collector user add rina --role operator && systemctl reload pantau-collector"
    ));
    let second = announce(&container, "office-sound", "Rapat dimulai");
    assert_eq!(wait_for_outcome(&container, &second), "finished");
    let seeded = Seeded {
        announcements: vec![first, second],
        messages_before: agent_view(&container, "office-sound")["messages_total"]
            .as_u64()
            .unwrap_or(0),
    };
    assert!(seeded.messages_before > 0);
    assert_kept(&container, &seeded, "office-sound");
    container.stdout("systemctl restart pantau-collector pantau-agent");
    assert_kept(&container, &seeded, "office-sound");
    container.reboot();
    assert_running_without_restarts(
        &container,
        &["mosquitto", "pantau-collector", "pantau-agent"],
    );
    assert_kept(&container, &seeded, "office-sound");
    let with_ca = container.run(&format!(
        "curl -fsS --cacert /etc/pantau/tls/ca.pem https://{NAME}:9810/readyz"
    ));
    assert!(with_ca.status.success(), "{with_ca:?}");
    let without_ca = container.run(&format!("curl -sS https://{NAME}:9810/readyz"));
    assert!(!without_ca.status.success());

    // Revoking the agent: its login goes and its live connection ends.
    container.stdout("pantau-collector agent remove office-sound");
    container.wait_for(
        "the revoked agent down",
        WAIT,
        "journalctl -u pantau-agent --no-pager | grep -qi 'not authori'",
    );

    // remove keeps config and data; purge of one keeps what the other uses; purge of both
    // removes everything, the user included.
    container.stdout("apt-get remove -y -q pantau-agent");
    container.stdout("test -f /etc/pantau/agent.toml && test -d /var/lib/pantau/agent && test -f /var/lib/pantau/agent/played.raw");
    container.stdout("apt-get purge -y -q pantau-agent");
    container.stdout("test ! -e /etc/pantau/agent.toml && test ! -e /var/lib/pantau/agent");
    container.stdout("test -f /etc/pantau/collector.toml && test -f /var/lib/pantau/collector/pantau.sqlite && id pantau");
    container.stdout("apt-get remove -y -q pantau-collector");
    container.stdout("test -f /etc/pantau/collector.toml && test -f /var/lib/pantau/collector/pantau.sqlite && id pantau");
    container.stdout("apt-get purge -y -q pantau-collector");
    container.stdout("test ! -e /etc/pantau && test ! -e /var/lib/pantau && ! id pantau && test ! -e /etc/mosquitto/conf.d/pantau.conf");
    eprintln!("package test: {:.0} s", started.elapsed().as_secs_f64());
}

#[test]
#[ignore = "scripts/test runs it alongside the suite (root, systemd-nspawn, package builds)"]
fn upgrade_from_the_previous_release_keeps_config_users_history_outbox_and_sequences() {
    let started = Instant::now();
    let previous = previous_packages();
    let debs = new_packages();
    let dir = TestDir::new();
    let mut container = Container::boot(
        dir.path(),
        "pantau-upgrade",
        &[(&previous, "/previous"), (&debs, "/share")],
    );
    prepare(&container);
    container.stdout(&format!(
        "apt-get install -y -q {} {}",
        deb(&previous, "pantau-collector", "/previous"),
        deb(&previous, "pantau-agent", "/previous")
    ));
    // The previous release had no init: set it up as its README said, on one host, with the
    // collector's embedded broker on loopback.
    container.stdout(
        "set -e
        # The embedded broker takes loopback's 1883, which Debian's Mosquitto holds by default.
        systemctl disable --now mosquitto
        cd /etc/pantau
        sed -e 's|^dir = .*|dir = \"/var/lib/pantau/collector\"|' \
            -e 's|^# token_file = .*|token_file = \"/etc/pantau/api-tokens\"|' \
            -e 's|^# users_file = .*|users_file = \"/var/lib/pantau/collector/api-users\"|' \
            -e 's|^# key_file = .*|key_file = \"/etc/pantau/command-master.key\"|' \
            -e 's|^password_file = .*||' \
            /usr/share/pantau/examples/collector.toml > collector.toml
        head -c 32 /dev/urandom | base64 > command-master.key
        echo \"$(head -c 24 /dev/urandom | base64 | tr -d '+/=') operator\" > api-tokens
        pantau-collector key derive office-sound --key-file command-master.key --output sound.key
        sed -e 's|/var/lib/pantau-agent|/var/lib/pantau/agent|g' -e 's|^interval_seconds = .*|interval_seconds = 2|' \
            /usr/share/pantau/examples/agent-sound.toml > agent.toml
        chgrp pantau collector.toml command-master.key api-tokens sound.key agent.toml
        chmod 0640 collector.toml command-master.key api-tokens sound.key agent.toml
        install -d -o pantau -g pantau -m 0750 /var/lib/pantau/collector
        printf '%s\\n' 'Operator-Rina-2026' | pantau-collector user add rina --role operator --file /var/lib/pantau/collector/api-users
        chown pantau:pantau /var/lib/pantau/collector/api-users
        systemctl start pantau-collector pantau-agent",
    );
    // The previous release listened on plain HTTP: ask it over http until the upgrade.
    let old_api = |path: &str| -> Value {
        let output = container.run(&format!(
            "curl -fsS -H \"Authorization: Bearer $(awk 'NR==1{{print $1}}' /etc/pantau/api-tokens)\" http://127.0.0.1:9810{path}"
        ));
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    };
    container.wait_for(
        "the previous collector ready",
        WAIT,
        "curl -fsS http://127.0.0.1:9810/readyz",
    );
    let start = Instant::now();
    while old_api("/api/v1/agents/office-sound")["online"] != Value::Bool(true) {
        assert!(start.elapsed() < WAIT, "the previous agent never came up");
        std::thread::sleep(Duration::from_millis(500));
    }
    let created = container.stdout(
        "curl -sS -H \"Authorization: Bearer $(awk 'NR==1{print $1}' /etc/pantau/api-tokens)\" -H 'Content-Type: application/json' \
         --data '{\"text\":\"Vaksinasi dimulai\",\"targets\":[\"office-sound\"],\"chime\":false}' http://127.0.0.1:9810/api/v1/announcements",
    );
    let created: Value = serde_json::from_str(&created).expect("JSON");
    let id = created["id"].as_str().expect("an id").to_owned();
    let start = Instant::now();
    while old_api(&format!("/api/v1/announcements/{id}"))["targets"][0]["status"] != "finished" {
        assert!(
            start.elapsed() < WAIT,
            "the previous release never played {id}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let messages_before = old_api("/api/v1/agents/office-sound")["messages_total"]
        .as_u64()
        .unwrap_or(0);
    assert!(messages_before > 0);
    // A backlog in the agent's outbox: the collector (and its broker) stop for a while.
    container.stdout("systemctl stop pantau-collector");
    std::thread::sleep(Duration::from_secs(8));
    let config_before =
        container.stdout("sha256sum /etc/pantau/*.toml /etc/pantau/api-tokens /etc/pantau/*.key");
    let view_before = old_api("/api/v1/agents/office-sound");
    assert_eq!(view_before, Value::Null, "the collector is stopped");

    // The upgrade, as apt does it.
    container.stdout(&format!(
        "apt-get install -y -q {} {}",
        deb(&debs, "pantau-collector", "/share"),
        deb(&debs, "pantau-agent", "/share")
    ));
    assert_eq!(
        container
            .stdout("dpkg-query -W -f='${Version}' pantau-collector pantau-agent")
            .trim(),
        format!("{0}{0}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        container.stdout("sha256sum /etc/pantau/*.toml /etc/pantau/api-tokens /etc/pantau/*.key"),
        config_before,
        "the upgrade changed the config"
    );
    assert_running_without_restarts(&container, &["pantau-collector", "pantau-agent"]);
    let view = old_api("/api/v1/agents/office-sound");
    assert!(
        old_api(&format!("/api/v1/announcements/{id}"))["id"] == Value::String(id.clone()),
        "history kept"
    );
    let rina = container.run(&format!(
        "curl -fsS -u rina:{OPERATOR_PASSWORD} http://127.0.0.1:9810/api/v1/agents"
    ));
    assert!(rina.status.success(), "the user kept: {rina:?}");
    // The backlog the outbox held through the upgrade arrived late, and nothing is missing.
    let start = Instant::now();
    loop {
        let view = old_api("/api/v1/agents/office-sound");
        if view["late_messages_total"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(view["missed_messages_total"], 0, "{view}");
            // The sequence accounting went on from where the previous release left it.
            assert!(
                view["messages_total"].as_u64().unwrap_or(0) > messages_before,
                "{view}"
            );
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the outbox's backlog never arrived: {view}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(view["messages_total"].as_u64().unwrap_or(0) > 0, "{view}");
    container.reboot();
    assert_running_without_restarts(&container, &["pantau-collector", "pantau-agent"]);
    eprintln!("upgrade test: {:.0} s", started.elapsed().as_secs_f64());
}

#[test]
#[ignore = "scripts/test runs it alongside the suite (package builds)"]
fn the_lean_agent_replaces_the_agent_and_needs_no_sound_libraries() {
    let debs = new_packages();
    let field = |package: &str, name: &str| {
        let file = deb(&debs, package, &debs.display().to_string());
        let output = run_with_timeout(
            Command::new("dpkg-deb").args(["-f", &file, name]),
            b"",
            Duration::from_secs(20),
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(field("pantau-agent-lean", "Provides"), "pantau-agent");
    assert_eq!(field("pantau-agent-lean", "Conflicts"), "pantau-agent");
    assert_eq!(field("pantau-agent-lean", "Replaces"), "pantau-agent");
    assert!(!field("pantau-agent-lean", "Depends").contains("libasound"));
    assert_eq!(field("pantau-agent-lean", "Recommends"), "");
    assert!(field("pantau-agent", "Depends").contains("libasound2"));
    assert_eq!(field("pantau-agent", "Recommends"), "espeak-ng");
    assert_eq!(field("pantau-agent", "Conflicts"), "pantau-agent-lean");
    assert!(field("pantau-collector", "Depends").contains("mosquitto"));
    for package in ["pantau-collector", "pantau-agent", "pantau-agent-lean"] {
        assert_eq!(
            field(package, "Version"),
            env!("CARGO_PKG_VERSION"),
            "{package}"
        );
        let size = std::fs::metadata(deb(&debs, package, &debs.display().to_string()))
            .expect("the package")
            .len();
        eprintln!("{package}: {size} bytes");
    }
}
