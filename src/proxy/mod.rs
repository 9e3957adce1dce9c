//! The Pingora `ProxyHttp` implementation: route, pick, connect, stream.
//!
//! Each request pins the routing snapshot current at its start
//! ([`RequestCtx`]), so a reload never changes the pool or backends under
//! it. A failed connect is retried on another backend of the pool, up to the
//! pool's `retries`; errors the proxy answers itself are OpenAI-style JSON.
//!
//! # Layout
//! - [`access`]: a request's access log line, from its context.
//! - [`attempt`]: one attempt at one backend, and what its events mean.
//! - [`backend`]: what a backend's own settings change in a request: its
//!   base path, `Host` and headers.
//! - [`body`]: reading a body whole to route on its model.
//! - [`ctx`]: what one request carries from hook to hook.
//! - [`endpoints`]: what is done with each API path.
//! - [`mod@choose`]: the request's model, the backend for each attempt, and the
//!   model lists Switchyard answers itself.
//! - [`failure`]: what the client gets when something fails.
//! - [`framing`]: streamed responses passed on whole events at a time.
//! - [`gate`]: the API key, what it may use, and the rate limits.
//! - [`headers`]: hop-by-hop headers.
//! - [`observe`]: what a request tells the metrics, recorded at its end.
//! - [`policy`]: what a request must look like, and the `Via` it gets.
//! - [`replay`]: forwarding a body read before the backend was chosen.
//! - [`retry`]: when a failed attempt is made again on another backend.
//! - [`usage`]: the token counts of a response, read as it streams past.
//! - [`watchdog`]: the first-byte and idle timeouts of a response.

mod access;
mod attempt;
mod backend;
mod body;
mod choose;
mod ctx;
mod endpoints;
mod failure;
mod framing;
mod gate;
mod headers;
mod observe;
mod policy;
mod replay;
mod retry;
mod usage;
mod watchdog;

pub use choose::MODEL_HEADER;
pub use ctx::RequestCtx;
pub use framing::StreamFormat;
pub use policy::Via;

use crate::access_log::{AccessLog, Reason};
use crate::edge;
use crate::errors::{Refusal, Shape};
use crate::forwarding::{self, Origin};
use crate::lifecycle::drain::Requests;
use crate::limits::Limiter;
use crate::metrics::{Metrics, RetryReason};
use crate::models::lists::ListCache;
use crate::state::SharedState;
use async_trait::async_trait;
use attempt::Verdict;
use bytes::Bytes;
use choose::{answer_list, choose, read_model};
use endpoints::Endpoint;
use failure::refusal_for;
use headers::strip_hop_by_hop;
use log::{debug, warn};
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usage::UsageReader;

/// How long an idle upstream connection is kept for reuse. Below the 5 s
/// keep-alive of uvicorn (vLLM) and the like, so that Switchyard drops a
/// pooled connection before the backend does and a request is rarely sent
/// on a connection that is being closed.
const UPSTREAM_IDLE: Duration = Duration::from_secs(4);

/// How long a refused upload is still read so the client sees the refusal.
const LINGER: Duration = Duration::from_secs(5);

/// The proxy service.
pub struct Switchyard {
    state: Arc<SharedState>,
    /// Every request holds a count here, so shutdown can end with the last.
    in_flight: Arc<Requests>,
    metrics: Arc<Metrics>,
    /// The model lists Switchyard answers, built once per change of the
    /// backends rather than per request; shared with the admin listener.
    lists: Arc<ListCache>,
    /// This process's `Via` entry: added to every forwarded request, and
    /// the sign of a request that has looped back.
    via: Via,
    /// Gets a line for every request.
    access_log: Arc<AccessLog>,
    /// The rate and concurrency limits' buckets.
    limiter: Limiter,
}

impl Switchyard {
    pub fn new(
        state: Arc<SharedState>,
        in_flight: Arc<Requests>,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
        lists: Arc<ListCache>,
    ) -> Self {
        Switchyard {
            state,
            in_flight,
            via: Via::new(),
            access_log,
            lists,
            limiter: Limiter::new(metrics.clone()),
            metrics,
        }
    }
}

