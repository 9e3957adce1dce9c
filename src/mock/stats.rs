//! What a mock backend has seen, for tests to assert on.
//!
//! Lock-free on purpose: counters are atomics and the last body, model and
//! header live in `ArcSwap`s, so reading stats from a test never contends with the
//! server and no `std::sync::Mutex` is needed. Per-path counts use a fixed
//! table of the paths the mock knows, plus one bucket for everything else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;

/// Paths with their own request counter, in the order of
/// [`MockStats::by_path`]: every path the mock answers but
/// `/v1/models/{id}`, which counts under [`OTHER_PATHS`] with everything
/// else.
pub const KNOWN_PATHS: [&str; 17] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/v1/models",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
    "/api/tags",
    "/api/ps",
    "/api/version",
    "/",
    "/health",
];

/// The bucket name for paths not in [`KNOWN_PATHS`].
pub const OTHER_PATHS: &str = "(other)";

/// Counters and last-seen values of one mock backend. Shared by `Arc` between
/// the server and whoever asked for [`MockServer::stats`](super::MockServer::stats).
#[derive(Debug, Default)]
pub struct MockStats {
    /// Every request, whatever its path or outcome.
    requests: AtomicU64,
    /// Requests to `/` and `/health`, which is what health checkers probe.
    health_checks: AtomicU64,
    /// One counter per entry of [`KNOWN_PATHS`], then one for other paths.
    by_path: [AtomicU64; KNOWN_PATHS.len() + 1],
    /// Requests between arrival and the end (or abandonment) of their
    /// response, so load-aware balancing can be observed from the backend.
    in_flight: AtomicU64,
    /// TCP connections accepted; tells pooled keep-alive from reconnecting.
    connections: AtomicU64,
    /// Token streams whose every chunk, terminator included, went to hyper.
    streams_completed: AtomicU64,
    /// Token streams abandoned because the client went away.
    streams_cancelled: AtomicU64,
    /// Token streams cut on purpose by [`Failure::DropMidStream`](super::Failure).
    streams_dropped: AtomicU64,
    /// Body of the last POST, to check what the proxy forwarded.
    last_body: ArcSwap<Bytes>,
    /// `model` named by the last POST body that named one.
    last_model: ArcSwapOption<String>,
    /// The header of the last POST, to check what the proxy added to or
    /// removed from the request. Only POSTs: health checks and model
    /// discovery, which come on their own timers, would overwrite it.
    last_headers: ArcSwap<http::HeaderMap>,
    /// Each path requested (as received, base path included) with the
    /// header of its last request, GETs too: what health checks and model
    /// discovery sent. At most [`SEEN_PATHS`] paths, the first ones.
    seen: ArcSwap<Vec<(String, http::HeaderMap)>>,
}

/// Paths whose last header [`MockStats::headers_to`] keeps: a test's few.
pub const SEEN_PATHS: usize = 64;

impl MockStats {
    /// All requests received.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests to anything but `/` and `/health`, unknown paths included.
    pub fn api_requests(&self) -> u64 {
        self.requests().saturating_sub(self.health_checks())
    }

    /// Requests to `/` and `/health`.
    pub fn health_checks(&self) -> u64 {
        self.health_checks.load(Ordering::Relaxed)
    }

    /// Requests to `path`; a path outside [`KNOWN_PATHS`] reads the shared
    /// [`OTHER_PATHS`] bucket.
    pub fn requests_to(&self, path: &str) -> u64 {
        self.by_path[path_index(path)].load(Ordering::Relaxed)
    }

