//! `pantau-collector init` as an admin runs it on a fresh host, into temp dirs: every file with
//! its owner and mode, then real Mosquitto with the written drop-in and the collector with the
//! written config. HTTPS only with the office CA, MQTT over TLS from the LAN, the plain MQTT
//! listener on 127.0.0.1 only, the first admin's console login; a second init refuses; the
//! TLS requirement stops a collector whose config was made insecure; and `cert renew` plus
//! SIGHUP serves a new certificate.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pantau_tests::{
    ChildGuard, Signal, TestCa, TestDir, free_port, pantau_binary, run_with_timeout, wait_until,
};

const ADMIN_PASSWORD: &str = "kantor-rahasia-2026";
const WAIT: Duration = Duration::from_secs(30);

/// One `init` into a test's temp dirs, on ports of its own.
struct Setup {
    etc: PathBuf,
    state: PathBuf,
    mosquitto: PathBuf,
    http_port: u16,
    mqtts_port: u16,
    local_port: u16,
}

impl Setup {
    fn new(dir: &TestDir) -> Setup {
        Setup {
            etc: dir.join("etc/pantau"),
            state: dir.join("var/lib/pantau/collector"),
            mosquitto: dir.join("etc/mosquitto"),
            http_port: free_port(),
            mqtts_port: free_port(),
            local_port: free_port(),
        }
    }

    fn init(&self, extra: &[&str]) -> Output {
        let mut command = Command::new(pantau_binary("pantau-collector"));
        command
            .arg("init")
            .args(["--name", "pantau.test", "--address", "127.0.0.1"])
            .arg("--etc-dir")
            .arg(&self.etc)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--mosquitto-dir")
            .arg(&self.mosquitto)
            .args(["--service-user", "root", "--mosquitto-group", "root"])
            .args(["--no-start", "--admin-password-stdin"])
            .args(["--http-listen", &format!("0.0.0.0:{}", self.http_port)])
            .args(["--mqtts-port", &self.mqtts_port.to_string()])
            .args(["--mqtt-local-port", &self.local_port.to_string()])
            .args(extra);
        run_with_timeout(&mut command, format!("{ADMIN_PASSWORD}\n").as_bytes(), WAIT)
    }

    fn config(&self) -> PathBuf {
        self.etc.join("collector.toml")
    }

    fn ca(&self) -> String {
        self.etc.join("tls/ca.pem").display().to_string()
    }

    /// The variables of collector.env, as systemd's EnvironmentFile gives them.
    fn env(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.etc.join("collector.env"))
            .expect("collector.env")
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    /// Mosquitto as Debian runs it: a main config that includes conf.d (run as root here,
    /// with persistence off, logging to stderr).
    fn start_mosquitto(&self, dir: &TestDir) -> ChildGuard {
        let main = dir.write(
            "mosquitto.conf",
            format!(
                "user root\npersistence false\nlog_dest stderr\nlog_type all\ninclude_dir {}\n",
                self.mosquitto.join("conf.d").display()
            ),
        );
        let mut guard = ChildGuard::spawn(
            "mosquitto",
            Command::new("mosquitto").arg("-c").arg(main),
            dir.path(),
        );
        let local = self.local_port;
        wait_until("mosquitto to listen", WAIT, || {
            if let Some(status) = guard.try_wait() {
                panic!("mosquitto exited ({status})\n{}", guard.logs());
            }
            TcpStream::connect(("127.0.0.1", local)).ok()
        });
        guard
    }

    fn collector_command(&self, config: &Path) -> Command {
        let mut command = Command::new(pantau_binary("pantau-collector"));
        command.arg("--config").arg(config).envs(self.env());
        command
    }

