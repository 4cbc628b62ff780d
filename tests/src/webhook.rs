//! A minimal HTTP server that records what is POSTed to it: where Alertmanager delivers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;

use crate::wait::poll_until;

/// Largest request accepted; a webhook body is a few KiB.
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Records the body of every request sent to it (any method, any path) and answers
/// `200 OK`. Bodies that are JSON are stored parsed; anything else as a JSON string.
/// Listens on 127.0.0.1 on a port the OS picks; stopped on drop.
///
/// Requests must carry `Content-Length` (Go's HTTP client, used by Alertmanager, does);
/// each connection serves one request.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Binds 127.0.0.1 and starts accepting on a background thread.
    pub fn start() -> WebhookReceiver {
        // Port 0 and keeping the listener: unlike `free_port`, no window for another process.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let addr = listener
            .local_addr()
            .expect("local address of a bound listener");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = Arc::clone(&received);
            let stop = Arc::clone(&stop);
            thread::spawn(move || serve(&listener, &received, &stop))
        };
        WebhookReceiver {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/webhook`.
    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// Every body received so far, oldest first.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().expect("webhook store lock").clone()
    }

    /// Waits until at least `count` bodies have arrived and returns all of them.
    ///
    /// # Panics
    /// On timeout, with what did arrive.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Value> {
        poll_until(timeout, || {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .unwrap_or_else(|| {
            panic!(
                "webhook got {} of {count} requests within {timeout:?}: {:?}",
                self.received().len(),
                self.received()
            )
        })
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, received: &Mutex<Vec<Value>>, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        // A client that stalls must not wedge the receiver.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let (status, body) = match read_request(&mut stream) {
            Ok(body) => ("200 OK", Some(body)),
            Err(_) => ("400 Bad Request", None),
        };
        if let Some(body) = body {
            let value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            received.lock().expect("webhook store lock").push(value);
        }
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
}

/// Reads one request and returns its body.
fn read_request(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 8192];
    let header_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).map_err(|err| err.to_string())?;
        if read == 0 || buffer.len() > MAX_REQUEST_BYTES {
            return Err("connection closed inside the headers".to_owned());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>().map_err(|err| err.to_string()))
        .transpose()?
        .unwrap_or(0);
    if length > MAX_REQUEST_BYTES {
        return Err(format!("body of {length} bytes"));
    }
    let mut body = buffer.split_off(header_end);
    while body.len() < length {
        let read = stream.read(&mut chunk).map_err(|err| err.to_string())?;
        if read == 0 {
            return Err("connection closed inside the body".to_owned());
        }
        body.extend_from_slice(&chunk[..read]);
    }
    body.truncate(length);
    Ok(body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
