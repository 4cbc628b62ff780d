//! The HTTP server for `/metrics`, the API and the console, plain or HTTPS: one accept loop of
//! our own, so that every connection is under the caps of [`slots`] and the deadlines of
//! [`connection`], and a stranger on the LAN cannot hold the collector's sockets and file
//! handles by opening connections and sending nothing, or a byte at a time.
//!
//! At shutdown the loop stops accepting, every connection finishes the response in flight and
//! closes, and the loop waits for them up to [`DRAIN_TIMEOUT`].

mod connection;
mod metrics;
pub mod nofile;
mod slots;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use connection::Deadlines;
pub use metrics::HttpMetrics;

use connection::{Ended, Timeout};
use metrics::TlsFailure;
use slots::{Refusal, Slot, Slots};

/// How long shutdown waits for connections to finish their responses.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A line per kind of event per this period at most, whatever the number of sockets.
const LOG_PERIOD: Duration = Duration::from_secs(10);

/// What a refused plain-HTTP client reads before the close. Written without waiting: a
/// client that does not read it loses nothing but the reason.
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Retry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n\r\ntoo many connections\n";

/// `[http]`'s limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub deadlines: Deadlines,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
}

/// The server: what it serves and how.
pub struct Server {
    pub app: Router,
    /// HTTPS with this config; plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: Limits,
    pub metrics: HttpMetrics,
}

impl Server {
    /// Serves on `listener` until `shutdown`, then drains.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), std::io::Error> {
        let slots = Slots::new(
            self.limits.max_connections,
            self.limits.max_connections_per_address,
            self.metrics.open.clone(),
        );
        let context = Arc::new(Context {
            app: self.app,
            tls: self.tls.map(TlsAcceptor::from),
            deadlines: self.limits.deadlines,
            metrics: self.metrics,
            log: LogLimiter::new(LOG_PERIOD),
            shutdown: shutdown.clone(),
        });
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        context.accept_failed(&error);
                        // EMFILE and the like: the next accept would fail at once again.
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        }
                    }
                },
            };
            match slots.take(peer.ip()) {
                Ok(slot) => {
                    connections.spawn(context.clone().serve(tcp, peer, slot));
                }
                Err(refusal) => context.refuse(&tcp, peer, refusal),
            }
        }
        drop(listener);
        let open = slots.open();
        if open > 0 {
            info!(open, "HTTP server draining its connections");
        }
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                left = connections.len(),
                "HTTP connections still open after the drain; closing them"
            );
        }
        Ok(())
    }
}

/// What every connection's task shares.
struct Context {
    app: Router,
    tls: Option<TlsAcceptor>,
    deadlines: Deadlines,
    metrics: HttpMetrics,
    log: LogLimiter,
    shutdown: CancellationToken,
}

impl Context {
    async fn serve(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, slot: Slot) {
        let ended = match &self.tls {
            None => {
                connection::drive(
                    tcp,
                    peer,
                    self.app.clone(),
                    self.deadlines,
                    self.shutdown.clone(),
                )
                .await
            }
            Some(acceptor) => {
                let handshake = tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    handshake = tokio::time::timeout(
                        self.deadlines.header_read,
                        acceptor.accept(tcp),
                    ) => handshake,
                };
                let tls = match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        return self.tls_failed(peer, TlsFailure::Error, &error.to_string());
                    }
                    Err(_) => {
                        return self.tls_failed(peer, TlsFailure::Timeout, "handshake timed out");
                    }
                };
                connection::drive(
                    tls,
                    peer,
                    self.app.clone(),
                    self.deadlines,
                    self.shutdown.clone(),
                )
                .await
            }
        };
        if let Ended::TimedOut(timeout) = ended {
            self.timed_out(peer, timeout);
        }
        drop(slot);
    }

    fn refuse(&self, tcp: &TcpStream, peer: SocketAddr, refusal: Refusal) {
        self.metrics.refused(refusal);
        if self.tls.is_none() {
            // Reading what already arrived makes the close a FIN rather than a reset, which
            // would discard the 503 before the client reads it (a race either way).
            let _ = tcp.try_read(&mut [0u8; 1024]);
            let _ = tcp.try_write(REFUSED_RESPONSE);
        }
        if let Verdict::Log { suppressed } = self.log.check(refusal.reason()) {
            warn!(
                %peer,
                reason = refusal.reason(),
                suppressed,
                "refused an HTTP connection: the cap is full (http.max_connections, \
                 http.max_connections_per_address)"
            );
        }
    }

    fn timed_out(&self, peer: SocketAddr, timeout: Timeout) {
        self.metrics.timed_out(timeout);
        // Idle keep-alive connections closing is ordinary; a slow head or body is not.
        if timeout == Timeout::Idle {
            return;
        }
        if let Verdict::Log { suppressed } = self.log.check(timeout.reason()) {
            info!(
                %peer,
                reason = timeout.reason(),
                suppressed,
                "closed an HTTP connection whose request did not arrive within \
                 http.header_read_timeout_seconds"
            );
        }
    }

    fn tls_failed(&self, peer: SocketAddr, failure: TlsFailure, error: &str) {
        self.metrics.tls_failed(failure);
        let key = match failure {
            TlsFailure::Timeout => "tls_timeout",
            TlsFailure::Error => "tls_error",
        };
        if let Verdict::Log { suppressed } = self.log.check(key) {
            info!(
                %peer,
                reason = failure.reason(),
                error,
                suppressed,
                "HTTPS handshake failed (a plain http:// client, a client that does not \
                 trust http.tls_cert_file, or one too slow)"
            );
        }
    }

    fn accept_failed(&self, error: &std::io::Error) {
        self.metrics.accept_errors.inc();
        if let Verdict::Log { suppressed } = self.log.check("accept") {
            warn!(%error, suppressed, "http.listen: accept failed");
        }
    }
}

#[cfg(test)]
mod tests;
