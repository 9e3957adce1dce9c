//! What one request carries from hook to hook.

use super::attempt::{Attempt, Verdict};
use super::framing::{Framer, StreamFormat};
use super::observe::Observed;
use super::usage::UsageReader;
use crate::access_log::{Failure, Reason};
use crate::auth::ApiKey;
use crate::balance::pool::Pool;
use crate::forwarding::Origin;
use crate::lifecycle::drain::RequestGuard;
use crate::limits::Admission;
use crate::models::scan;
use crate::state::Snapshot;
use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state.
pub struct RequestCtx {
    /// Released when the request ends in any way.
    pub(super) _in_flight: RequestGuard,
    /// The routing state this request runs on, taken at its start.
    pub(super) snapshot: Option<Arc<Snapshot>>,
    /// Index of the routed pool in `snapshot.pools`.
    pub(super) pool: Option<usize>,
    /// The model the client asked for, after alias resolution.
    pub(super) model: Option<String>,
    /// The model that serves the request: `model`, or a fallback. Retries
    /// select backends by it.
    pub(super) served_model: Option<String>,
    /// The name `served_model` goes by at the current attempt's backend:
    /// its `model_map` entry, else `served_model` itself.
    pub(super) wire_model: Option<String>,
    /// The request body, when it was read to find the model.
    pub(super) body: Option<Bytes>,
    /// Where the model's string literal sits in `body`.
    pub(super) model_span: Option<std::ops::Range<usize>>,
    /// The body to send instead of the client's, when the model was renamed.
    pub(super) upstream_body: Option<Bytes>,
    /// Backends attempted so far, so a retry picks another one.
    pub(super) tried: Vec<SocketAddr>,
    /// The current attempt: its backend, slot, permit and watchdog.
    pub(super) attempt: Option<Attempt>,
    /// How the response streams, to end it with an error in its own format.
    pub(super) stream: Option<StreamFormat>,
    /// `server.max_request_body` when the request started.
    pub(super) max_body: usize,
    /// Request body bytes forwarded so far.
    pub(super) body_bytes: usize,
    /// The unfinished event of a streamed response, held back.
    pub(super) framer: Framer,
    /// The request's id and client address, read once when its header
    /// arrives (`early_request_filter`); `None` only before that.
    pub(super) origin: Option<Origin>,
    /// When the request and its response passed each step.
    pub(super) timing: Timing,
    /// Reads the token counts of a successful response as it passes.
    /// Small (its large part is boxed inside it, made only for streams),
    /// as Pingora moves the context with its futures several times per
    /// request, and every byte of it is copied each time.
    pub(super) usage: Option<UsageReader>,
    /// Instants and answers for the metrics, recorded at the end.
    pub(super) observed: Observed,
    /// Why each failed attempt failed, in order, for the access log.
    pub(super) failures: Vec<Failure>,
    /// Time spent waiting in the pool's queue, over all attempts.
    pub(super) queue_wait: Duration,
    /// The API key the request was sent with, when `auth:` is on.
    pub(super) key: Option<Arc<ApiKey>>,
    /// The request's share of its rate and concurrency limits, given back
    /// (and its tokens charged) when it ends.
    pub(super) admission: Option<Box<Admission>>,
}

/// When a request passed each step, for its metrics and its access log
/// line. Times of an attempt are those of the last one.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The request's header was read.
    pub start: Instant,
    /// The request (header and any body) was handed to the backend.
    pub sent: Option<Instant>,
    /// The response header arrived.
    pub header: Option<Instant>,
    /// The first byte of the response body arrived: for a stream, the
    /// first token.
    pub first_byte: Option<Instant>,
}

impl Timing {
    fn new() -> Self {
        Timing {
            start: Instant::now(),
            sent: None,
            header: None,
            first_byte: None,
        }
    }

    /// Time to first token: from the request sent to the first body byte.
    pub fn ttft(&self) -> Option<Duration> {
        Some(self.first_byte?.saturating_duration_since(self.sent?))
    }
}

impl RequestCtx {
    /// A request that has just begun, counted in `in_flight` until it ends.
    pub(super) fn new(in_flight: RequestGuard) -> Self {
        RequestCtx {
            _in_flight: in_flight,
            snapshot: None,
            pool: None,
            model: None,
            served_model: None,
            wire_model: None,
            body: None,
            model_span: None,
            upstream_body: None,
            tried: Vec::new(),
            attempt: None,
            stream: None,
            max_body: usize::MAX,
            body_bytes: 0,
            framer: Framer::default(),
            origin: None,
            timing: Timing::new(),
            usage: None,
            observed: Observed::default(),
            failures: Vec::new(),
            queue_wait: Duration::ZERO,
            key: None,
            admission: None,
        }
    }