    fn start_collector(&self, dir: &TestDir) -> ChildGuard {
        let mut guard = ChildGuard::spawn(
            "collector",
            &mut self.collector_command(&self.config()),
            dir.path(),
        );
        let readyz = format!("https://localhost:{}/readyz", self.http_port);
        let ca = self.ca();
        wait_until("the collector to be ready over HTTPS", WAIT, || {
            if let Some(status) = guard.try_wait() {
                panic!("collector exited ({status})\n{}", guard.logs());
            }
            // 503 until it has subscribed at Mosquitto with its own login.
            let (code, _) = curl(&["--cacert", &ca, &readyz]);
            (code == "200").then_some(())
        });
        guard
    }
}

/// curl's exit status and output, with the HTTP status appended after a tab.
fn curl(args: &[&str]) -> (String, String) {
    let output = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "-o", "-", "-w", "\t%{http_code}"])
            .args(args),
        b"",
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    match (output.status.success(), text.rsplit_once('\t')) {
        (true, Some((body, code))) => (code.to_owned(), body.to_owned()),
        _ => (
            format!("failed {}", output.status),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ),
    }
}

/// Every file under `root`, with its mode, owner and group.
fn modes(root: &Path) -> BTreeMap<String, (u32, u32, u32)> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let metadata = std::fs::symlink_metadata(&path).expect("metadata");
            if metadata.is_dir() {
                stack.push(path.clone());
            }
            let name = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            found.insert(
                name,
                (metadata.mode() & 0o7777, metadata.uid(), metadata.gid()),
            );
        }
    }
    found
}

/// Every file under `root` with its contents (directories as empty).
fn contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    modes(root)
        .into_keys()
        .map(|name| {
            let bytes = std::fs::read(root.join(&name)).unwrap_or_default();
            (name, bytes)
        })
        .collect()
}

/// The certificate the server at 127.0.0.1:`port` presents: openssl's `-serial`,
/// `-enddate` and subjectAltName lines.
fn served_certificate(port: u16) -> String {
    let hello = run_with_timeout(
        Command::new("openssl").args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ]),
        b"",
        Duration::from_secs(10),
    );
    certificate_fields(&hello.stdout)
}

fn certificate_fields(pem: &[u8]) -> String {
    let output = run_with_timeout(
        Command::new("openssl").args([
            "x509",
            "-noout",
            "-serial",
            "-enddate",
            "-ext",
            "subjectAltName",
        ]),
        pem,
        Duration::from_secs(10),
    );
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn line<'a>(fields: &'a str, prefix: &str) -> &'a str {
    fields
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {fields}"))
}

fn expiry_metric(setup: &Setup) -> f64 {
    let token = std::fs::read_to_string(setup.etc.join("metrics-tokens")).expect("token");
    let (code, body) = curl(&[
        "--cacert",
        &setup.ca(),
        "-H",
        &format!("Authorization: Bearer {}", token.trim()),
        &format!("https://localhost:{}/metrics", setup.http_port),
    ]);
    assert_eq!(code, "200", "{body}");
    let line = body
        .lines()
        .find(|line| {
            line.starts_with(
                "pantau_collector_tls_certificate_expiry_timestamp_seconds{certificate=\"http\"}",
            )
        })
        .unwrap_or_else(|| panic!("no expiry metric in\n{body}"));
    line.rsplit(' ')
        .next()
        .unwrap_or_default()
        .parse()
        .expect("a number")
}

