//! The Pingora `ProxyHttp` implementation: route, pick, connect, stream.
//!
//! Each request pins the routing snapshot current at its start
//! ([`RequestCtx::snapshot`]), so a reload never changes the pool or
//! backends under it. A failed connect is retried on another backend of the
//! pool, up to the pool's `retries`; errors the proxy answers itself are
//! OpenAI-style JSON.

use crate::drain::{InFlight, InFlightGuard};
use crate::error_response::ApiError;
use crate::pool::{Pool, Upstream};
use crate::state::{SharedState, Snapshot};
use crate::watchdog::Watchdog;
use async_trait::async_trait;
use bytes::Bytes;
use log::{debug, warn};
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long an idle upstream connection is kept for reuse. Below the 5 s
/// keep-alive of uvicorn (vLLM) and the like, so that Switchyard drops a
/// pooled connection before the backend does and a request is rarely sent
/// on a connection that is being closed.
const UPSTREAM_IDLE: Duration = Duration::from_secs(4);

/// The proxy service.
pub struct Switchyard {
    state: Arc<SharedState>,
    /// Every request holds a count here, so shutdown can end with the last.
    in_flight: Arc<InFlight>,
}

impl Switchyard {
    pub fn new(state: Arc<SharedState>, in_flight: Arc<InFlight>) -> Self {
        Switchyard { state, in_flight }
    }
}

/// Per-request state.
pub struct RequestCtx {
    /// Released when the request ends in any way.
    _in_flight: InFlightGuard,
    /// The routing state this request runs on, taken at its start.
    snapshot: Option<Arc<Snapshot>>,
    /// Index of the routed pool in `snapshot.pools`.
    pool: Option<usize>,
    /// `consistent_hash` key, computed once per request.
    hash_key: Vec<u8>,
    /// Backends attempted so far, so a retry picks another one.
    tried: Vec<SocketAddr>,
    /// The backend of the current attempt.
    upstream: Option<Arc<Upstream>>,
    /// Enforces `first_byte` and `idle` on the current attempt.
    watchdog: Option<Watchdog>,
}

impl RequestCtx {
    fn pool(&self) -> Option<&Arc<Pool>> {
        self.snapshot.as_ref()?.pools.get(self.pool?)
    }

    fn pool_name(&self) -> &str {
        self.pool().map_or("?", |p| p.spec.name.as_str())
    }
}

/// Headers that describe one connection, not the message, and so are not
/// forwarded (RFC 9110 §7.6.1). `transfer-encoding` is left to Pingora,
/// which re-frames bodies itself.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
];

/// The hop-by-hop headers present, including those named by `Connection`.
/// An upgrade keeps `Connection`/`Upgrade` so Pingora can tunnel it.
fn hop_by_hop(headers: &http::HeaderMap, upgrade: bool) -> Vec<String> {
    if upgrade {
        return Vec::new();
    }
    let named = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive" && t != "transfer-encoding");
    HOP_BY_HOP
        .iter()
        .chain(&["upgrade"])
        .map(|s| s.to_string())
        .chain(named)
        .filter(|name| headers.contains_key(name.as_str()))
        .collect()
}

