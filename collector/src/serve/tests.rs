//! The accept loop on real loopback sockets, with deadlines short enough for a unit test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::*;

const HEADER_READ: Duration = Duration::from_millis(300);

struct Running {
    address: SocketAddr,
    metrics: HttpMetrics,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

async fn start(app: Router, per_address: usize) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let metrics = HttpMetrics::register(&Registry::new()).unwrap();
    let shutdown = CancellationToken::new();
    let server = Server {
        app,
        tls: None,
        limits: Limits {
            deadlines: Deadlines {
                header_read: HEADER_READ,
                idle: Duration::from_millis(600),
            },
            max_connections: 100,
            max_connections_per_address: per_address,
        },
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(server.run(listener, shutdown.clone()));
    Running {
        address,
        metrics,
        shutdown,
        task,
    }
}

fn peer_app() -> Router {
    Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    )
}

async fn get_once(address: SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer
}

/// Reads until the server closes; the time it took, bounded.
async fn closed_within(tcp: &mut TcpStream, bound: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(bound, tcp.read_to_end(&mut sink))
        .await
        .expect("the server did not close the connection")
        .ok();
    started.elapsed()
}

fn timed_out(metrics: &HttpMetrics, reason: &str) -> u64 {
    metrics.timed_out.with_label_values(&[reason]).get()
}

#[tokio::test]
async fn handlers_see_the_remote_address() {
    let server = start(peer_app(), 10).await;
    let answer = get_once(server.address, "/peer").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("\r\n\r\n127.0.0.1:"), "{answer}");
}

#[tokio::test]
async fn a_trickled_head_is_closed_at_the_header_timeout() {
    let server = start(peer_app(), 10).await;
    let mut slow = TcpStream::connect(server.address).await.unwrap();
    let head = b"GET /peer HTTP/1.1\r\nHost: x\r\n";
    let trickle = async {
        for byte in head {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Each byte is within the timeout of the last; together they are not.
    tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .unwrap();
    let waited = closed_within(&mut slow, Duration::from_secs(2)).await;
    assert!(waited < Duration::from_secs(2));
    assert_eq!(timed_out(&server.metrics, "header_read"), 1);
    // Meanwhile others were served.
    let answer = get_once(server.address, "/peer").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert_eq!(server.metrics.open.get(), 0);
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_timeout() {
    let server = start(peer_app(), 10).await;
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    let waited = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(
        waited >= HEADER_READ - Duration::from_millis(50),
        "{waited:?}"
    );
    assert_eq!(timed_out(&server.metrics, "header_read"), 1);
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_at_the_idle_timeout() {
    let server = start(peer_app(), 10).await;
    let mut tcp = TcpStream::connect(server.address).await.unwrap();
    tcp.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 512];
    let read = tcp.read(&mut buffer).await.unwrap();
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200 OK"));
    // Longer than the header timeout: idle between requests is not a slow head.
    let waited = closed_within(&mut tcp, Duration::from_secs(3)).await;
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert_eq!(timed_out(&server.metrics, "idle"), 1);
    assert_eq!(timed_out(&server.metrics, "header_read"), 0);
}

#[tokio::test]
async fn a_trickled_body_is_closed_at_the_body_timeout() {
    let app = Router::new().route(
        "/echo",
        axum::routing::post(|body: String| async move { body }),
    );
    let server = start(app, 10).await;
    let mut tcp = TcpStream::connect(server.address).await.unwrap();
    tcp.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..20 {
        if tcp.write_all(b"x").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    closed_within(&mut tcp, Duration::from_secs(3)).await;
    assert_eq!(timed_out(&server.metrics, "body_read"), 1);
}

#[tokio::test]
async fn one_address_gets_its_share_then_a_503() {
    let server = start(peer_app(), 2).await;
    let _one = TcpStream::connect(server.address).await.unwrap();
    let _two = TcpStream::connect(server.address).await.unwrap();
    // The two are accepted before the third: the loop takes them in order.
    let mut third = TcpStream::connect(server.address).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut answer))
        .await
        .unwrap()
        .ok();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let refused = server
        .metrics
        .refused
        .with_label_values(&["max_connections_per_address"])
        .get();
    assert_eq!(refused, 1);
    assert_eq!(server.metrics.open.get(), 2);
}

#[tokio::test]
async fn shutdown_finishes_the_response_in_flight() {
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let app = {
        let release = release.clone();
        let entered = entered.clone();
        Router::new().route(
            "/slow",
            get(move || async move {
                entered.notify_one();
                release.notified().await;
                "done\n"
            }),
        )
    };
    let server = start(app, 10).await;
    let address = server.address;
    let client = tokio::spawn(async move { get_once(address, "/slow").await });
    tokio::time::timeout(Duration::from_secs(5), entered.notified())
        .await
        .unwrap();
    server.shutdown.cancel();
    // No new connections once shutting down.
    tokio::time::timeout(Duration::from_secs(5), async {
        while TcpStream::connect(address).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    release.notify_one();
    let answer = client.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("done\n"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
