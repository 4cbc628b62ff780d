//! Strangers who open HTTP connections and send a request a byte at a time (or nothing), or
//! open more than their share, cannot hold the collector's sockets and file handles: each
//! connection is closed at the header timeout, an address gets at most its share of
//! connections, and another address (127.0.0.2) keeps getting `/healthz`, a scrape and the
//! console's login page meanwhile. Plain HTTP and HTTPS alike.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use pantau_tests::{
    ChildGuard, Collector, TestDir, example_config, free_port, pantau_binary, poll_until,
    promtool_metric_lints, run_with_timeout, sample, wait_until,
};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const STAFF: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The start of a request whose head never ends.
const SLOW_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaa";

/// The start of a TLS ClientHello record (handshake, TLS 1.0 record version, 512 bytes long)
/// whose body never comes.
const SLOW_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

/// Lets this test process hold `wanted` sockets (the soft limit is often 1024).
fn raise_open_file_limit(wanted: u64) {
    let limit = getrlimit(Resource::Nofile);
    let maximum = limit.maximum.unwrap_or(u64::MAX);
    assert!(
        maximum >= wanted,
        "the hard open-file limit {maximum} is below the {wanted} this test needs"
    );
    if limit.current.is_some_and(|current| current < wanted) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(wanted),
                maximum: limit.maximum,
            },
        )
        .expect("raise the soft open-file limit");
    }
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn port_of(collector: &Collector) -> u16 {
    collector
        .url()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("the collector's port")
}

/// A TCP connection to the collector from `source`.
fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    pantau_tests::raw_http::connect_from(
        source.into(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    )
}

/// `GET path` over HTTP/1.0 from `source` (so a streamed answer is close-delimited, not
/// chunked): status, body and how long it took.
fn get_from(source: Ipv4Addr, port: u16, path: &str) -> Result<(u16, String, Duration), String> {
    let started = Instant::now();
    let mut tcp = connect_from(source, port).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    Ok((status, body, started.elapsed()))
}

fn metrics_from(source: Ipv4Addr, port: u16) -> String {
    match get_from(source, port, "/metrics") {
        Ok((200, body, _)) => body,
        other => panic!("GET /metrics from {source}: {other:?}"),
    }
}

/// Connections held open by this test, each fed a byte at a time.
struct Strangers {
    sockets: Vec<Option<TcpStream>>,
    next_byte: usize,
}

impl Strangers {
    /// Opens `count` connections from `source`, each sending the first byte of `head`;
    /// bounded by count and by 60 s.
    fn open(source: Ipv4Addr, port: u16, count: usize, head: &[u8]) -> Strangers {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sockets = Vec::with_capacity(count);
        for _ in 0..count {
            assert!(
                Instant::now() < deadline,
                "opening {count} connections took over 60 s"
            );
            let mut tcp = connect_from(source, port).expect("connect");
            // A refused connection may already be closed; that shows in `open()` later.
            let _ = tcp.write_all(&head[..1]);
            tcp.set_nonblocking(true).expect("non-blocking");
            sockets.push(Some(tcp));
        }
        Strangers {
            sockets,
            next_byte: 1,
        }
    }

    /// Sends the next byte of `head` (or `filler` past its end) on every open connection.
    fn trickle(&mut self, head: &[u8], filler: u8) {
        let byte = head.get(self.next_byte).copied().unwrap_or(filler);
        self.next_byte += 1;
        for socket in self.sockets.iter_mut().flatten() {
            let _ = socket.write(&[byte]);
        }
    }

    /// Connections the server has not closed; forgets the closed ones.
    fn open_count(&mut self) -> usize {
        for slot in &mut self.sockets {
            if let Some(socket) = slot
                && closed(socket)
            {
                *slot = None;
            }
        }
        self.sockets.iter().flatten().count()
    }
}