#[async_trait]
impl ProxyHttp for Switchyard {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _in_flight: self.in_flight.enter(),
            snapshot: None,
            pool: None,
            hash_key: Vec::new(),
            tried: Vec::new(),
            upstream: None,
            watchdog: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = self.state.load_full();
        let Some(index) = snapshot.router.route(session.req_header()) else {
            let path = session.req_header().uri.path().to_string();
            ApiError::new(
                404,
                "invalid_request_error",
                "no_route",
                format!("no route matches {path}"),
            )
            .send(session)
            .await?;
            return Ok(true);
        };
        ctx.hash_key = snapshot.pools[index].hash_key(session);
        ctx.pool = Some(index);
        ctx.snapshot = Some(snapshot);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool()
            .cloned()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no pool routed"))?;
        let Some(upstream) = pool.select(&ctx.hash_key, &ctx.tried) else {
            let what = if ctx.tried.is_empty() {
                "no healthy backend"
            } else {
                "no other healthy backend"
            };
            return Error::e_explain(
                ErrorType::HTTPStatus(503),
                format!("{what} in pool '{}'", pool.spec.name),
            );
        };
        ctx.tried.push(upstream.spec.addr);
        let mut peer = HttpPeer::new(upstream.spec.addr, false, String::new());
        let t = &pool.spec.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        // The watchdog enforces first_byte and idle precisely; this is only a
        // backstop should it be unavailable.
        peer.options.read_timeout = Some(t.first_byte.max(t.idle));
        peer.options.idle_timeout = Some(UPSTREAM_IDLE);
        debug!(
            "pool {}: attempt {} on {}",
            pool.spec.name,
            ctx.tried.len(),
            upstream.spec.name
        );
        ctx.upstream = Some(upstream);
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(first_byte) = ctx.pool().map(|p| p.spec.timeouts.first_byte) else {
            return Ok(());
        };
        if let Some(old) = ctx.watchdog.take() {
            old.disarm();
        }
        match Watchdog::start(fd, first_byte) {
            Ok(dog) => ctx.watchdog = Some(dog),
            Err(e) => warn!("cannot watch upstream socket: {e}"),
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let upgrade = session
            .req_header()
            .headers
            .contains_key(http::header::UPGRADE);
        for name in hop_by_hop(&upstream_request.headers, upgrade) {
            upstream_request.remove_header(&name);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(dog), Some(pool)) = (&ctx.watchdog, ctx.pool()) {
            dog.reset(pool.spec.timeouts.idle);
        }
        let upgrade = upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS;
        for name in hop_by_hop(&upstream_response.headers, upgrade) {
            upstream_response.remove_header(&name);
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(dog) = &ctx.watchdog {
            if end_of_stream {
                // Before Pingora can return the connection to the pool.
                dog.disarm();
            } else if let Some(pool) = ctx.pool() {
                dog.reset(pool.spec.timeouts.idle);
            }
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(pool) = ctx.pool() else { return e };
        let attempts = ctx.tried.len();
        let retry = attempts <= pool.spec.retries && pool.has_untried(&ctx.tried);
        warn!(
            "pool {}: connect to {} failed ({}){}",
            pool.spec.name,
            peer,
            e.etype().as_str(),
            if retry {
                ", trying another backend"
            } else {
                ""
            }
        );
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        // A request sent on a pooled connection that the backend closed
        // while idle never reached it: safe to resend, POST included, as
        // long as the body can be replayed whole.
        if session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let timed_out = ctx.watchdog.as_ref().is_some_and(|d| d.fired());
        if let Some(dog) = ctx.watchdog.take() {
            dog.disarm();
        }
        let api = error_for(e, timed_out, ctx.pool_name());
        let code = match api {
            Some(api) if session.response_written().is_none() => {
                if let Err(write) = api.send(session).await {
                    debug!("could not send error response: {write}");
                }
                api.status
            }
            Some(api) => api.status,
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(dog) = ctx.watchdog.take() {
            dog.disarm();
        }
        if let Some(e) = e {
            let status = session.response_written().map_or(0, |r| r.status.as_u16());
            debug!("{} -> {status}: {e}", self.request_summary(session, ctx));
        }
    }
}

/// The answer for an error; `None` when the client is gone.
fn error_for(e: &Error, timed_out: bool, pool: &str) -> Option<ApiError> {
    if let ErrorType::HTTPStatus(status) = e.etype() {
        let message = e
            .context
            .as_ref()
            .map_or_else(|| e.to_string(), |c| c.as_str().to_string());
        let mut api = ApiError::from_status(*status, message);
        if *status == 503 {
            api.code = "no_healthy_backend";
            api.retry_after = Some(1);
        }
        return Some(api);
    }
    if timed_out
        || matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::ConnectTimedout
        )
    {
        let mut api = ApiError::from_status(504, format!("backend in pool '{pool}' timed out"));
        api.code = "backend_timeout";
        return Some(api);
    }
    match e.esource() {
        ErrorSource::Upstream => {
            let mut api = ApiError::from_status(
                502,
                format!("backend in pool '{pool}' failed: {}", e.etype().as_str()),
            );
            api.code = "backend_error";
            Some(api)
        }
        ErrorSource::Downstream => match e.etype() {
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => None,
            _ => Some(ApiError::from_status(400, "malformed request")),
        },
        ErrorSource::Internal | ErrorSource::Unset => {
            Some(ApiError::from_status(500, "internal error"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = http::HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("upgrade", "h2c".parse().unwrap());
        h.insert("authorization", "Bearer x".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let mut removed = hop_by_hop(&h, false);
        removed.sort();
        assert_eq!(
            removed,
            ["connection", "keep-alive", "te", "upgrade", "x-secret"]
        );
        assert!(hop_by_hop(&h, true).is_empty());
    }

    #[test]
    fn errors_map_to_statuses() {
        let e = Error::explain(ErrorType::HTTPStatus(503), "no healthy backend in pool 'a'");
        let api = error_for(&e, false, "a").unwrap();
        assert_eq!((api.status, api.code), (503, "no_healthy_backend"));
        assert_eq!(api.message, "no healthy backend in pool 'a'");
        let e = Error::new_up(ErrorType::ConnectRefused);
        assert_eq!(error_for(&e, false, "a").unwrap().status, 502);
        assert_eq!(error_for(&e, true, "a").unwrap().status, 504);
        let e = Error::new_down(ErrorType::ConnectionClosed);
        assert!(error_for(&e, false, "a").is_none());
    }
}