/// `notAfter=Jan  8 23:35:12 2028 GMT` as Unix seconds, by `date`.
fn unix_seconds(not_after: &str) -> f64 {
    let date = not_after.trim_start_matches("notAfter=");
    let output = run_with_timeout(
        Command::new("date").args(["-u", "-d", date, "+%s"]),
        b"",
        Duration::from_secs(5),
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("date +%s")
}

#[test]
fn init_sets_up_a_collector_reachable_over_tls_only() {
    let dir = TestDir::new();
    let setup = Setup::new(&dir);
    let output = setup.init(&[]);
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{output:?}");
    assert!(
        said.contains(&format!("https://pantau.test:{}/console/", setup.http_port)),
        "{said}"
    );
    assert!(said.contains("SHA-256 fingerprint: "), "{said}");
    assert!(
        !said.contains(ADMIN_PASSWORD),
        "a given password is not echoed"
    );

    let etc = modes(&setup.etc);
    let expected_etc = [
        ("collector.toml", 0o640),
        ("collector.env", 0o600),
        ("command-master.key", 0o640),
        ("api-tokens", 0o640),
        ("metrics-tokens", 0o640),
        ("tls", 0o755),
        ("tls/ca.pem", 0o644),
        ("tls/collector.pem", 0o644),
        ("tls/collector.key", 0o640),
        ("ca", 0o700),
        ("ca/ca.key", 0o600),
        ("agents", 0o700),
    ];
    for (name, mode) in expected_etc {
        assert_eq!(etc.get(name), Some(&(mode, 0, 0)), "{name}: {etc:?}");
    }
    assert_eq!(
        etc.len(),
        expected_etc.len(),
        "nothing else, no temp files: {etc:?}"
    );
    let etc_dir = std::fs::metadata(&setup.etc).expect("etc dir");
    assert_eq!(etc_dir.mode() & 0o7777, 0o750);
    let state = modes(&setup.state);
    assert_eq!(state.get("api-users"), Some(&(0o600, 0, 0)), "{state:?}");
    let mosquitto = modes(&setup.mosquitto);
    let expected_mosquitto = [
        ("conf.d", 0o755),
        ("conf.d/pantau.conf", 0o644),
        ("pantau-passwd", 0o640),
        ("pantau-acl", 0o644),
        ("certs", 0o755),
        ("certs/pantau-ca.pem", 0o644),
        ("certs/pantau-broker.pem", 0o644),
        ("certs/pantau-broker.key", 0o640),
    ];
    for (name, mode) in expected_mosquitto {
        assert_eq!(
            mosquitto.get(name),
            Some(&(mode, 0, 0)),
            "{name}: {mosquitto:?}"
        );
    }
    assert_eq!(mosquitto.len(), expected_mosquitto.len(), "{mosquitto:?}");

    // An agent's login, made with Mosquitto's own tool before the broker starts.
    let passwd = setup.mosquitto.join("pantau-passwd");
    let added = run_with_timeout(
        Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&passwd)
            .args(["aula-1", "agent-password-1"]),
        b"",
        WAIT,
    );
    assert!(added.status.success(), "{added:?}");
    let _mosquitto = setup.start_mosquitto(&dir);
    let mut collector = setup.start_collector(&dir);

    // HTTPS with the office CA; without it curl refuses the certificate.
    let readyz = format!("https://localhost:{}/readyz", setup.http_port);
    assert_eq!(curl(&["--cacert", &setup.ca(), &readyz]).0, "200");
    let (refused, why) = curl(&[&readyz]);
    assert!(refused.starts_with("failed"), "{refused} {why}");
    assert!(why.contains("certificate"), "{why}");
    // By the name in the certificate too.
    let by_name = format!("https://pantau.test:{}/readyz", setup.http_port);
    let resolve = format!("pantau.test:{}:127.0.0.1", setup.http_port);
    assert_eq!(
        curl(&["--cacert", &setup.ca(), "--resolve", &resolve, &by_name]).0,
        "200"
    );

    // MQTT over TLS on the LAN listener: what an agent publishes reaches the collector's login.
    let collector_password = setup
        .env()
        .into_iter()
        .find(|(key, _)| key == "PANTAU_MQTT__PASSWORD")
        .expect("the collector's password")
        .1;
    let mut subscriber = ChildGuard::spawn(
        "mosquitto_sub",
        Command::new("mosquitto_sub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &setup.local_port.to_string(),
            "-u",
            "pantau-collector",
            "-P",
            &collector_password,
            "-i",
            "first-run-test",
            "-t",
            "pantau/v1/+/aula-1/status",
            "-C",
            "1",
            "-v",
        ]),
        dir.path(),
    );
    wait_until("the agent's TLS publish to arrive", WAIT, || {
        let published = run_with_timeout(
            Command::new("mosquitto_pub").args([
                "-h",
                "localhost",
                "-p",
                &setup.mqtts_port.to_string(),
                "--cafile",
                &setup.ca(),
                "-u",
                "aula-1",
                "-P",
                "agent-password-1",
                "-q",
                "1",
                "-t",
                "pantau/v1/kantor/aula-1/status",
                "-m",
                "over-tls",
            ]),
            b"",
            WAIT,
        );
        assert!(published.status.success(), "{published:?}");
        subscriber.try_wait()
    });
    assert!(
        subscriber
            .logs()
            .contains("pantau/v1/kantor/aula-1/status over-tls"),
        "{}",
        subscriber.logs()
    );
    // A client that trusts another CA does not accept the broker's certificate.
    std::fs::create_dir(dir.join("stranger")).expect("mkdir");
    let stranger = TestCa::new(&dir.join("stranger"), "Some other CA");
    let untrusted = run_with_timeout(
        Command::new("mosquitto_pub").args([
            "-h",
            "localhost",
            "-p",
            &setup.mqtts_port.to_string(),
            "--cafile",
            &stranger.cert().display().to_string(),
            "-u",
            "aula-1",
            "-P",
            "agent-password-1",
            "-t",
            "pantau/v1/kantor/aula-1/status",
            "-m",
            "x",
        ]),
        b"",
        WAIT,
    );
    assert!(!untrusted.status.success(), "{untrusted:?}");
    // The plain listener is bound to 127.0.0.1 only: another address of the host (here
    // 127.0.0.2, which every Linux loopback answers) finds nothing there.
    assert!(TcpStream::connect(("127.0.0.1", setup.local_port)).is_ok());
    assert!(
        TcpStream::connect(("127.0.0.2", setup.local_port)).is_err(),
        "the plain MQTT port answers beyond 127.0.0.1"
    );

    // The first admin logs in to the console with the password given on stdin.
    let jar = dir.join("cookies");
    let jar = jar.to_str().expect("utf-8");
    let login_url = format!("https://localhost:{}/console/login", setup.http_port);
    let (code, form) = curl(&["--cacert", &setup.ca(), "-c", jar, &login_url]);
    assert_eq!(code, "200", "{form}");
    let csrf = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no csrf field in {form}"));
    let (code, _) = curl(&[
        "--cacert",
        &setup.ca(),
        "-b",
        jar,
        "-c",
        jar,
        "-d",
        &format!("csrf={csrf}&user=admin&password={ADMIN_PASSWORD}"),
        &login_url,
    ]);
    assert_eq!(code, "303", "the login is accepted\n{}", collector.logs());
    let now = format!("https://localhost:{}/console/now", setup.http_port);
    let (code, page) = curl(&["--cacert", &setup.ca(), "-b", jar, &now]);
    assert_eq!(code, "200", "{page}");
    let (code, _) = curl(&[
        "--cacert",
        &setup.ca(),
        "-d",
        &format!("csrf={csrf}&user=admin&password=wrong-password-1"),
        "-b",
        jar,
        &login_url,
    ]);
    assert_ne!(code, "303", "a wrong password is not");

    // cert renew: a new certificate for the same names, served after SIGHUP, and the expiry
    // metric follows.
    let before_file =
        certificate_fields(&std::fs::read(setup.etc.join("tls/collector.pem")).expect("pem"));
    let served_before = served_certificate(setup.http_port);
    assert_eq!(
        line(&served_before, "serial="),
        line(&before_file, "serial=")
    );
    let metric_before = expiry_metric(&setup);
    assert_eq!(metric_before, unix_seconds(line(&before_file, "notAfter=")));
    let renewed = run_with_timeout(
        Command::new(pantau_binary("pantau-collector"))
            .args(["cert", "renew", "--force", "--no-reload", "--config"])
            .arg(setup.config()),
        b"",
        WAIT,
    );
    assert!(renewed.status.success(), "{renewed:?}");
    let after_file =
        certificate_fields(&std::fs::read(setup.etc.join("tls/collector.pem")).expect("pem"));
    assert_ne!(line(&after_file, "serial="), line(&before_file, "serial="));
    let names = |fields: &str| {
        fields
            .lines()
            .skip_while(|line| !line.contains("Subject Alternative Name"))
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    assert_eq!(names(&after_file), names(&before_file));
    assert!(
        names(&after_file).contains("DNS:pantau.test"),
        "{after_file}"
    );
    assert_eq!(
        std::fs::read(setup.mosquitto.join("certs/pantau-broker.pem")).expect("broker pem"),
        std::fs::read(setup.etc.join("tls/collector.pem")).expect("pem"),
        "Mosquitto's copy is renewed too"
    );
    assert_eq!(
        modes(&setup.etc).get("tls/collector.key"),
        Some(&(0o640, 0, 0)),
        "the key keeps its mode"
    );
    // Until the reload the old certificate is served.
    assert_eq!(
        line(&served_certificate(setup.http_port), "serial="),
        line(&before_file, "serial=")
    );
    collector.kill_with(Signal::HUP);
    wait_until("the renewed certificate to be served", WAIT, || {
        let served = served_certificate(setup.http_port);
        (line(&served, "serial=") == line(&after_file, "serial=")).then_some(())
    });
    assert_eq!(
        expiry_metric(&setup),
        unix_seconds(line(&after_file, "notAfter="))
    );
    assert!(collector.try_wait().is_none(), "{}", collector.logs());
}

