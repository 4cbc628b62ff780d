//! Tests of `sender.rs`.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use super::*;

/// A one-connection-at-a-time HTTP server answering each request with the next status
/// of `statuses`, recording the bodies.
fn server(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<Vec<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for status in statuses {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            bodies.push(body);
            let mut stream = reader.into_inner();
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
        }
        bodies
    });
    (url, handle)
}

#[test]
fn retries_on_5xx_and_drops_on_4xx() {
    let (url, server) = server(vec![503, 204, 400]);
    let dir = tempfile::tempdir().unwrap();
    let (mut queue, _) = Queue::open(dir.path(), 1 << 20).unwrap();
    let request = proto::WriteRequest {
        timeseries: vec![proto::TimeSeries {
            labels: vec![proto::Label {
                name: "__name__".to_owned(),
                value: "x".to_owned(),
            }],
            samples: vec![proto::Sample {
                value: 1.0,
                timestamp: 5,
            }],
        }],
    };
    queue.push(1, 5, &request.encode_to_vec()).unwrap();
    let shared = Arc::new(Shared::new(queue));
    let config = RemoteWriteConfig {
        batch_samples: 1,
        ..RemoteWriteConfig::default()
    };
    let settings = Settings::new(url, &config);
    let metrics = BackfillMetrics::register(&prometheus::Registry::new()).unwrap();
    let shutdown = CancellationToken::new();
    let thread = {
        let (shared, metrics, shutdown) = (shared.clone(), metrics.clone(), shutdown.clone());
        std::thread::spawn(move || send_loop(&shared, &settings, &metrics, &shutdown))
    };
    // 503, then 204: the same sample sent twice, then marked sent.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.sent.get() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metrics.sent.get(), 1);
    assert_eq!(metrics.failed_requests.get(), 1);
    // The next one is refused with 400: dropped and counted, not retried.
    {
        let mut queue = shared.queue.lock().unwrap();
        queue.push(1, 6, &request.encode_to_vec()).unwrap();
    }
    shared.pushed.notify_one();
    while metrics.dropped_count("rejected") < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metrics.dropped_count("rejected"), 1);
    shutdown.cancel();
    thread.join().unwrap();
    let bodies = server.join().unwrap();
    assert_eq!(bodies.len(), 3);
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&bodies[0])
        .unwrap();
    assert_eq!(
        proto::WriteRequest::decode(raw.as_slice()).unwrap(),
        request
    );
    assert_eq!(bodies[0], bodies[1], "the retry sends the same batch");
    assert_eq!(shared.queue.lock().unwrap().unsent_samples(), 0);
}

/// A refused batch is sent again record by record, so one bad message does not take the
/// good ones with it.
#[test]
fn a_refused_batch_is_retried_one_record_at_a_time() {
    let (url, server) = server(vec![400, 204, 400]);
    let dir = tempfile::tempdir().unwrap();
    let (mut queue, _) = Queue::open(dir.path(), 1 << 20).unwrap();
    let record = |timestamp: i64| {
        proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels: Vec::new(),
                samples: vec![proto::Sample {
                    value: 1.0,
                    timestamp,
                }],
            }],
        }
        .encode_to_vec()
    };
    queue.push(1, 1, &record(1)).unwrap();
    queue.push(1, 2, &record(2)).unwrap();
    let shared = Arc::new(Shared::new(queue));
    let settings = Settings::new(url, &RemoteWriteConfig::default());
    let metrics = BackfillMetrics::register(&prometheus::Registry::new()).unwrap();
    let shutdown = CancellationToken::new();
    let thread = {
        let (shared, metrics, shutdown) = (shared.clone(), metrics.clone(), shutdown.clone());
        std::thread::spawn(move || send_loop(&shared, &settings, &metrics, &shutdown))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.dropped_count("rejected") < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    shutdown.cancel();
    thread.join().unwrap();
    assert_eq!(metrics.sent.get(), 1);
    assert_eq!(metrics.dropped_count("rejected"), 1);
    let bodies = server.join().unwrap();
    let decode = |body: &Vec<u8>| {
        let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
        proto::WriteRequest::decode(raw.as_slice())
            .unwrap()
            .timeseries
            .len()
    };
    let sizes: Vec<usize> = bodies.iter().map(decode).collect();
    assert_eq!(sizes, [2, 1, 1]);
}