    /// Non-zero request counts by path, [`OTHER_PATHS`] last.
    pub fn by_path(&self) -> Vec<(&'static str, u64)> {
        KNOWN_PATHS
            .iter()
            .chain(std::iter::once(&OTHER_PATHS))
            .zip(&self.by_path)
            .map(|(p, n)| (*p, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Requests currently being served (streams count until their last chunk).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Streams that ran to their terminator.
    pub fn streams_completed(&self) -> u64 {
        self.streams_completed.load(Ordering::Relaxed)
    }

    /// Streams abandoned because the client disconnected.
    pub fn streams_cancelled(&self) -> u64 {
        self.streams_cancelled.load(Ordering::Relaxed)
    }

    /// Streams cut on purpose by `Failure::DropMidStream`.
    pub fn streams_dropped(&self) -> u64 {
        self.streams_dropped.load(Ordering::Relaxed)
    }

    /// Body of the last POST request (empty before the first).
    pub fn last_body(&self) -> Bytes {
        Bytes::clone(&self.last_body.load())
    }

    /// Length of [`MockStats::last_body`].
    pub fn last_body_len(&self) -> usize {
        self.last_body.load().len()
    }

    /// The model named by the last POST body that named one.
    pub fn last_model(&self) -> Option<String> {
        self.last_model.load_full().map(|m| m.as_ref().clone())
    }

    /// The header fields of the last POST request (empty before the first).
    pub fn last_headers(&self) -> http::HeaderMap {
        http::HeaderMap::clone(&self.last_headers.load())
    }

    /// Counts a request on arrival; the guard keeps it in flight until dropped.
    pub(crate) fn request(self: &Arc<Self>, path: &str) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if path == "/" || path == "/health" {
            self.health_checks.fetch_add(1, Ordering::Relaxed);
        }
        self.by_path[path_index(path)].fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    pub(crate) fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// The header of the last request to `path` (as received, base path
    /// included), whatever its method.
    pub fn headers_to(&self, path: &str) -> Option<http::HeaderMap> {
        self.seen
            .load()
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
    }

    /// Every path requested so far, as received.
    pub fn paths(&self) -> Vec<String> {
        self.seen.load().iter().map(|(p, _)| p.clone()).collect()
    }

    pub(crate) fn record_request(&self, path: &str, headers: &http::HeaderMap) {
        self.seen.rcu(|seen| {
            let mut next = Vec::clone(seen);
            if let Some((_, h)) = next.iter_mut().find(|(p, _)| p == path) {
                *h = headers.clone();
            } else if next.len() < SEEN_PATHS {
                next.push((path.to_string(), headers.clone()));
            }
            next
        });
    }

    pub(crate) fn record_post(&self, body: Bytes, model: Option<&str>, headers: http::HeaderMap) {
        self.last_body.store(Arc::new(body));
        self.last_headers.store(Arc::new(headers));
        if let Some(m) = model {
            self.last_model.store(Some(Arc::new(m.to_string())));
        }
    }

    pub(crate) fn stream_ended(&self, end: StreamEnd) {
        let counter = match end {
            StreamEnd::Completed => &self.streams_completed,
            StreamEnd::Cancelled => &self.streams_cancelled,
            StreamEnd::Dropped => &self.streams_dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a token stream ended, for [`MockStats::stream_ended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    Completed,
    Cancelled,
    Dropped,
}

/// Keeps one request counted in [`MockStats::in_flight`] until dropped, so
/// answered, hung-up-on and aborted requests are all released.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<MockStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn path_index(path: &str) -> usize {
    KNOWN_PATHS
        .iter()
        .position(|p| *p == path)
        .unwrap_or(KNOWN_PATHS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_paths_and_releases_in_flight() {
        let stats = Arc::new(MockStats::default());
        let a = stats.request("/health");
        let b = stats.request("/v1/chat/completions");
        let c = stats.request("/nope");
        assert_eq!(stats.requests(), 3);
        assert_eq!(stats.health_checks(), 1);
        assert_eq!(stats.api_requests(), 2);
        assert_eq!(stats.requests_to("/v1/chat/completions"), 1);
        assert_eq!(stats.requests_to("/elsewhere"), 1);
        assert_eq!(stats.in_flight(), 3);
        drop((a, b, c));
        assert_eq!(stats.in_flight(), 0);
        assert_eq!(stats.by_path().last(), Some(&(OTHER_PATHS, 1)));
    }
}