#[test]
fn a_second_init_refuses_and_changes_nothing() {
    let dir = TestDir::new();
    let setup = Setup::new(&dir);
    let first = setup.init(&[]);
    assert!(first.status.success(), "{first:?}");
    let before = (
        contents(&setup.etc),
        contents(&setup.state),
        contents(&setup.mosquitto),
    );
    let modes_before = modes(&setup.etc);
    let again = setup.init(&[]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(&format!("'{}' exists", setup.config().display())),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    let after = (
        contents(&setup.etc),
        contents(&setup.state),
        contents(&setup.mosquitto),
    );
    assert!(before == after, "a refused init changed files");
    assert_eq!(modes(&setup.etc), modes_before);

    // --force keeps the CA and the keys, so agents and browsers keep trusting it.
    let forced = setup.init(&["--force"]);
    assert!(forced.status.success(), "{forced:?}");
    let after_force = contents(&setup.etc);
    for kept in [
        "tls/ca.pem",
        "ca/ca.key",
        "command-master.key",
        "api-tokens",
        "metrics-tokens",
    ] {
        assert_eq!(
            after_force.get(kept),
            before.0.get(kept),
            "{kept} was replaced"
        );
    }
}

#[test]
fn a_config_made_insecure_stops_the_collector() {
    let dir = TestDir::new();
    let setup = Setup::new(&dir);
    let output = setup.init(&[]);
    assert!(output.status.success(), "{output:?}");
    let written = std::fs::read_to_string(setup.config()).expect("collector.toml");
    let insecure: String = written
        .lines()
        .filter(|line| !line.starts_with("tls_cert_file") && !line.starts_with("tls_key_file"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(insecure, written, "the TLS keys were there");
    let config = dir.write("insecure.toml", insecure);
    let out = run_with_timeout(&mut setup.collector_command(&config), b"", WAIT);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "http.listen: '0.0.0.0:{}' is not a loopback address",
            setup.http_port
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "security.require_tls_beyond_loopback = true: TLS is required beyond loopback"
        ),
        "{stderr}"
    );
}
