//! The collector over HTTPS (`http.tls_cert_file`, `http.tls_key_file`): a client that trusts
//! the certificate gets `/readyz` and the API; plain HTTP gets nothing; a bad pair is refused
//! by `--check-config`, naming the field.

use std::process::Command;
use std::time::Duration;

use pantau_tests::{
    ChildGuard, Signal, TestDir, VIEWER_TOKEN, example_config, free_port, http_get, pantau_binary,
    run_with_timeout, wait_until,
};

fn certificate(dir: &TestDir, name: &str) -> (String, String) {
    pantau_tests::self_signed_certificate(dir.path(), name)
}

fn curl(cacert: &str, url: &str) -> (bool, String) {
    let bearer = format!("Authorization: Bearer {VIEWER_TOKEN}");
    let out = run_with_timeout(
        Command::new("curl").args([
            "-sS",
            "--max-time",
            "5",
            "--cacert",
            cacert,
            "-H",
            &bearer,
            url,
        ]),
        b"",
        Duration::from_secs(10),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn collector(dir: &TestDir, cert: &str, key: &str, http_port: u16, broker_port: u16) -> Command {
    let tokens = dir.write("api-tokens", format!("{VIEWER_TOKEN} viewer\n"));
    let mut command = Command::new(pantau_binary("pantau-collector"));
    command
        .env("PANTAU_API__TOKEN_FILE", tokens)
        .arg("--config")
        .arg(example_config("collector.toml"))
        .env("PANTAU_HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
        .env("PANTAU_HTTP__TLS_CERT_FILE", cert)
        .env("PANTAU_HTTP__TLS_KEY_FILE", key)
        .env("PANTAU_BROKER__LISTEN", format!("127.0.0.1:{broker_port}"))
        .env("PANTAU_BROKER__PASSWORD_FILE", "");
    command
}

#[test]
fn the_collector_serves_https_with_its_certificate() {
    let dir = TestDir::new();
    let (cert, key) = certificate(&dir, "collector");
    let port = free_port();
    let mut guard = ChildGuard::spawn(
        "collector",
        &mut collector(&dir, &cert, &key, port, free_port()),
        dir.path(),
    );
    let readyz = format!("https://localhost:{port}/readyz");
    let body = wait_until(
        "the collector to answer over HTTPS",
        Duration::from_secs(30),
        || {
            if let Some(status) = guard.try_wait() {
                panic!("collector exited ({status})\n{}", guard.logs());
            }
            // 503 until subscribed to the embedded broker.
            let (ok, body) = curl(&cert, &readyz);
            (ok && body == "ready\n").then_some(body)
        },
    );
    assert_eq!(body, "ready\n");
    let (ok, body) = curl(&cert, &format!("https://127.0.0.1:{port}/api/v1/agents"));
    assert!(ok, "{body}");
    assert_eq!(body, r#"{"agents":[]}"#);
    // Plain HTTP is not served on the HTTPS port.
    assert!(!matches!(
        http_get(&format!("http://127.0.0.1:{port}/readyz")),
        Ok((200, _))
    ));
    // SIGTERM stops the HTTPS server as cleanly as the plain one.
    guard.kill_with(Signal::TERM);
    let status = guard.wait_exit(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", guard.logs());
}

#[test]
fn a_key_that_does_not_fit_the_certificate_is_refused_at_start() {
    let dir = TestDir::new();
    let (cert, _) = certificate(&dir, "one");
    let (_, other_key) = certificate(&dir, "two");
    let out = run_with_timeout(
        collector(&dir, &cert, &other_key, free_port(), free_port()).arg("--check-config"),
        b"",
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "http.tls_key_file: '{other_key}' does not fit the certificate"
        )),
        "{stderr}"
    );
    let out = run_with_timeout(
        collector(&dir, &cert, "", free_port(), free_port()).arg("--check-config"),
        b"",
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("http.tls_key_file: is required with http.tls_cert_file"),
        "{out:?}"
    );
}
