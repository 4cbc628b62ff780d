//! Strangers' sockets on the embedded broker: 200 that never send CONNECT, 200 that send
//! another packet and junk, 200 that send half a CONNECT. Each is counted in
//! `pantau_collector_broker_connection_errors_total{reason}`, and the collector's log holds a
//! handful of lines for all of them, not one ERROR line per socket. A real agent keeps
//! reporting meanwhile.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pantau_tests::{Agent, Collector, TestDir};

const SOCKETS: usize = 200;
/// rumqttd closes a socket without CONNECT after 10 s; room for 200 on a busy machine.
const WAIT: Duration = Duration::from_secs(40);
/// Lines the collector may write about a whole flood: one per reason and minute, and rumqttd
/// lines that are not about a single connection.
const HANDFUL: usize = 5;

fn errors(reason: &str) -> String {
    format!(r#"pantau_collector_broker_connection_errors_total{{reason="{reason}"}}"#)
}

/// Lines of the collector's log that are about broker connections.
fn connection_lines(collector: &Collector) -> Vec<String> {
    collector
        .logs()
        .lines()
        .filter(|line| line.contains("rumqttd") || line.contains("client connection failed"))
        .map(str::to_owned)
        .collect()
}

/// Opens `SOCKETS` connections to `port`, each sending `bytes` (maybe none), bounded in count
/// and time; the sockets stay open until dropped.
fn open_sockets(port: u16, bytes: &[u8]) -> Vec<TcpStream> {
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        assert!(started.elapsed() < WAIT, "opening sockets took too long");
        let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect to the broker");
        if !bytes.is_empty() {
            // The broker may already have closed a garbage socket: that is its answer.
            let _ = socket.write_all(bytes);
        }
        sockets.push(socket);
    }
    sockets
}

fn check_flood(collector: &Collector, reason: &str, lines_before: usize) {
    let before = collector.wait_for_sample(&errors(reason), WAIT, |_| true);
    assert_eq!(before, 0.0, "{reason} errors before the flood");
    let port = collector.broker_port();
    let bytes: &[u8] = match reason {
        "connect_timeout" => b"",
        // Something other than CONNECT first (a PINGREQ, then junk): refused at once. (Text
        // such as an HTTP request reads as a packet header announcing more bytes, and waits
        // for the CONNECT timeout like a silent socket.)
        "bad_connect" => b"\xc0\x00\xde\xad\xbe\xef not mqtt",
        other => panic!("no flood for {other}"),
    };
    let sockets = open_sockets(port, bytes);
    let total = collector.wait_for_sample(&errors(reason), WAIT, |v| v >= SOCKETS as f64);
    drop(sockets);
    assert_eq!(total, SOCKETS as f64, "one count per socket");
    let lines = connection_lines(collector);
    let new = &lines[lines_before.min(lines.len())..];
    eprintln!("{} log lines for {SOCKETS} {reason} sockets:", new.len());
    for line in new {
        eprintln!("  {line}");
    }
    assert!(new.len() <= HANDFUL, "{new:#?}");
    assert!(
        new.iter().all(|line| !line.contains("ERROR")),
        "rumqttd's ERROR lines got through: {new:#?}"
    );
    let line = new
        .iter()
        .find(|line| line.contains(&format!("reason=\"{reason}\"")))
        .unwrap_or_else(|| panic!("no line for {reason}: {new:#?}"));
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn two_hundred_sockets_without_connect_make_a_handful_of_lines() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    let _agent = Agent::start(&dir, "dc-srv-01", "dc", &collector.broker_url(), 1);
    let up = r#"pantau_agent_up{instance="dc-srv-01",site="dc"}"#;
    collector.wait_for_sample(up, WAIT, |v| v == 1.0);
    let messages = r#"pantau_agent_messages_total{instance="dc-srv-01",site="dc"}"#;
    let before = collector.wait_for_sample(messages, WAIT, |_| true);

    check_flood(
        &collector,
        "connect_timeout",
        connection_lines(&collector).len(),
    );
    // The real agent kept reporting through it.
    collector.wait_for_sample(messages, WAIT, |v| v >= before + 2.0);
    assert_eq!(collector.sample(up), Some(1.0));
}

#[test]
fn two_hundred_sockets_of_garbage_make_a_handful_of_lines() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    check_flood(
        &collector,
        "bad_connect",
        connection_lines(&collector).len(),
    );
}

/// Half a CONNECT (fixed header and the start of the protocol name), then silence: held until
/// rumqttd's CONNECT timeout, counted as one.
#[test]
fn two_hundred_half_connects_make_a_handful_of_lines() {
    let dir = TestDir::new();
    let collector = Collector::embedded(&dir);
    let lines_before = connection_lines(&collector).len();
    let port = collector.broker_port();
    let sockets = open_sockets(port, &[0x10, 0x20, 0x00, 0x04, b'M', b'Q']);
    let total =
        collector.wait_for_sample(&errors("connect_timeout"), WAIT, |v| v >= SOCKETS as f64);
    drop(sockets);
    assert_eq!(total, SOCKETS as f64);
    let lines = connection_lines(&collector);
    let new = &lines[lines_before.min(lines.len())..];
    eprintln!(
        "{} log lines for {SOCKETS} half CONNECTs: {new:#?}",
        new.len()
    );
    assert!(new.len() <= HANDFUL, "{new:#?}");
    assert!(new.iter().all(|line| !line.contains("ERROR")), "{new:#?}");
}