    pub(super) fn pool(&self) -> Option<&Arc<Pool>> {
        self.snapshot.as_ref()?.pools.get(self.pool?)
    }

    pub(super) fn pool_name(&self) -> &str {
        self.pool().map_or("?", |p| p.spec.name.as_str())
    }

    /// The current attempt's verdict on its backend.
    pub(super) fn finish_attempt(&mut self, verdict: Verdict) {
        if let Some(attempt) = &mut self.attempt {
            attempt.finish(verdict);
        }
    }

    /// The current attempt failed, for `reason`. Several hooks may see one
    /// failure (a 503 turned into an error is seen again as the error):
    /// the first verdict is the attempt's, and only it is kept.
    pub(super) fn fail_attempt(&mut self, reason: Reason) {
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        if attempt.fail() {
            self.failures.push(Failure {
                backend: attempt.upstream.spec.name.clone(),
                reason,
            });
        }
    }

    /// Whether the current attempt's watchdog cut its backend off.
    pub(super) fn timed_out(&self) -> bool {
        self.attempt.as_ref().is_some_and(|a| a.timed_out())
    }
}

impl RequestCtx {
    /// The request's id, as sent to the backend and the client.
    pub(super) fn request_id(&self) -> Option<&str> {
        self.origin.as_ref().and_then(Origin::request_id)
    }

    /// The client's address, behind any trusted proxies: what `client_ip`
    /// hashes, and what the logs name.
    pub(super) fn client_ip(&self) -> Option<IpAddr> {
        self.origin.as_ref()?.client_ip
    }

    /// Whether the client may learn which backend served it (or failed):
    /// `server.expose_backend` of the request's snapshot.
    pub(super) fn expose_backend(&self) -> bool {
        self.snapshot
            .as_ref()
            .is_none_or(|s| s.config.server.expose_backend)
    }
}

impl RequestCtx {
    /// Records the model that serves this attempt and the name its backend
    /// knows it by (`wire`), renaming it in the body if the client asked
    /// for another name (an alias, a model that fell back, a backend's
    /// `model_map`). Each attempt starts again from the client's body, so
    /// a retry on another backend sends that backend's name, the client's
    /// when it maps none.
    pub(super) fn set_served(&mut self, model: String, wire: &str) {
        if self.served_model.as_deref() == Some(model.as_str())
            && self.wire_model.as_deref() == Some(wire)
        {
            return;
        }
        if let (Some(body), Some(span)) = (&self.body, &self.model_span) {
            let named = &body[span.clone()];
            let same = serde_json::from_slice::<String>(named).is_ok_and(|n| n == wire);
            self.upstream_body =
                (!same).then(|| Bytes::from(scan::replace_model(body, span, wire)));
        }
        self.wire_model = Some(wire.to_string());
        self.served_model = Some(model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::drain::Requests;

    #[test]
    fn set_served_renames_the_model_in_the_body_only_when_it_differs() {
        let requests = Arc::new(Requests::default());
        let mut ctx = RequestCtx::new(requests.enter());
        let body = Bytes::from_static(br#"{"messages":[],"model":"gpt-4o","stream":true}"#);
        let found = scan::find_model(&body).unwrap();
        ctx.body = Some(body);
        ctx.model_span = Some(found.span);
        ctx.set_served("gpt-4o".into(), "gpt-4o");
        assert_eq!(ctx.upstream_body, None, "the client's body goes as it is");
        ctx.set_served("llama3".into(), "llama3");
        let renamed = ctx.upstream_body.clone().expect("a renamed body");
        let v: serde_json::Value = serde_json::from_slice(&renamed).unwrap();
        assert_eq!(v["model"], "llama3");
        assert_eq!(v["stream"], true);
        assert_eq!(ctx.served_model.as_deref(), Some("llama3"));
    }

    #[test]
    fn a_mapped_name_goes_to_its_backend_only() {
        let requests = Arc::new(Requests::default());
        let mut ctx = RequestCtx::new(requests.enter());
        let body = Bytes::from_static(br#"{"model":"llama3.1:8b","stream":false}"#);
        let found = scan::find_model(&body).unwrap();
        ctx.body = Some(body);
        ctx.model_span = Some(found.span);
        let served = "meta-llama/Llama-3.1-8B-Instruct";
        ctx.set_served("llama3.1:8b".into(), served);
        let renamed = ctx.upstream_body.clone().expect("a renamed body");
        let v: serde_json::Value = serde_json::from_slice(&renamed).unwrap();
        assert_eq!(v["model"], served);
        assert_eq!(ctx.served_model.as_deref(), Some("llama3.1:8b"));
        // A retry on a backend without a map sends the client's body.
        ctx.set_served("llama3.1:8b".into(), "llama3.1:8b");
        assert_eq!(ctx.upstream_body, None);
    }
}
