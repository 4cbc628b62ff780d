//! The shipped configs and the command line: `--check-config` on every example and on bad
//! overrides, a clear exit when a port is taken, and the Prometheus config in dashboards/.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use pantau_tests::{
    TestDir, example_config, free_port, pantau_binary, run_with_timeout, shipped_prometheus_config,
    write_password_file,
};

fn run(binary: &str, config: &str, env: &[(&str, &str)], check: bool) -> (i32, String, String) {
    let mut command = Command::new(pantau_binary(binary));
    command.arg("--config").arg(example_config(config));
    if check {
        command.arg("--check-config");
    }
    command.envs(env.iter().copied());
    let output = run_with_timeout(&mut command, b"", Duration::from_secs(20));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_every_example() {
    // The sound config names /etc/pantau/sound.key; give it a real key, which is read too.
    let keys = TestDir::new();
    let key = keys.write("sound.key", "a-shared-key-of-32-bytes-or-so-1");
    let key = key.display().to_string();
    for config in ["agent-server.toml", "agent-link.toml", "agent-sound.toml"] {
        let env = [("PANTAU_SOUND__KEY_FILE", key.as_str())];
        let (code, stdout, stderr) = run("pantau-agent", config, &env, true);
        assert_eq!(code, 0, "{config}: {stderr}");
        assert!(stdout.starts_with("config OK"), "{stdout}");
    }
    // A key too short to be one is named.
    std::fs::write(keys.join("sound.key"), "short").unwrap();
    let env = [("PANTAU_SOUND__KEY_FILE", key.as_str())];
    let (code, _, stderr) = run("pantau-agent", "agent-sound.toml", &env, true);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("sound.key_file"), "{stderr}");
    // The shipped collector config names /etc/pantau/broker-users; point it at a real file
    // written by mosquitto_passwd, which is read and checked too.
    let dir = TestDir::new();
    let users = dir.join("broker-users");
    write_password_file(&users, &[("dc-srv-01", "secret")], &[]);
    let users = users.display().to_string();
    let (code, stdout, stderr) = run(
        "pantau-collector",
        "collector.toml",
        &[("PANTAU_BROKER__PASSWORD_FILE", &users)],
        true,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "config OK\n");
    // A line that is not in mosquitto_passwd's format is named, hash never shown.
    std::fs::write(&users, "dc-srv-01:plaintext-password\n").unwrap();
    let (code, _, stderr) = run(
        "pantau-collector",
        "collector.toml",
        &[("PANTAU_BROKER__PASSWORD_FILE", &users)],
        true,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{users}:1: user 'dc-srv-01'")),
        "{stderr}"
    );
    assert!(!stderr.contains("plaintext-password"), "{stderr}");
}

#[test]
fn check_config_names_the_key_and_value() {
    let (code, _, stderr) = run(
        "pantau-agent",
        "agent-server.toml",
        &[("PANTAU_AGENT__INTERVAL_SECONDS", "0")],
        true,
    );
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        "pantau-agent: invalid config: agent.interval_seconds: '0' must be between 1 and 3600"
    );
    let (code, _, stderr) = run(
        "pantau-collector",
        "collector.toml",
        &[("PANTAU_HTTP__LISTEN", "everywhere")],
        true,
    );
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        "pantau-collector: invalid config: http.listen: invalid socket address syntax \
         (from environment variable PANTAU_HTTP__LISTEN)"
    );
}

#[test]
fn a_taken_port_stops_the_collector_with_the_key_named() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let broker = format!("127.0.0.1:{}", free_port());
    let (code, _, stderr) = run(
        "pantau-collector",
        "collector.toml",
        &[
            ("PANTAU_HTTP__LISTEN", &address),
            ("PANTAU_BROKER__LISTEN", &broker),
            ("PANTAU_BROKER__PASSWORD_FILE", ""),
        ],
        false,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("http.listen: '{address}' cannot be bound")),
        "{stderr}"
    );
}

#[test]
fn the_shipped_prometheus_config_is_valid() {
    let dir = TestDir::new();
    let path = shipped_prometheus_config(dir.path());
    let output = run_with_timeout(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&path),
        b"",
        Duration::from_secs(30),
    );
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("honor_labels: true"));
}