/// True once the server has closed `socket` (whatever it wrote before, e.g. a 503).
fn closed(socket: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Feeds `strangers` a byte every `every` until all are closed or `bound` passes, calling
/// `meanwhile` at each poll; returns how long they took to close.
fn trickle_until_closed(
    strangers: &mut Strangers,
    head: &[u8],
    filler: u8,
    every: Duration,
    bound: Duration,
    mut meanwhile: impl FnMut(),
) -> Option<Duration> {
    let started = Instant::now();
    let mut last_byte = Instant::now();
    poll_until(bound, || {
        if last_byte.elapsed() >= every {
            strangers.trickle(head, filler);
            last_byte = Instant::now();
        }
        meanwhile();
        (strangers.open_count() == 0).then(|| started.elapsed())
    })
}

fn counter(metrics: &str, name: &str, reason: &str) -> f64 {
    sample(metrics, &format!(r#"{name}{{reason="{reason}"}}"#)).unwrap_or(0.0)
}

#[test]
fn two_hundred_connections_sending_a_header_byte_every_few_seconds_are_closed() {
    raise_open_file_limit(4096);
    let dir = TestDir::new();
    // A cap per address above 200, so that the timeout is what acts here.
    let collector = Collector::embedded_with_env(
        &dir,
        &[
            ("PANTAU_HTTP__HEADER_READ_TIMEOUT_SECONDS", "3"),
            ("PANTAU_HTTP__MAX_CONNECTIONS_PER_ADDRESS", "1000"),
        ],
    );
    let port = port_of(&collector);
    let mut strangers = Strangers::open(STRANGER, port, 200, SLOW_HEAD);
    let opened = strangers.open_count();
    assert_eq!(opened, 200, "{}", collector.logs());
    // A byte every 2 s: each within the timeout of the last, the head never whole.
    let took = trickle_until_closed(
        &mut strangers,
        SLOW_HEAD,
        b'a',
        Duration::from_secs(2),
        Duration::from_secs(30),
        || {},
    );
    let left = strangers.open_count();
    let took = took.unwrap_or_else(|| {
        panic!(
            "{left} of 200 still open after 30 s of trickling\n{}",
            collector.logs()
        )
    });
    eprintln!("200 trickling connections closed within {took:?} (header timeout 3 s)");
    // Twice the timeout: without one, trickling keeps them open for the whole bound.
    assert!(took < Duration::from_secs(6), "{took:?}");
    let metrics = metrics_from(STAFF, port);
    let timed_out = counter(
        &metrics,
        "pantau_collector_http_timed_out_connections_total",
        "header_read",
    );
    assert!(timed_out >= 200.0, "{timed_out}");
    let open = sample(&metrics, "pantau_collector_http_open_connections").unwrap();
    assert!(open < 10.0, "{open}");
    let lints = promtool_metric_lints(&metrics).unwrap();
    let ours: Vec<&String> = lints
        .iter()
        .filter(|lint| lint.contains("pantau_collector_http_"))
        .collect();
    assert!(ours.is_empty(), "promtool: {ours:?}");
    // One line for the lot, not one per socket.
    let lines = collector
        .logs()
        .lines()
        .filter(|line| line.contains("closed an HTTP connection"))
        .count();
    assert!(
        (1..=5).contains(&lines),
        "{lines} lines\n{}",
        collector.logs()
    );
}

#[test]
fn two_thousand_trickling_connections_are_closed_and_file_handles_return_to_idle() {
    raise_open_file_limit(8192);
    let dir = TestDir::new();
    let collector = Collector::embedded_with_env(
        &dir,
        &[
            ("PANTAU_HTTP__HEADER_READ_TIMEOUT_SECONDS", "5"),
            ("PANTAU_HTTP__MAX_CONNECTIONS", "3000"),
            ("PANTAU_HTTP__MAX_CONNECTIONS_PER_ADDRESS", "2500"),
        ],
    );
    let port = port_of(&collector);
    let pid = collector.pid();
    // Idle: after a request from each kind of client, so lazily opened files are counted.
    for path in ["/healthz", "/metrics", "/console/login"] {
        let (status, _, _) = get_from(STAFF, port, path).unwrap();
        assert_eq!(status, 200, "{path}");
    }
    let idle = open_files(pid);

    let mut strangers = Strangers::open(STRANGER, port, 2000, SLOW_HEAD);
    let held = open_files(pid);
    eprintln!("collector file handles: idle {idle}, holding 2000 trickling connections {held}");
    assert!(held >= idle + 1000, "idle {idle}, held {held}");

    let paths = ["/healthz", "/metrics", "/console/login"];
    let mut answered = Vec::new();
    let mut failures = Vec::new();
    let took = trickle_until_closed(
        &mut strangers,
        SLOW_HEAD,
        b'a',
        Duration::from_secs(1),
        Duration::from_secs(40),
        || {
            let path = paths[answered.len() % paths.len()];
            match get_from(STAFF, port, path) {
                Ok((200, _, took)) => answered.push(took),
                other => failures.push(format!("{path}: {other:?}")),
            }
        },
    );
    let left = strangers.open_count();
    let took = took
        .unwrap_or_else(|| panic!("{left} of 2000 still open after 40 s\n{}", collector.logs()));
    assert!(failures.is_empty(), "{failures:?}");
    assert!(answered.len() >= 10, "only {} answers", answered.len());
    answered.sort();
    eprintln!(
        "2000 closed within {took:?}; 127.0.0.2 got {} answers meanwhile, median {:?}, max {:?}",
        answered.len(),
        answered[answered.len() / 2],
        answered[answered.len() - 1]
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    let back = poll_until(Duration::from_secs(10), || {
        let now = open_files(pid);
        (now <= idle + 2).then_some(now)
    });
    assert!(
        back.is_some(),
        "file handles: idle {idle}, now {}",
        open_files(pid)
    );
    let metrics = metrics_from(STAFF, port);
    let timed_out = counter(
        &metrics,
        "pantau_collector_http_timed_out_connections_total",
        "header_read",
    );
    assert!(timed_out >= 2000.0, "{timed_out}");
}

#[test]
fn one_address_gets_its_share_while_another_still_gets_in() {
    let dir = TestDir::new();
    let collector =
        Collector::embedded_with_env(&dir, &[("PANTAU_HTTP__MAX_CONNECTIONS_PER_ADDRESS", "50")]);
    let port = port_of(&collector);
    // Silent connections: within the header timeout (10 s by default) they are held.
    let mut strangers = Strangers::open(STRANGER, port, 80, SLOW_HEAD);
    // The harness may still hold a kept-alive connection of its own from 127.0.0.1.
    let open = wait_until("the excess to be refused", Duration::from_secs(5), || {
        let open = strangers.open_count();
        (open <= 50).then_some(open)
    });
    assert!((48..=50).contains(&open), "{open}");
    let metrics = metrics_from(STAFF, port);
    let refused = counter(
        &metrics,
        "pantau_collector_http_refused_connections_total",
        "max_connections_per_address",
    );
    assert!(refused >= 30.0, "{refused}");
    for path in ["/healthz", "/console/login"] {
        let (status, _, _) = get_from(STAFF, port, path).unwrap();
        assert_eq!(status, 200, "{path}");
    }
    // The stranger's next request is refused with a 503, the others' still served.
    // A 503, or a reset when the close overtakes the request (the server cannot wait for it).
    match get_from(STRANGER, port, "/healthz") {
        Ok((status, body, _)) => {
            assert_eq!((status, body.as_str()), (503, "too many connections\n"))
        }
        Err(error) => assert!(error.contains("reset"), "{error}"),
    }
    let lines = collector
        .logs()
        .lines()
        .filter(|line| line.contains("refused an HTTP connection"))
        .count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} lines\n{}",
        collector.logs()
    );
    // Once the stranger lets go, their address gets in again.
    drop(strangers);
    wait_until("127.0.0.1 to get in again", Duration::from_secs(5), || {
        matches!(get_from(STRANGER, port, "/healthz"), Ok((200, _, _))).then_some(())
    });
}

fn certificate(dir: &TestDir) -> (String, String) {
    pantau_tests::self_signed_certificate(dir.path(), "collector")
}

/// `curl` over HTTPS from `source`: the body, or `None` when it failed.
fn curl_from(source: Ipv4Addr, cacert: &str, url: &str) -> Option<String> {
    let out = run_with_timeout(
        Command::new("curl").args([
            "-sS",
            "--max-time",
            "5",
            "--interface",
            &source.to_string(),
            "--cacert",
            cacert,
            url,
        ]),
        b"",
        Duration::from_secs(10),
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn slow_tls_handshakes_are_closed_and_capped_while_another_address_gets_in() {
    raise_open_file_limit(4096);
    let dir = TestDir::new();
    let (cert, key) = certificate(&dir);
    let port = free_port();
    let mut command = Command::new(pantau_binary("pantau-collector"));
    command
        .arg("--config")
        .arg(example_config("collector.toml"))
        .env("PANTAU_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("PANTAU_HTTP__TLS_CERT_FILE", &cert)
        .env("PANTAU_HTTP__TLS_KEY_FILE", &key)
        .env("PANTAU_HTTP__HEADER_READ_TIMEOUT_SECONDS", "3")
        .env("PANTAU_HTTP__MAX_CONNECTIONS_PER_ADDRESS", "40")
        .env(
            "PANTAU_BROKER__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("PANTAU_BROKER__PASSWORD_FILE", "")
        .env("PANTAU_STORAGE__DIR", dir.join("storage"));
    let mut guard = ChildGuard::spawn("collector", &mut command, dir.path());
    let base = format!("https://127.0.0.1:{port}");
    wait_until("the collector over HTTPS", Duration::from_secs(30), || {
        if let Some(status) = guard.try_wait() {
            panic!("collector exited ({status})\n{}", guard.logs());
        }
        curl_from(STAFF, &cert, &format!("{base}/readyz")).filter(|body| body == "ready\n")
    });
    let idle = open_files(guard.pid());

    let mut strangers = Strangers::open(STRANGER, port, 100, SLOW_HELLO);
    let mut staff_answers = 0;
    let took = trickle_until_closed(
        &mut strangers,
        SLOW_HELLO,
        0,
        Duration::from_secs(1),
        Duration::from_secs(30),
        || {
            let healthz = curl_from(STAFF, &cert, &format!("{base}/healthz"));
            assert_eq!(healthz.as_deref(), Some("ok\n"), "{}", guard.logs());
            staff_answers += 1;
        },
    );
    let left = strangers.open_count();
    let took =
        took.unwrap_or_else(|| panic!("{left} of 100 still open after 30 s\n{}", guard.logs()));
    eprintln!(
        "100 slow TLS handshakes closed within {took:?}; 127.0.0.2 answered {staff_answers} times"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    let metrics = curl_from(STAFF, &cert, &format!("{base}/metrics")).unwrap();
    let timeouts = counter(
        &metrics,
        "pantau_collector_http_tls_handshake_failures_total",
        "timeout",
    );
    let refused = counter(
        &metrics,
        "pantau_collector_http_refused_connections_total",
        "max_connections_per_address",
    );
    assert!(timeouts >= 40.0, "{timeouts}");
    assert!(refused >= 60.0, "{refused}");
    let back = poll_until(Duration::from_secs(10), || {
        (open_files(guard.pid()) <= idle + 2).then_some(())
    });
    assert!(
        back.is_some(),
        "idle {idle}, now {}",
        open_files(guard.pid())
    );
}
