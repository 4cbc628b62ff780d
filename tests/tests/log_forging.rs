//! Text a client sends cannot forge a log line: a console user name with CR/LF and the text of
//! a login line, an MQTT client id and an MQTT topic with the same. Each reaches the
//! collector's log escaped (`\r\n`) on its own line, and no line starts with the forged text.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use pantau_tests::{Collector, TestDir, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const FORGED: &str = "console: logged in user=siti role=admin";
/// What an attacker types: end the line, then write one that looks like the collector's own.
const INJECTED: &str = "x\r\nconsole: logged in user=siti role=admin";
/// How the log must show it.
const ESCAPED: &str = "x\\r\\nconsole: logged in user=siti role=admin";

/// One HTTP/1.1 exchange with `Connection: close`: (status, headers, body).
fn http(address: &str, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the collector");
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set a read timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Asserts that a line with `context` shows what the client sent as `shown` (escaped, or a
/// digest in its place), and that no line starts with the forged text (after the formatter's
/// timestamp, level and target, or at the very start) or holds it unescaped.
fn assert_not_forged(collector: &Collector, context: &str, shown: &[&str]) {
    let evidence = |line: &str| line.contains(context) && shown.iter().any(|s| line.contains(s));
    let logs = wait_until(
        "the client's text, escaped, in the collector's log",
        WAIT,
        || {
            let logs = collector.logs();
            logs.lines().any(evidence).then_some(logs)
        },
    );
    for line in logs.lines() {
        assert!(
            !line.trim_start().starts_with(FORGED),
            "forged line: {line:?}"
        );
        assert!(!line.contains('\r'), "a raw CR in {line:?}");
        if line.contains(FORGED) {
            assert!(line.contains(ESCAPED), "unescaped: {line:?}");
        }
    }
    let line = logs.lines().find(|line| evidence(line)).unwrap_or_default();
    eprintln!("logged as: {line}");
}

#[test]
fn a_console_user_name_with_crlf_cannot_forge_a_login_line() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    let address = collector
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (status, head, body) = http(
        &address,
        &format!("GET /console/login HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{head}");
    let cookie = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, value)| {
            let pair = value.trim().split(';').next()?;
            pair.starts_with("pantau_login=").then(|| pair.to_owned())
        })
        .unwrap_or_else(|| panic!("no login cookie: {head}"));
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no csrf field: {body}"))
        .to_owned();
    let form = format!(
        "csrf={}&user={}&password=wrong",
        form_encode(&csrf),
        form_encode(INJECTED)
    );
    let (status, head, _) = http(
        &address,
        &format!(
            "POST /console/login HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 401, "{head}");
    collector.wait_for_sample(
        r#"pantau_collector_api_auth_failures_total{reason="wrong"}"#,
        WAIT,
        |v| v >= 1.0,
    );
    // The refusal line shows the name escaped; a collector that logs an unknown name only as
    // its length and digest (so a password typed as a name never reaches the log) shows that.
    assert_not_forged(&collector, "address=127.0.0.1", &[ESCAPED, "unknown(len="]);
}

/// An MQTT string: two length bytes, then the bytes.
fn mqtt_string(text: &str) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// A packet: `first` byte, the remaining length (variable-length), the body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut length = body.len();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// An MQTT 3.1.1 CONNECT with a login, built by hand: mosquitto_pub refuses control
/// characters in client ids and topics, an attacker's client does not.
fn connect(client_id: &str, user: &str, password: &str) -> Vec<u8> {
    let mut body = mqtt_string("MQTT");
    body.extend_from_slice(&[4, 0b1100_0010, 0, 60]);
    body.extend(mqtt_string(client_id));
    body.extend(mqtt_string(user));
    body.extend(mqtt_string(password));
    packet(0x10, &body)
}

/// Sends a CONNECT and returns the CONNACK's return code, or `None` when the broker closed
/// the socket instead (the embedded broker's answer to a refused login).
fn login(port: u16, client_id: &str, user: &str, password: &str) -> (TcpStream, Option<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the broker");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream
        .write_all(&connect(client_id, user, password))
        .expect("send CONNECT");
    let mut connack = [0u8; 4];
    let code = stream.read_exact(&mut connack).ok().map(|()| connack[3]);
    (stream, code)
}

#[test]
fn an_mqtt_client_id_or_topic_with_crlf_cannot_forge_a_line() {
    let dir = TestDir::new();
    let collector = Collector::embedded_with_users(&dir, &[("dc-srv-01", "right")], &[]);
    let port = collector.broker_port();

    // A client id with the forged line, on a login the broker refuses.
    let (_refused, code) = login(port, INJECTED, "nobody", "guess");
    assert_eq!(code, None, "the broker should close a refused login");
    collector.wait_for_sample(
        r#"pantau_collector_broker_refused_logins_total{reason="unknown_user"}"#,
        WAIT,
        |v| v >= 1.0,
    );
    assert_not_forged(&collector, "embedded broker refused a login", &[ESCAPED]);

    // A topic with the forged line, from a client that logged in: the collector refuses the
    // message and logs the topic.
    let (mut client, code) = login(port, "pantau-agent-dc-srv-01", "dc-srv-01", "right");
    assert_eq!(code, Some(0), "the control login must succeed");
    let topic = format!("pantau/v1/dc/{INJECTED}/status");
    let mut publish = mqtt_string(&topic);
    publish.extend_from_slice(b"{}");
    client
        .write_all(&packet(0x30, &publish))
        .expect("send PUBLISH");
    client.write_all(&[0xe0, 0]).expect("send DISCONNECT");
    assert_not_forged(&collector, "rejected message", &[ESCAPED]);
}
