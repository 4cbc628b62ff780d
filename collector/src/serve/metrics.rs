//! The HTTP server's own series: open connections, refusals by cap, closes by timeout and
//! failed TLS handshakes. Every reason is created at registration, so a rate over it starts
//! from a zero instead of from nothing.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::connection::Timeout;
use super::slots::Refusal;

/// Registered once with the collector's registry.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// `pantau_collector_http_open_connections`.
    pub open: IntGauge,
    pub(crate) refused: IntCounterVec,
    pub(crate) timed_out: IntCounterVec,
    pub(crate) tls_failures: IntCounterVec,
    /// `pantau_collector_http_accept_errors_total`.
    pub accept_errors: IntCounter,
}

/// Why a TLS handshake failed; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// Not finished within `http.header_read_timeout_seconds`.
    Timeout,
    /// The client sent something that is not a TLS handshake we accept, or went away.
    Error,
}

impl TlsFailure {
    const ALL: [TlsFailure; 2] = [TlsFailure::Timeout, TlsFailure::Error];

    pub fn reason(self) -> &'static str {
        match self {
            TlsFailure::Timeout => "timeout",
            TlsFailure::Error => "error",
        }
    }
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let open = IntGauge::new(
            "pantau_collector_http_open_connections",
            "HTTP connections open now (plain or TLS), each holding one file handle.",
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "pantau_collector_http_refused_connections_total",
                "HTTP connections closed at once because a cap was full, by reason \
                 (max_connections: http.max_connections; max_connections_per_address: \
                 http.max_connections_per_address).",
            ),
            &["reason"],
        )?;
        let timed_out = IntCounterVec::new(
            Opts::new(
                "pantau_collector_http_timed_out_connections_total",
                "HTTP connections closed by a timeout, by reason (header_read: a request's \
                 head not received within http.header_read_timeout_seconds; body_read: its \
                 body not within that time again; idle: nothing sent or received for \
                 http.idle_timeout_seconds).",
            ),
            &["reason"],
        )?;
        let tls_failures = IntCounterVec::new(
            Opts::new(
                "pantau_collector_http_tls_handshake_failures_total",
                "HTTPS connections whose TLS handshake failed, by reason (timeout: not done \
                 within http.header_read_timeout_seconds; error: refused or broken).",
            ),
            &["reason"],
        )?;
        let accept_errors = IntCounter::new(
            "pantau_collector_http_accept_errors_total",
            "Failed accepts on http.listen (e.g. no file handle left); the server waits \
             100 ms after each.",
        )?;
        for refusal in Refusal::ALL {
            refused.with_label_values(&[refusal.reason()]);
        }
        for timeout in Timeout::ALL {
            timed_out.with_label_values(&[timeout.reason()]);
        }
        for failure in TlsFailure::ALL {
            tls_failures.with_label_values(&[failure.reason()]);
        }
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(timed_out.clone()))?;
        registry.register(Box::new(tls_failures.clone()))?;
        registry.register(Box::new(accept_errors.clone()))?;
        Ok(Self {
            open,
            refused,
            timed_out,
            tls_failures,
            accept_errors,
        })
    }

    pub fn refused(&self, refusal: Refusal) {
        self.refused.with_label_values(&[refusal.reason()]).inc();
    }

    pub fn timed_out(&self, timeout: Timeout) {
        self.timed_out.with_label_values(&[timeout.reason()]).inc();
    }

    pub fn tls_failed(&self, failure: TlsFailure) {
        self.tls_failures
            .with_label_values(&[failure.reason()])
            .inc();
    }
}