#[async_trait]
impl ProxyHttp for Switchyard {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.in_flight.enter())
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The header has been read: the connection layer stops holding the
        // client to header limits, and lets the response through.
        if let Some(conn) = edge::conn_of(session) {
            conn.request_started();
        }
        // Who the request is from, before anything can answer it.
        let trusted = &self.state.load().config.server.trusted_proxies;
        ctx.origin = Some(Origin::read(session, trusted));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = self.state.load_full();
        let client = &snapshot.config.server.timeouts;
        // Pingora applies these to each read of the request body and each
        // write of the response: a client that stalls its upload, or stops
        // reading its answer, is dropped and frees what it held.
        session.set_read_timeout(Some(client.client_body));
        session.set_write_timeout(Some(client.client_send));
        if session.req_header().version == http::Version::HTTP_10 {
            // 1xx answers do not exist in HTTP/1.0.
            session.set_ignore_info_resp(true);
        }
        let max_body = snapshot.config.server.max_request_body;
        if let Err(refusal) = policy::check(session.req_header(), &self.via, max_body) {
            if refusal == Refusal::LoopDetected {
                self.metrics.loops_refused.inc();
            }
            refuse(session, ctx, &refusal).await?;
            return Ok(true);
        }
        if !gate::authenticate(session, ctx, &snapshot).await? {
            return Ok(true);
        }
        let header = session.req_header();
        let endpoint = Endpoint::of(&header.method, header.uri.path());
        match endpoint {
            Endpoint::List(kind) => {
                let access = ctx.key.as_ref().map(|k| &k.access);
                let keep = |entry: &_| access.is_none_or(|a| gate::may_list(&snapshot, a, entry));
                let keep = access
                    .filter(|a| !a.is_unrestricted())
                    .map(|_| &keep as &(dyn Fn(&_) -> bool + Sync));
                if let Err(refusal) = answer_list(
                    session,
                    ctx.request_id(),
                    &snapshot,
                    &self.lists,
                    kind,
                    keep,
                )
                .await?
                {
                    refuse(session, ctx, &refusal).await?;
                }
                return Ok(true);
            }
            Endpoint::Model(keys) => {
                if let Err(refusal) = read_model(session, ctx, &snapshot, keys).await? {
                    refuse(session, ctx, &refusal).await?;
                    return Ok(true);
                }
            }
            Endpoint::Management => {
                if !gate::check_managed_models(session, ctx, &snapshot).await? {
                    return Ok(true);
                }
            }
            Endpoint::Pass => {}
        }
        ctx.max_body = max_body;
        let path = session.req_header().uri.path().to_string();
        let Some(index) = snapshot
            .router
            .route(session.req_header(), ctx.model.as_deref())
        else {
            refuse(session, ctx, &Refusal::NoRoute { path }).await?;
            return Ok(true);
        };
        if endpoint == Endpoint::Management && snapshot.pools[index].upstreams().len() > 1 {
            refuse(session, ctx, &Refusal::PerBackendOperation { path }).await?;
            return Ok(true);
        }
        if !gate::check_access(session, ctx, &snapshot.pools[index].spec.name).await? {
            return Ok(true);
        }
        if !gate::admit(&self.limiter, session, ctx, &snapshot, index).await? {
            return Ok(true);
        }
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
        let attempt = match choose(session, ctx, &pool, &self.metrics).await {
            Ok(attempt) => attempt,
            // Pingora hands this to `fail_to_proxy`, which answers it.
            Err(refusal) => return Err(refusal.into_error()),
        };
        let upstream = attempt.upstream.clone();
        ctx.tried.push(upstream.spec.addr);
        let mut peer = crate::balance::peer::http_peer(&upstream.spec);
        let t = &pool.spec.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        // Pingora's one read timeout enforces first_byte on the response
        // header (and bounds a body's reads too); idle is enforced on
        // streamed bodies by the watchdog. In the unusual case idle >
        // first_byte, the watchdog takes both and this is only a backstop.
        peer.options.read_timeout = Some(t.first_byte.max(t.idle));
        peer.options.idle_timeout = Some(UPSTREAM_IDLE);
        debug!(
            "pool {}: attempt {} on {}",
            pool.spec.name,
            ctx.tried.len(),
            upstream.spec.name
        );
        ctx.attempt = Some(attempt);
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.metrics.upstream_connection(reused);
        if let Some(attempt) = &mut ctx.attempt {
            attempt.on_connected(fd);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Hop-by-hop headers are gone already: Pingora's upstream request
        // policy removes them before this filter.
        // httpoxy: a `Proxy` header becomes HTTP_PROXY in CGI-style
        // backends and redirects their outgoing requests.
        upstream_request.remove_header("proxy");
        if let Some(auth) = ctx.snapshot.as_ref().and_then(|s| s.config.auth.as_ref()) {
            if !auth.forward {
                crate::auth::presented::strip(upstream_request);
            }
        }
        upstream_request.append_header(http::header::VIA, self.via.entry())?;
        if let Some(origin) = &ctx.origin {
            forwarding::headers::to_backend(origin, upstream_request)?;
        }
        if let Some(attempt) = &ctx.attempt {
            backend::to_backend(&attempt.upstream.spec, upstream_request)?;
        }
        if ctx.body.is_some() {
            // Switchyard has read the body (and answered `100 Continue`
            // itself): the backend gets it whole, with nothing to confirm.
            upstream_request.remove_header(&http::header::EXPECT);
        }
        // A new attempt: its times replace an earlier one's. A body, if
        // any, moves `sent` to when it has gone.
        ctx.timing.sent = Some(Instant::now());
        ctx.timing.header = None;
        ctx.timing.first_byte = None;
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
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The whole body arrives here at once (it was read to find the
        // model); send the one naming the model the backend serves.
        if let (Some(renamed), Some(_)) = (&ctx.upstream_body, body.as_ref()) {
            *body = Some(renamed.clone());
        }
        // A body that declared no length (chunked) is held to the same
        // limit as one that did, on every path.
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len());
        if end_of_stream {
            ctx.timing.sent = Some(Instant::now());
        }
        if ctx.body.is_none() && ctx.body_bytes > ctx.max_body {
            let mut e = Refusal::BodyTooLarge {
                limit: ctx.max_body,
            }
            .into_error();
            // The client's doing, never the backend's.
            e.as_down();
            return Err(e);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(format) = ctx.stream {
            *body = ctx.framer.pass(format, body.take(), end_of_stream);
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let backend = match &ctx.attempt {
            Some(attempt) if ctx.expose_backend() => {
                Some((attempt.upstream.name_header.as_ref(), ctx.tried.len()))
            }
            _ => None,
        };
        let id = ctx.origin.as_ref().map(|o| &o.request_id);
        forwarding::headers::to_client(response, id, backend)?;
        if let Some(admission) = &ctx.admission {
            admission.write_headers(response)?;
        }
        if session.req_header().version == http::Version::HTTP_10 {
            // HTTP/1.0 has no chunked encoding: a body of unknown length
            // ends with the connection.
            if response
                .remove_header(&http::header::TRANSFER_ENCODING)
                .is_some()
            {
                session.set_keepalive(None);
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let streamed = upstream_response
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_none();
        if let Some(attempt) = &mut ctx.attempt {
            attempt.on_header(streamed);
        }
        let upgrade = upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS;
        let asked = session
            .req_header()
            .headers
            .contains_key(http::header::UPGRADE);
        if upgrade && !asked {
            // Never a raw tunnel the client did not ask for.
            ctx.fail_attempt(Reason::BadResponse);
            return Err(Refusal::BackendError {
                pool: ctx.pool_name().to_string(),
                what: "it switched protocols on a request that did not ask to".into(),
            }
            .into_error());
        }
        if policy::header_size(&upstream_response.headers) > policy::MAX_UPSTREAM_HEADER {
            ctx.fail_attempt(Reason::BadResponse);
            return Err(Refusal::BackendError {
                pool: ctx.pool_name().to_string(),
                what: format!(
                    "its response header is larger than {} bytes",
                    policy::MAX_UPSTREAM_HEADER
                ),
            }
            .into_error());
        }
        strip_hop_by_hop(upstream_response, upgrade);
        if let Some(model) = &ctx.served_model {
            upstream_response.insert_header(MODEL_HEADER, model.as_str())?;
        }
        let status = upstream_response.status.as_u16();
        if let Some(secs) = retry_after(upstream_response).filter(|_| matches!(status, 429 | 503)) {
            if let Some(attempt) = &ctx.attempt {
                attempt.upstream.circuit.open_for(Duration::from_secs(secs));
            }
        }
        if status >= 500 || status == 429 {
            ctx.fail_attempt(Reason::Status(status));
            if retry::is_retryable_status(status) && retry::may_retry(ctx) {
                // Nothing has reached the client yet: try another backend.
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(status),
                    format!("backend answered {status}, trying another"),
                );
                e.set_retry(true);
                self.metrics.retried(ctx.pool_name(), RetryReason::Status);
                return Err(e.into_up());
            }
        }
        let content_type = upstream_response
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        ctx.stream = StreamFormat::of(content_type);
        ctx.timing.header = Some(Instant::now());
        // Token counts come with successful answers only.
        ctx.usage = usage_kind(status, ctx.stream, content_type).map(UsageReader::new);
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(attempt) = &mut ctx.attempt {
            attempt.on_chunk(end_of_stream);
        }
        if let Some(chunk) = body.as_ref().filter(|b| !b.is_empty()) {
            if ctx.timing.first_byte.is_none() {
                ctx.timing.first_byte = Some(Instant::now());
            }
            if let Some(usage) = &mut ctx.usage {
                usage.feed(chunk, end_of_stream);
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
        ctx.fail_attempt(attempt::connect_failure(&e));
        let retry = retry::may_retry(ctx);
        let Some(pool) = ctx.pool() else { return e };
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
        if retry {
            self.metrics.retried(&pool.spec.name, RetryReason::Connect);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if *e.esource() == ErrorSource::Upstream {
            // A dropped connection, a timeout, or a status retried below:
            // the backend's failure. A client that left is not.
            let header = ctx.timing.header.is_some();
            ctx.fail_attempt(attempt::proxy_failure(&e, ctx.timed_out(), header));
        }
        if let Some(reason) = retry::decide(&mut e, session, ctx, client_reused) {
            self.metrics.retried(ctx.pool_name(), reason);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let timed_out = ctx.timed_out();
        if let Some(attempt) = &mut ctx.attempt {
            attempt.stop_watching();
        }
        let refusal = refusal_for(e, timed_out, ctx.pool_name(), ctx.expose_backend());
        ctx.observed.answered(refusal.as_ref());
        let code = match refusal {
            Some(refusal) if session.response_written().is_none() => {
                if let Err(write) = refusal.send(session, ctx.request_id()).await {
                    debug!("could not send error response: {write}");
                }
                refusal.status()
            }
            Some(refusal) => {
                // The response has begun: end it with an error the client's
                // parser sees, in the stream's own format, rather than a
                // truncation that could pass for a finished answer.
                if let Some(format) = ctx.stream {
                    self.metrics.stream_error(ctx.pool_name(), refusal.code());
                    let shape = Shape::for_path(session.req_header().uri.path());
                    let event = failure::terminal_event(format, shape, &refusal, ctx.request_id());
                    if let Err(write) = session.write_response_body(Some(event), true).await {
                        debug!("could not end the stream with an error: {write}");
                    }
                }
                refusal.status()
            }
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        // Pingora logs every request that ends in an error at ERROR. ERROR
        // is for what an operator must act on: a client that hung up or
        // stopped reading, or a request Switchyard refused as the client's
        // own mistake (an unknown model, a body too large), is not; it is
        // logged at debug by `logging`.
        *e.esource() == ErrorSource::Downstream || Refusal::of(e).is_some_and(|r| r.status() < 500)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(attempt) = &mut ctx.attempt {
            attempt.stop_watching();
        }
        let usage = ctx.usage.take().map(UsageReader::finish);
        if let Some(usage) = &usage {
            ctx.observed.set_usage(usage);
        }
        match e {
            // Complete, including responses without a body to end.
            None => ctx.finish_attempt(Verdict::Served),
            Some(e) => {
                if *e.esource() == ErrorSource::Downstream && *e.etype() == ErrorType::WriteTimedout
                {
                    self.metrics.client_send_timeouts.inc();
                }
                let status = session.response_written().map_or(0, |r| r.status.as_u16());
                debug!("{} -> {status}: {e}", self.request_summary(session, ctx));
            }
        }
        if let Some(admission) = ctx.admission.take() {
            let tokens = usage
                .as_ref()
                .map(|u| u.prompt.unwrap_or(0) + u.completion.unwrap_or(0));
            self.limiter.finish(*admission, tokens);
        }
        if let Some(key) = &ctx.key {
            let status = session.response_written().map_or(0, |r| r.status.as_u16());
            self.metrics.key_request(&key.name, status);
        }
        access::log(&self.access_log, session, ctx, usage.as_ref());
        observe::record(&self.metrics, session, e, ctx);
    }
}

/// How to read the token counts of a response, if it has any: a
/// successful stream, or a successful JSON body.
fn usage_kind(
    status: u16,
    stream: Option<StreamFormat>,
    content_type: Option<&str>,
) -> Option<usage::BodyKind> {
    if !(200..300).contains(&status) {
        return None;
    }
    match stream {
        Some(StreamFormat::Sse) => Some(usage::BodyKind::Sse),
        Some(StreamFormat::Ndjson) => Some(usage::BodyKind::Ndjson),
        None => framing::essence(content_type)?
            .eq_ignore_ascii_case("application/json")
            .then_some(usage::BodyKind::Json),
    }
}

/// Sends a refusal, noted for the metrics and the access log. After a
/// 413, what the client is still sending is read (and dropped) for a
/// while, so it gets to read the answer instead of a broken pipe, as
/// nginx's lingering close does.
async fn refuse(session: &mut Session, ctx: &mut RequestCtx, refusal: &Refusal) -> Result<()> {
    ctx.observed.answered(Some(refusal));
    refusal.send(session, ctx.request_id()).await?;
    if refusal.status() == 413 {
        let _ = tokio::time::timeout(LINGER, session.drain_request_body()).await;
    }
    Ok(())
}

/// `Retry-After` in seconds (the HTTP-date form is not used by inference
/// servers and is ignored).
fn retry_after(resp: &ResponseHeader) -> Option<u64> {
    resp.headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
