//! The client side of the edge: what a connection may cost before, between
//! and around its requests.
//!
//! An edge proxy is judged by what a few hostile or careless clients can do
//! to it. Pingora, left to its defaults, lets a connection idle between
//! requests for ever, reads a header for as long as it keeps trickling in,
//! and accepts connections without bound. [`EdgeApp`] stands between
//! Pingora's listener and its HTTP proxy: it refuses connections beyond
//! `server.max_connections` with a 503, wraps every other one in an
//! [`EdgeStream`] that holds the header to its size and time and the idle
//! connection to its keep-alive, and runs the connection's requests one
//! after another, telling the stream when one ends.
//!
//! A connection whose TLS handshake agreed on HTTP/2 (ALPN `h2`) is handed
//! to Pingora's own HTTP/2 loop instead, which runs each stream as a
//! request of its own: header size, idle time and concurrent streams are
//! HTTP/2 settings there (`crate::server` sets them from the same
//! configuration), and the stream's HTTP/1.1 header scanning does not
//! apply to binary frames. Such a connection still counts against
//! `max_connections`; one beyond it is closed without an answer, since an
//! HTTP/1.1 503 means nothing to an HTTP/2 client.
//!
//! # Layout
//! - [`stream`]: the wrapped connection, its phases and limits.
//! - [`addresses`]: `server.allow` and `server.deny`, at accept.

mod addresses;
mod stream;

pub use addresses::{AddressFilter, AddressRules};
pub use stream::{Conn, EdgeLimits, EdgeStream};

use crate::config::ServerSettings;
use crate::errors::{Refusal, Shape};
use crate::forwarding::request_id;
use crate::metrics::Metrics;
use crate::state::SharedState;
use async_trait::async_trait;
use bytes::Bytes;
use log::warn;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::Session;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a refused connection is given to read its 503 (and how long
/// what it sent is read and dropped, so that closing does not reset the
/// connection before the answer is read).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The connection layer in front of the proxy, an HTTP application such
/// as Pingora's `HttpProxy`.
pub struct EdgeApp<A> {
    proxy: Arc<A>,
    state: Arc<SharedState>,
    metrics: Arc<Metrics>,
    /// When the last refusal was logged, as seconds since the Unix epoch: a
    /// flood of refusals logs one line a second, not one per connection.
    last_refusal_log: AtomicU64,
}

impl<A> EdgeApp<A> {
    pub fn new(proxy: A, state: Arc<SharedState>, metrics: Arc<Metrics>) -> Self {
        EdgeApp {
            proxy: Arc::new(proxy),
            state,
            metrics,
            last_refusal_log: AtomicU64::new(0),
        }
    }

    /// Answers a connection beyond `max_connections` and closes it.
    async fn refuse(&self, mut stream: Stream, max: usize) {
        self.metrics.connections_refused.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_refusal_log.swap(now, Ordering::Relaxed) != now {
            warn!(
                "refusing connections: {max} are open (server.max_connections); \
                 refused so far: {}, latest from {:?}",
                self.metrics.connections_refused.get(),
                stream::peer(&stream)
            );
        }
        let answer = raw_answer(&Refusal::TooManyConnections);
        let answer = async {
            stream.write_all(&answer).await?;
            stream.flush().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
    }
}

/// An answer written on the connection itself, before any request exists:
/// in OpenAI's shape, since no path is known yet, and with a request id of
/// its own.
fn raw_answer(refusal: &Refusal) -> Bytes {
    let id = request_id::new_id();
    refusal.raw_response(Shape::OpenAi, id.to_str().unwrap_or_default())
}

/// The limits a new connection is held to.
fn limits(server: &ServerSettings) -> EdgeLimits {
    EdgeLimits {
        header_timeout: server.timeouts.client_header,
        keepalive: server.timeouts.keepalive,
        max_header_size: server.max_header_size,
    }
}

/// Pingora's keep-alive setting for a configured idle time: whole seconds,
/// `None` to close after each response. (Pingora reads `Some(0)` as "for
/// ever"; the stream enforces the exact time.)
fn keepalive_secs(keepalive: Duration) -> Option<u64> {
    (!keepalive.is_zero()).then(|| keepalive.as_secs_f64().ceil() as u64)
}

/// Counts an open connection for as long as it lives.
struct OpenGuard<'a>(&'a Metrics);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

#[async_trait]
impl<A> ServerApp for EdgeApp<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // What this connection is held to, read without copying the
        // settings: this runs for every connection accepted.
        let (max, limits, keepalive) = {
            let snapshot = self.state.load();
            let server = &snapshot.config.server;
            (
                server.max_connections,
                limits(server),
                keepalive_secs(server.timeouts.keepalive),
            )
        };
        self.metrics.connections_open.inc();
        let _open = OpenGuard(&self.metrics);
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        if self.metrics.connections_open.get() > i64::try_from(max).unwrap_or(i64::MAX) {
            if !h2 {
                self.refuse(stream, max).await;
            }
            return None;
        }
        if h2 {
            // Pingora's HTTP/2 loop: a task per stream, all ended before
            // this returns, so the connection is counted while it lasts.
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let stream: Stream = Box::new(EdgeStream::new(stream, limits, self.metrics.clone()));
        // Pingora's own loop over a connection's requests (HTTP/1.1, over
        // TLS or not), with the stream told when a request has ended.
        let mut session = ServerSession::new_http1(stream);
        loop {
            if *shutdown.borrow() {
                session.set_keepalive(None);
            } else {
                session.set_keepalive(keepalive);
            }
            // Requests sent back to back without waiting (pipelining) are
            // answered in order rather than dropped.
            session.set_pipelining_enabled(true);
            let reused = self.proxy.process_new_http(session, shutdown).await?;
            let (stream, settings) = reused.consume();
            if let Some(edge) = (*stream).as_any().downcast_ref::<EdgeStream>() {
                edge.conn().idle();
            }
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
        }
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await
    }
}

/// The connection state behind a proxied request's session, when the
/// request came through [`EdgeApp`].
pub fn conn_of(session: &Session) -> Option<&Conn> {
    let stream = session.downstream_session.stream()?;
    let edge = (**stream).as_any().downcast_ref::<EdgeStream>()?;
    Some(edge.conn())
}
