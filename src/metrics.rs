//! Counters Switchyard keeps about itself.
//!
//! One [`Metrics`] is made at start and passed by `Arc` to whatever counts
//! (no `static`): the proxy service, the connection layer, the background
//! services. Tests make their own and assert on the counts; an exporter
//! reads the same fields.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything Switchyard counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Client connections refused because `server.max_connections` were
    /// open.
    pub connections_refused: Counter,
    /// Connections closed because a request header did not arrive within
    /// `server.timeouts.client_header`.
    pub client_header_timeouts: Counter,
    /// Requests refused with 431: the header was larger than
    /// `server.max_header_size`.
    pub client_headers_too_large: Counter,
    /// Kept-alive connections closed after `server.timeouts.keepalive`
    /// without a new request.
    pub keepalive_timeouts: Counter,
    /// Requests ended because the client stopped reading its response for
    /// `server.timeouts.client_send`.
    pub client_send_timeouts: Counter,
    /// Requests refused because they had already passed through this
    /// Switchyard (its own `Via` token).
    pub loops_refused: Counter,
    /// Attempts made again on another backend (a refused connect, a first
    /// byte that did not come, a 502/503/429 answer).
    pub retries: Counter,
    /// Reloads applied, and refused for an invalid file.
    pub reloads_applied: Counter,
    pub reloads_failed: Counter,
    /// Access log lines lost: the buffer was full (the disk could not keep
    /// up), or writing them failed (a full disk, a file that cannot be
    /// opened).
    pub access_log_dropped: Counter,
}
