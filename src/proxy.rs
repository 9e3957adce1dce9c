//! The Pingora `ProxyHttp` implementation: route, pick, connect, stream.
//!
//! Each request pins the routing snapshot current at its start
//! ([`RequestCtx::snapshot`]), so a reload never changes the pool or
//! backends under it. A failed connect is retried on another backend of the
//! pool, up to the pool's `retries`; errors the proxy answers itself are
//! OpenAI-style JSON.

use crate::drain::{InFlight, InFlightGuard};
use crate::error_response::ApiError;
use crate::models::lists::{self, ListKind};
use crate::models::scan;
use crate::pool::{Pool, Upstream};
use crate::request_body::{names_a_model, read_all, BodyError};
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
    /// The model the client asked for, after alias resolution.
    model: Option<String>,
    /// The model actually sent to the backend: `model`, or a fallback.
    served_model: Option<String>,
    /// The request body, when it was read to find the model.
    body: Option<Bytes>,
    /// Where the model's string literal sits in `body`.
    model_span: Option<std::ops::Range<usize>>,
    /// The body to send instead of the client's, when the model was renamed.
    upstream_body: Option<Bytes>,
    /// Backends attempted so far, so a retry picks another one.
    tried: Vec<SocketAddr>,
    /// The backend of the current attempt.
    upstream: Option<Arc<Upstream>>,
    /// Enforces `first_byte` and `idle` on the current attempt.
    watchdog: Option<Watchdog>,
    /// Why no backend was chosen, answered by `fail_to_proxy`.
    refusal: Option<ApiError>,
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
            model: None,
            served_model: None,
            body: None,
            model_span: None,
            upstream_body: None,
            tried: Vec::new(),
            upstream: None,
            watchdog: None,
            refusal: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = self.state.load_full();
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if let Some(kind) = ListKind::of(&method, &path) {
            answer_list(session, &snapshot, kind).await?;
            return Ok(true);
        }
        if names_a_model(&method, &path) {
            if let Err(api) = read_model(session, ctx, &snapshot).await? {
                api.send(session).await?;
                return Ok(true);
            }
        }
        let Some(index) = snapshot
            .router
            .route(session.req_header(), ctx.model.as_deref())
        else {
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
        ctx.pool = Some(index);
        ctx.snapshot = Some(snapshot);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool()
            .cloned()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no pool routed"))?;
        let upstream = match choose(session, ctx, &pool) {
            Ok(upstream) => upstream,
            Err(api) => {
                // Pingora hands this to `fail_to_proxy`, which answers it.
                ctx.refusal = Some(api.clone());
                return Error::e_explain(ErrorType::HTTPStatus(api.status), api.message);
            }
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
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let upgrade = session
            .req_header()
            .headers
            .contains_key(http::header::UPGRADE);
        for name in hop_by_hop(&upstream_request.headers, upgrade) {
            upstream_request.remove_header(&name);
        }
        if let Some(body) = &ctx.upstream_body {
            if upstream_request
                .headers
                .contains_key(http::header::CONTENT_LENGTH)
            {
                upstream_request
                    .insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The whole body arrives here at once (it was read to find the
        // model); send the one naming the model the backend serves.
        if let (Some(renamed), Some(_)) = (&ctx.upstream_body, body.as_ref()) {
            *body = Some(renamed.clone());
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
        if let Some(model) = &ctx.served_model {
            upstream_response.insert_header(MODEL_HEADER, model.as_str())?;
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
        let retry = attempts <= pool.spec.retries
            && pool.has_untried(&ctx.tried, ctx.served_model.as_deref());
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
        let api = ctx
            .refusal
            .take()
            .or_else(|| error_for(e, timed_out, ctx.pool_name()));
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

/// Names the model that served a response, which differs from the one asked
/// for when a fallback was used.
pub const MODEL_HEADER: &str = "x-switchyard-model";

/// Answers `/v1/models`, `/api/tags` or `/api/ps` for the whole fleet.
async fn answer_list(session: &mut Session, snapshot: &Snapshot, kind: ListKind) -> Result<()> {
    let body = match kind {
        ListKind::OpenAi => lists::openai(&lists::fleet_models(snapshot)),
        ListKind::OllamaTags => lists::ollama_tags(&lists::fleet_models(snapshot)),
        ListKind::OllamaPs => lists::ollama_ps(snapshot).await,
    };
    let mut header = ResponseHeader::build(200, Some(2))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// Reads the body and finds its model (resolving an alias). `Ok(Err(..))`
/// is an answer for the client; `Err` a failed client connection.
async fn read_model(
    session: &mut Session,
    ctx: &mut RequestCtx,
    snapshot: &Snapshot,
) -> Result<Result<(), ApiError>> {
    let body = match read_all(session, snapshot.config.server.max_request_body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let limit = snapshot.config.server.max_request_body;
            return Ok(Err(ApiError::from_status(
                413,
                format!("the request body is larger than {limit} bytes"),
            )));
        }
        Err(BodyError::Client(e)) => return Err(e),
    };
    let found = match scan::find_model(&body) {
        Ok(found) => found,
        Err(scan::ScanError::Missing) => {
            return Ok(Err(ApiError::new(
                400,
                "invalid_request_error",
                "model_required",
                "the request body has no \"model\"",
            )))
        }
        Err(scan::ScanError::Malformed(what)) => {
            return Ok(Err(ApiError::new(
                400,
                "invalid_request_error",
                "invalid_json",
                format!("the request body is not valid JSON: expected {what}"),
            )))
        }
    };
    let model = snapshot
        .config
        .models
        .aliases
        .get(&found.model)
        .cloned()
        .unwrap_or(found.model);
    ctx.model = Some(model);
    ctx.model_span = Some(found.span);
    ctx.body = Some(body);
    Ok(Ok(()))
}

/// Picks the backend for this attempt: one that serves the request's model,
/// else (on the first attempt) one that serves a fallback.
fn choose(
    session: &Session,
    ctx: &mut RequestCtx,
    pool: &Arc<Pool>,
) -> std::result::Result<Arc<Upstream>, ApiError> {
    let no_backend = |what: &str| {
        let mut api = ApiError::new(
            503,
            "server_error",
            "no_healthy_backend",
            format!("{what} in pool '{}'", pool.spec.name),
        );
        api.retry_after = Some(1);
        api
    };
    let Some(model) = ctx.model.clone() else {
        let key = pool.hash_key(session, None);
        return pool.select(&key, &ctx.tried, None).ok_or_else(|| {
            no_backend(if ctx.tried.is_empty() {
                "no healthy backend"
            } else {
                "no other healthy backend"
            })
        });
    };
    let current = ctx.served_model.clone().unwrap_or_else(|| model.clone());
    let key = pool.hash_key(session, Some(&current));
    if let Some(up) = pool.select(&key, &ctx.tried, Some(&current)) {
        ctx.set_served(current);
        return Ok(up);
    }
    if ctx.tried.is_empty() {
        let fallbacks = ctx
            .snapshot
            .as_ref()
            .and_then(|s| s.config.models.fallbacks.get(&model).cloned());
        for fallback in fallbacks.unwrap_or_default() {
            let key = pool.hash_key(session, Some(&fallback));
            if let Some(up) = pool.select(&key, &ctx.tried, Some(&fallback)) {
                debug!("model {model}: no healthy backend, falling back to {fallback}");
                ctx.set_served(fallback);
                return Ok(up);
            }
        }
        if !pool.knows(&model) {
            return Err(ApiError::new(
                404,
                "invalid_request_error",
                "model_not_found",
                format!("the model '{model}' does not exist or is not served here"),
            ));
        }
    }
    Err(no_backend(&format!(
        "no {}healthy backend for model '{current}'",
        if ctx.tried.is_empty() { "" } else { "other " }
    )))
}

impl RequestCtx {
    /// Records the model sent upstream, renaming it in the body if the
    /// client asked for another name (an alias or a model that fell back).
    fn set_served(&mut self, model: String) {
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
