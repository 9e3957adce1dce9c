//! What Switchyard counts about itself, and the Prometheus registry it is
//! exported from.
//!
//! One [`Metrics`] is made at start and passed by `Arc` to whatever counts
//! (no `static`, and never the `prometheus` crate's default registry): the
//! proxy service, the connection layer, the background services, the
//! admin listener that serves `/metrics`. Tests make their own and assert
//! on the counts.
//!
//! Three kinds of metric, by what they cost:
//! - counters bumped where an event happens (a refused connection, a
//!   retry, a reload), each a handle resolved once or on a rare path;
//! - per-request series (requests, duration, time to first token, time per
//!   output token, tokens) recorded once per request, at its end, through
//!   one cached [`series::Series`] per pool, backend and model;
//! - gauges that mirror state (backend up, circuit, in flight, queue
//!   depth), read from the routing snapshot at scrape time by
//!   [`fleet::FleetCollector`], which requests pay nothing for.
//!
//! Names carry their unit in base units (`_seconds`, `_bytes`), counters end
//! in `_total`, and every label takes values from a bounded set
//! ([`labels`]). The README's Metrics section lists them all.
//!
//! # Layout
//! - [`labels`]: the values labels take.
//! - [`series`]: the per-request series and their cache.
//! - [`fleet`]: gauges read from the routing snapshot at scrape time.
//! - [`process`]: the standard `process_*` metrics, across the daemon fork.
//! - [`window`]: the last minute of each backend's requests, for `/status`.

pub mod fleet;
pub mod labels;
pub mod process;
pub mod series;
pub mod window;

pub use labels::{Outcome, RetryReason, TokenSource};
pub use series::{RequestRecord, SeriesHint, Usage};

use crate::lifecycle::drain::Requests;
use crate::state::SharedState;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use series::{Families, SeriesCache};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whole requests: the shortest answers Switchyard gives itself take well
/// under 5 ms, and a generation may stream for the ten minutes a long
/// answer of a large model can take.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Time to first token: 10 ms for a small model with its prompt cached, up
/// to a minute for a long prompt on a large or freshly loaded model.
const TTFT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Time per output token: about 1 ms for a small model on a fast GPU, tens
/// of ms for most, a second for a large model on a CPU.
const TPOT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
];

/// Waiting for a backend slot: most waits end within a generation's length;
/// `queue.timeout` is at most 10 minutes.
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Everything Switchyard counts, and the registry it is exported from.
pub struct Metrics {
    registry: Registry,

    // The client side (`edge`).
    /// Client connections open now.
    pub connections_open: IntGauge,
    /// Client connections refused because `server.max_connections` were
    /// open.
    pub connections_refused: IntCounter,
    /// Connections closed because a request header did not arrive within
    /// `server.timeouts.client_header`.
    pub client_header_timeouts: IntCounter,
    /// Requests refused with 431: the header was larger than
    /// `server.max_header_size`.
    pub client_headers_too_large: IntCounter,
    /// Kept-alive connections closed after `server.timeouts.keepalive`
    /// without a new request.
    pub keepalive_timeouts: IntCounter,
    /// Requests ended because the client stopped reading its response for
    /// `server.timeouts.client_send`.
    pub client_send_timeouts: IntCounter,
    /// Requests refused because they had already passed through this
    /// Switchyard (its own `Via` token).
    pub loops_refused: IntCounter,
    /// Access log lines lost: the buffer was full (the disk could not keep
    /// up), or writing them failed (a full disk, a file that cannot be
    /// opened).
    pub access_log_dropped: IntCounter,
    /// Connections closed at accept by `server.allow` / `server.deny`.
    pub connections_denied: IntCounter,
    /// Checks of the rate limits that could not ask `limits.store`.
    pub limit_store_errors: IntCounter,
    /// Requests refused by a rate limit, by key name, scope and limit.
    rate_limited: IntCounterVec,
    /// Requests by the key that sent them, and their status class.
    key_requests: IntCounterVec,

    // The proxy.
    families: Families,
    series: SeriesCache,
    /// By pool and reason.
    retries: IntCounterVec,
    /// Streams ended with an error event, by pool and error code.
    stream_errors: IntCounterVec,
    /// Clients that left before their answer ended, by pool and phase.
    cancellations: IntCounterVec,
    /// Upstream connections made for a request, and pooled ones reused.
    upstream_opened: IntCounter,
    upstream_reused: IntCounter,
    /// Time spent in a pool's queue, by requests that had to wait.
    queue_wait: HistogramVec,

