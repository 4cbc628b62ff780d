//! One HTTP/1.1 connection, driven by hyper, under three deadlines:
//!
//! - a request's head must arrive within `http.header_read_timeout_seconds` of its first byte
//!   (of the connection's start, for the first request: a socket that sends nothing is a
//!   slow head too);
//! - its body within that time again, counted from the end of the head;
//! - between requests, and while a response is in flight, nothing may stand still for
//!   `http.idle_timeout_seconds` (a keep-alive connection left open, a client that stops
//!   reading its answer).
//!
//! hyper's own `header_read_timeout` starts when the server waits for a head, which for a
//! kept-alive connection is while it is idle: it cannot tell a trickled head from an idle
//! connection, so it would make the idle timeout the header timeout. The deadlines here watch
//! the bytes themselves (a wrapper around the socket) and the requests (wrappers around their
//! bodies) instead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::debug;

/// The most a request's head may take in hyper's read buffer (hyper's floor is 8 KiB): a
/// browser's head with the console's cookies is under 4 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Which deadline closed a connection; the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    HeaderRead,
    BodyRead,
    Idle,
}

impl Timeout {
    pub const ALL: [Timeout; 3] = [Timeout::HeaderRead, Timeout::BodyRead, Timeout::Idle];

    pub fn reason(self) -> &'static str {
        match self {
            Timeout::HeaderRead => "header_read",
            Timeout::BodyRead => "body_read",
            Timeout::Idle => "idle",
        }
    }
}

/// `http.header_read_timeout_seconds` and `http.idle_timeout_seconds`.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub header_read: Duration,
    pub idle: Duration,
}

/// Where a connection stands, updated by its socket and its requests' bodies.
#[derive(Debug)]
struct Phase {
    /// Requests handed to the router whose response is not yet fully written.
    in_flight: usize,
    /// Requests answered so far.
    answered: u64,
    /// Since when nothing is in flight (the accept, or the end of the last response).
    idle_since: Instant,
    /// The first byte read while idle: a request's head is on its way.
    head_started: Option<Instant>,
    /// Request bodies not yet read to their end (or dropped).
    bodies_open: usize,
    /// By when the open bodies must be in.
    body_deadline: Instant,
    /// The last byte read or written.
    last_io: Instant,
}

impl Phase {
    fn new(now: Instant) -> Self {
        Self {
            in_flight: 0,
            answered: 0,
            idle_since: now,
            head_started: None,
            bodies_open: 0,
            body_deadline: now,
            last_io: now,
        }
    }

    /// The next deadline and what it is.
    fn deadline(&self, limits: &Deadlines) -> (Instant, Timeout) {
        if self.in_flight == 0 {
            return match (self.head_started, self.answered) {
                (Some(start), _) => (start + limits.header_read, Timeout::HeaderRead),
                (None, 0) => (self.idle_since + limits.header_read, Timeout::HeaderRead),
                (None, _) => (self.idle_since + limits.idle, Timeout::Idle),
            };
        }
        let stalled = self.last_io + limits.idle;
        match self.bodies_open > 0 && self.body_deadline < stalled {
            true => (self.body_deadline, Timeout::BodyRead),
            false => (stalled, Timeout::Idle),
        }
    }

    /// Returns true when this byte starts a request's head (the watcher's deadline moves
    /// earlier then).
    fn read(&mut self, now: Instant) -> bool {
        self.last_io = now;
        let starts_head = self.in_flight == 0 && self.head_started.is_none();
        if starts_head {
            self.head_started = Some(now);
        }
        starts_head
    }

    fn wrote(&mut self, now: Instant) {
        self.last_io = now;
    }

    fn request_started(&mut self, now: Instant, limits: &Deadlines) {
        self.in_flight += 1;
        self.head_started = None;
        self.bodies_open += 1;
        self.body_deadline = now + limits.header_read;
        self.last_io = now;
    }

    fn body_done(&mut self) {
        self.bodies_open = self.bodies_open.saturating_sub(1);
    }

    fn response_done(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.answered += 1;
        if self.in_flight == 0 {
            self.idle_since = now;
        }
        self.last_io = now;
    }
}

/// A connection's phase, shared by its socket, its bodies and its watcher.
#[derive(Debug)]
struct Shared {
    phase: Mutex<Phase>,
    limits: Deadlines,
    /// Woken when a head starts, whose deadline may be earlier than the one being slept on.
    head_started: Notify,
}

