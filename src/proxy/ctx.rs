//! What one request carries from hook to hook.

use super::framing::{Framer, StreamFormat};
use super::watchdog::Watchdog;
use crate::balance::in_flight::InFlightSlot;
use crate::balance::pool::{Pool, Upstream};
use crate::health::circuit::CircuitPermit;
use crate::lifecycle::drain::RequestGuard;
use crate::models::scan;
use crate::state::Snapshot;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;

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
    /// The model actually sent to the backend: `model`, or a fallback.
    pub(super) served_model: Option<String>,
    /// The request body, when it was read to find the model.
    pub(super) body: Option<Bytes>,
    /// Where the model's string literal sits in `body`.
    pub(super) model_span: Option<std::ops::Range<usize>>,
    /// The body to send instead of the client's, when the model was renamed.
    pub(super) upstream_body: Option<Bytes>,
    /// Backends attempted so far, so a retry picks another one.
    pub(super) tried: Vec<SocketAddr>,
    /// The backend of the current attempt.
    pub(super) upstream: Option<Arc<Upstream>>,
    /// Enforces `first_byte` and `idle` on the current attempt.
    pub(super) watchdog: Option<Watchdog>,
    /// The current backend's in-flight count, given back on drop.
    pub(super) slot: Option<InFlightSlot>,
    /// The current attempt's say in its backend's circuit.
    pub(super) permit: Option<CircuitPermit>,
    /// How the response streams, to end it with an error in its own format.
    pub(super) stream: Option<StreamFormat>,
    /// The current attempt's upstream socket, for the watchdog.
    pub(super) upstream_fd: Option<std::os::unix::io::RawFd>,
    /// `server.max_request_body` when the request started.
    pub(super) max_body: usize,
    /// Request body bytes forwarded so far.
    pub(super) body_bytes: usize,
    /// The unfinished event of a streamed response, held back.
    pub(super) framer: Framer,
}

impl RequestCtx {
    pub(super) fn pool(&self) -> Option<&Arc<Pool>> {
        self.snapshot.as_ref()?.pools.get(self.pool?)
    }

    pub(super) fn pool_name(&self) -> &str {
        self.pool().map_or("?", |p| p.spec.name.as_str())
    }

    /// Starts watching the upstream socket: shut down if `after` passes
    /// without a reset.
    pub(super) fn watch(&mut self, after: std::time::Duration) {
        let Some(fd) = self.upstream_fd else { return };
        match Watchdog::start(fd, after) {
            Ok(dog) => self.watchdog = Some(dog),
            Err(e) => log::warn!("cannot watch upstream socket: {e}"),
        }
    }

    /// Whether another attempt is allowed: within `retries`, with a
    /// backend left that was not tried.
    pub(super) fn may_retry(&self) -> bool {
        self.pool().is_some_and(|pool| {
            self.tried.len() <= pool.spec.retries
                && pool.has_untried(&self.tried, self.served_model.as_deref())
        })
    }

    /// Counts the current attempt as a failure of its backend.
    pub(super) fn backend_failed(&mut self) {
        if let Some(permit) = self.permit.take() {
            permit.failure();
        }
    }

    /// Counts the current attempt as a success of its backend.
    pub(super) fn backend_succeeded(&mut self) {
        if let Some(permit) = self.permit.take() {
            permit.success();
        }
    }
}

impl RequestCtx {
    /// Records the model sent upstream, renaming it in the body if the
    /// client asked for another name (an alias or a model that fell back).
    pub(super) fn set_served(&mut self, model: String) {
        if self.served_model.as_deref() == Some(model.as_str()) {
            return;
        }
        if let (Some(body), Some(span)) = (&self.body, &self.model_span) {
            let named = &body[span.clone()];
            let same = serde_json::from_slice::<String>(named).is_ok_and(|n| n == model);
            self.upstream_body =
                (!same).then(|| Bytes::from(scan::replace_model(body, span, &model)));
        }
        self.served_model = Some(model);
    }
}