    // The background services.
    reloads_applied: IntCounter,
    reloads_failed: IntCounter,
    last_reload: Gauge,
    discovery_failures: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // Every name and label set is a constant, and the unit test
        // `every_family_is_exported` builds them all: failing here is a bug
        // the first test run finds, not something a configuration or a
        // request can cause.
        Metrics::build().expect("the metric definitions are valid")
    }

    fn build() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let r = &registry;
        let counter = |name: &str, help: &str| add(r, IntCounter::new(name, help)?);
        let counters = |name: &str, help: &str, labels: &[&str]| {
            add(r, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let histograms = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            add(r, HistogramVec::new(opts, labels)?)
        };
        let series = &["pool", "backend", "model"];
        let families = Families {
            requests: counters(
                "switchyard_requests_total",
                "Requests, counted once when they end.",
                &["pool", "backend", "model", "status", "outcome", "error_code"],
            )?,
            duration: histograms(
                "switchyard_request_duration_seconds",
                "From the request header read to the end of the response.",
                DURATION_BUCKETS,
                series,
            )?,
            ttft: histograms(
                "switchyard_time_to_first_token_seconds",
                "Streamed responses: from the request sent to the backend to the first body byte back.",
                TTFT_BUCKETS,
                series,
            )?,
            tpot: histograms(
                "switchyard_time_per_output_token_seconds",
                "Streamed responses: the time after the first token divided by the tokens after it.",
                TPOT_BUCKETS,
                series,
            )?,
            tokens: counters(
                "switchyard_tokens_total",
                "Tokens of prompts and completions, as the backend reported them or as estimated.",
                &["pool", "backend", "model", "kind", "source"],
            )?,
        };
        let build_info = add(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "switchyard_build_info",
                    "Always 1; the version is in the label.",
                ),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let reloads = counters(
            "switchyard_reloads_total",
            "Configuration reloads (SIGHUP), applied (ok) or refused for an invalid file (failed).",
            &["result"],
        )?;
        let connections = counters(
            "switchyard_upstream_connections_total",
            "Connections to backends a request was sent on: opened for it, or reused from the pool.",
            &["kind"],
        )?;
        let metrics = Metrics {
            connections_open: add(
                r,
                IntGauge::new(
                    "switchyard_client_connections",
                    "Client connections open now.",
                )?,
            )?,
            connections_refused: counter(
                "switchyard_client_connections_refused_total",
                "Client connections refused with 503 because server.max_connections were open.",
            )?,
            client_header_timeouts: counter(
                "switchyard_client_header_timeouts_total",
                "Connections closed because a request header did not arrive within server.timeouts.client_header.",
            )?,
            client_headers_too_large: counter(
                "switchyard_client_headers_too_large_total",
                "Requests refused with 431 because the header was larger than server.max_header_size.",
            )?,
            keepalive_timeouts: counter(
                "switchyard_client_keepalive_timeouts_total",
                "Idle client connections closed after server.timeouts.keepalive.",
            )?,
            client_send_timeouts: counter(
                "switchyard_client_send_timeouts_total",
                "Responses ended because the client read nothing for server.timeouts.client_send.",
            )?,
            loops_refused: counter(
                "switchyard_loops_refused_total",
                "Requests refused with 508 because they had already passed through this proxy.",
            )?,
            access_log_dropped: counter(
                "switchyard_access_log_dropped_lines_total",
                "Access log lines dropped because the buffer was full or writing them failed.",
            )?,
            connections_denied: counter(
                "switchyard_client_connections_denied_total",
                "Client connections closed at accept because server.allow or server.deny excludes their address.",
            )?,
            limit_store_errors: counter(
                "switchyard_limit_store_errors_total",
                "Rate limit checks that could not ask limits.store (Redis) in time.",
            )?,
            rate_limited: counters(
                "switchyard_rate_limited_total",
                "Requests refused with 429 by a rate limit, by key (empty without one), scope and limit.",
                &["key", "scope", "limit"],
            )?,
            key_requests: counters(
                "switchyard_key_requests_total",
                "Requests by the API key that sent them (auth.keys[].name), by status class.",
                &["key", "status"],
            )?,
            families,
            series: SeriesCache::default(),
            retries: counters(
                "switchyard_retries_total",
                "Attempts made again on another backend, by why the previous one failed.",
                &["pool", "reason"],
            )?,
            stream_errors: counters(
                "switchyard_stream_errors_total",
                "Streams that failed after they began and were ended with an error event in their own format.",
                &["pool", "error_code"],
            )?,
            cancellations: counters(
                "switchyard_client_cancellations_total",
                "Requests whose client went away (or stopped reading) before the response ended.",
                &["pool", "phase"],
            )?,
            upstream_opened: connections.with_label_values(&["opened"]),
            upstream_reused: connections.with_label_values(&["reused"]),
            queue_wait: histograms(
                "switchyard_queue_wait_seconds",
                "Time requests that found every backend at its max_in_flight waited in the pool's queue.",
                QUEUE_WAIT_BUCKETS,
                &["pool"],
            )?,
            reloads_applied: reloads.with_label_values(&["ok"]),
            reloads_failed: reloads.with_label_values(&["failed"]),
            last_reload: add(
                r,
                Gauge::new(
                    "switchyard_last_reload_success_timestamp_seconds",
                    "When the configuration in force was loaded (at start, or by the last good reload), in Unix time.",
                )?,
            )?,
            discovery_failures: counters(
                "switchyard_model_discovery_failures_total",
                "Model list requests to a backend that failed.",
                &["backend"],
            )?,
            registry,
        };
        metrics.last_reload.set(unix_now());
        metrics
            .registry
            .register(Box::new(process::SelfProcess::new()))?;
        Ok(metrics)
    }

    /// Adds the gauges read from the routing state at each scrape.
    pub fn watch_fleet(&self, state: Arc<SharedState>, requests: Arc<Requests>) {
        let fleet = fleet::FleetCollector::new(state, requests)
            .and_then(|c| self.registry.register(Box::new(c)));
        if let Err(e) = fleet {
            log::error!("metrics of the fleet are unavailable: {e}");
        }
    }

    /// Everything, in Prometheus's text format.
    pub fn encode(&self) -> prometheus::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(16 << 10);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }

    /// The media type of [`Metrics::encode`]'s output.
    pub fn content_type(&self) -> &'static str {
        prometheus::TEXT_FORMAT
    }

    /// One request has ended. `labels` are its pool, backend and model
    /// (empty when it had none); `known` says whether a model not seen
    /// before may be a label ([`labels::is_fleet_model`]), and is only
    /// called then.
    pub fn record_request(
        &self,
        labels: (&str, &str, &str),
        hint: Option<&SeriesHint>,
        known: impl FnOnce() -> bool,
        record: &RequestRecord,
    ) {
        self.series
            .with(&self.families, labels, hint, known, |series| {
                series.record(&self.families, record)
            });
    }

    /// Counts a response's tokens. The model is the label its request was
    /// counted under (the request's own record makes its series first); a
    /// model without a series counts as `other`.
    pub fn record_tokens(
        &self,
        pool: &str,
        backend: &str,
        model: &str,
        prompt: u64,
        completion: u64,
        source: TokenSource,
    ) {
        let usage = Usage {
            prompt,
            completion,
            source,
        };
        self.series.with(
            &self.families,
            (pool, backend, model),
            None,
            || false,
            |series| series.tokens(&self.families, usage),
        );
    }

    /// A rate limit refused a request of `key` (empty without one).
    pub fn rate_limited(&self, key: &str, scope: &str, limit: &str) {
        self.rate_limited
            .with_label_values(&[key, scope, limit])
            .inc();
    }

    /// A request sent with the key called `key` ended with `status` (0: none).
    pub fn key_request(&self, key: &str, status: u16) {
        let class = labels::status_class((status > 0).then_some(status));
        self.key_requests.with_label_values(&[key, class]).inc();
    }

    pub fn retried(&self, pool: &str, reason: RetryReason) {
        self.retries
            .with_label_values(&[pool, reason.as_str()])
            .inc();
    }

    pub fn stream_error(&self, pool: &str, error_code: &str) {
        self.stream_errors
            .with_label_values(&[pool, error_code])
            .inc();
    }

    /// The client of a request to `pool` left; `responding` says whether
    /// its response had begun.
    pub fn client_cancelled(&self, pool: &str, responding: bool) {
        let phase = if responding {
            "during_response"
        } else {
            "before_response"
        };
        self.cancellations.with_label_values(&[pool, phase]).inc();
    }

    pub fn upstream_connection(&self, reused: bool) {
        if reused {
            self.upstream_reused.inc();
        } else {
            self.upstream_opened.inc();
        }
    }

    /// A request left `pool`'s queue after `waited`, served or not.
    pub fn queue_waited(&self, pool: &str, waited: Duration) {
        self.queue_wait
            .with_label_values(&[pool])
            .observe(waited.as_secs_f64());
    }

    /// A reload was applied (`true`) or refused.
    pub fn reloaded(&self, applied: bool) {
        if applied {
            self.reloads_applied.inc();
            self.last_reload.set(unix_now());
        } else {
            self.reloads_failed.inc();
        }
    }

    pub fn reloads(&self) -> (u64, u64) {
        (self.reloads_applied.get(), self.reloads_failed.get())
    }

    pub fn discovery_failed(&self, backend: &str) {
        self.discovery_failures.with_label_values(&[backend]).inc();
    }
}

/// Registers `c` and hands it back.
fn add<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> prometheus::Result<C> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests;