impl Shared {
    fn update<T>(&self, f: impl FnOnce(&mut Phase) -> T) -> T {
        f(&mut self.phase.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn deadline(&self) -> (Instant, Timeout) {
        self.update(|phase| phase.deadline(&self.limits))
    }
}

/// How a connection ended.
#[derive(Debug)]
pub enum Ended {
    /// By the client, by hyper (a malformed request) or after the shutdown's drain.
    Closed,
    /// By one of the deadlines.
    TimedOut(Timeout),
}

/// Serves `app` on one connection until it ends. At `shutdown` the connection finishes the
/// response in flight, if any, and closes.
pub async fn drive<S>(
    io: S,
    peer: SocketAddr,
    app: Router,
    limits: Deadlines,
    shutdown: CancellationToken,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared {
        phase: Mutex::new(Phase::new(Instant::now())),
        limits,
        head_started: Notify::new(),
    });
    let io = TokioIo::new(Tracked {
        inner: io,
        shared: shared.clone(),
    });
    let service = {
        let shared = shared.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            shared.update(|phase| phase.request_started(Instant::now(), &shared.limits));
            let mut request = request.map(|body| {
                Body::new(Guarded {
                    inner: Body::new(body),
                    shared: shared.clone(),
                    end: End::Request,
                    done: false,
                })
            });
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            let shared = shared.clone();
            async move {
                let response = match app.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Guarded {
                        inner: body,
                        shared,
                        end: End::Response,
                        done: false,
                    })
                }))
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder.max_buf_size(MAX_HEAD_BYTES);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let (deadline, _) = shared.deadline();
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, %error, "HTTP connection ended with an error");
                }
                return Ended::Closed;
            }
            () = tokio::time::sleep_until(deadline) => {
                let (deadline, timeout) = shared.deadline();
                if deadline <= Instant::now() {
                    // Dropping the connection closes the socket.
                    return Ended::TimedOut(timeout);
                }
            }
            () = shared.head_started.notified() => {}
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The socket, noting every byte read and written.
struct Tracked<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = Instant::now();
            if this.shared.update(|phase| phase.read(now)) {
                this.shared.head_started.notify_one();
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note_written(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S> Tracked<S> {
    fn note_written(&self, polled: &Poll<std::io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(written)) if *written > 0) {
            self.shared.update(|phase| phase.wrote(Instant::now()));
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum End {
    Request,
    Response,
}

/// A request's or response's body that tells the connection when it is finished: at its end,
/// at an error, or when dropped unread.
struct Guarded {
    inner: Body,
    shared: Arc<Shared>,
    end: End,
    done: bool,
}

impl Guarded {
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        match self.end {
            End::Request => self.shared.update(Phase::body_done),
            End::Response => self
                .shared
                .update(|phase| phase.response_done(Instant::now())),
        }
    }
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Deadlines = Deadlines {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn a_silent_new_connection_gets_the_header_timeout() {
        let start = Instant::now();
        let phase = Phase::new(start);
        assert_eq!(
            phase.deadline(&LIMITS),
            (at(start, 10), Timeout::HeaderRead)
        );
    }

    #[test]
    fn a_trickled_head_is_timed_from_its_first_byte_not_its_last() {
        let start = Instant::now();
        let mut phase = Phase::new(start);
        assert!(phase.read(at(start, 1)));
        for second in 2..9 {
            assert!(!phase.read(at(start, second)));
        }
        assert_eq!(
            phase.deadline(&LIMITS),
            (at(start, 11), Timeout::HeaderRead)
        );
    }

    #[test]
    fn a_kept_alive_connection_gets_the_idle_timeout_then_a_new_head_deadline() {
        let start = Instant::now();
        let mut phase = Phase::new(start);
        phase.read(start);
        phase.request_started(at(start, 1), &LIMITS);
        phase.body_done();
        phase.response_done(at(start, 2));
        assert_eq!(phase.deadline(&LIMITS), (at(start, 62), Timeout::Idle));
        assert!(phase.read(at(start, 30)));
        assert_eq!(
            phase.deadline(&LIMITS),
            (at(start, 40), Timeout::HeaderRead)
        );
    }

    #[test]
    fn a_body_gets_the_header_timeout_again_after_its_head() {
        let start = Instant::now();
        let mut phase = Phase::new(start);
        phase.read(start);
        phase.request_started(at(start, 5), &LIMITS);
        // Body bytes arriving one by one do not extend it.
        phase.read(at(start, 8));
        phase.read(at(start, 12));
        assert_eq!(phase.deadline(&LIMITS), (at(start, 15), Timeout::BodyRead));
        phase.body_done();
        assert_eq!(phase.deadline(&LIMITS), (at(start, 72), Timeout::Idle));
    }

    #[test]
    fn a_response_in_flight_may_run_while_bytes_move() {
        let start = Instant::now();
        let mut phase = Phase::new(start);
        phase.request_started(start, &LIMITS);
        phase.body_done();
        phase.wrote(at(start, 50));
        phase.wrote(at(start, 100));
        assert_eq!(phase.deadline(&LIMITS), (at(start, 160), Timeout::Idle));
    }
}
