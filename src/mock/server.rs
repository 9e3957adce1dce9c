//! The running mock: accepting connections, serving them with hyper, and
//! stopping like a killed process.
//!
//! Each connection is a task in a `JoinSet` owned by the accept loop, so
//! stopping the loop can abort every open connection and wait until they are
//! gone, and dropping the [`MockServer`] tears the whole thing down.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::config::{Failure, MockConfig};
use super::routes::{self, Backend};
use super::stats::MockStats;

/// Pause after a failed `accept` (typically out of file descriptors), so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Listen backlog for [`MockServer::bind`]: benchmarks open many connections
/// at once, and a short queue would turn a burst into refused connections.
const BACKLOG: u32 = 1024;

/// A mock inference backend serving on a TCP listener. See the
/// [module docs](super) for what it answers.
///
/// Dropping it stops it like [`MockServer::shutdown`], without waiting.
#[derive(Debug)]
pub struct MockServer {
    /// Where it listens, resolved (a `:0` port is the real one).
    addr: SocketAddr,
    /// Configuration, statistics and the name, shared with the handlers.
    backend: Arc<Backend>,
    /// Whether it serves HTTPS, for [`MockServer::url`].
    tls: bool,
    /// Tells the accept loop to stop; `None` once used.
    stop: Option<oneshot::Sender<()>>,
    /// The accept loop, which owns the listener and all connections.
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Serves `listener` on the current tokio runtime (it must be called from
    /// within one). Keep-alive HTTP/1.1.
    pub fn start(listener: TcpListener, cfg: MockConfig) -> MockServer {
        Self::start_with(listener, cfg, None)
    }

    /// As [`MockServer::start`], serving HTTPS with `acceptor`'s
    /// certificate (see [`super::MockTls`]).
    pub fn start_tls(listener: TcpListener, cfg: MockConfig, acceptor: TlsAcceptor) -> MockServer {
        Self::start_with(listener, cfg, Some(acceptor))
    }

    fn start_with(listener: TcpListener, cfg: MockConfig, tls: Option<TlsAcceptor>) -> MockServer {
        // `local_addr` of a bound listener only fails if the socket is
        // already unusable; report the unspecified address then rather than
        // panic, and the first request will fail loudly enough.
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let backend = Arc::new(Backend::new(cfg));
        let (stop, stopped) = oneshot::channel();
        let https = tls.is_some();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&backend), tls, stopped));
        MockServer {
            addr,
            backend,
            tls: https,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Binds `addr` and [starts](MockServer::start) serving it. The socket
    /// has `SO_REUSEADDR`, so a test can stop a mock and start another on the
    /// same port while old connections linger in `TIME_WAIT`.
    pub fn bind(addr: SocketAddr, cfg: MockConfig) -> io::Result<MockServer> {
        Self::bind_with(addr, cfg, None)
    }

    /// [`MockServer::bind`], serving HTTPS when `tls` is given.
    pub fn bind_with(
        addr: SocketAddr,
        cfg: MockConfig,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<MockServer> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok(MockServer::start_with(socket.listen(BACKLOG)?, cfg, tls))
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>` (`https://` when it serves TLS), ready to put in a
    /// proxy configuration.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The backend's name, as in the `x-mock-backend` header.
    pub fn name(&self) -> &str {
        &self.backend.name
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> MockConfig {
        MockConfig::clone(&self.backend.config.load())
    }

    /// Changes the failure mode for requests that arrive from now on.
    pub fn set_failure(&self, failure: Failure) {
        self.update(|c| c.failure = failure);
    }

    /// Changes the served models for requests that arrive from now on.
    pub fn set_models(&self, models: Vec<String>) {
        self.update(|c| c.models = models.clone());
    }

    /// Changes the timing for requests that arrive from now on.
    pub fn set_timing(&self, ttft: Duration, token_gap: Duration, tokens: usize) {
        self.update(|c| {
            c.ttft = ttft;
            c.token_gap = token_gap;
            c.tokens = tokens;
        });
    }

    /// The counters, live: keep the `Arc` and read it later.
    pub fn stats(&self) -> Arc<MockStats> {
        Arc::clone(&self.backend.stats)
    }

    /// Stops accepting, aborts every open connection (in-flight requests and
    /// streams end abruptly, as if the process were killed), and returns
    /// once the listener is closed, so the port refuses connections.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // The loop only ends by being told to or aborted; either way the
            // listener and connections are gone once it has.
            let _ = task.await;
        }
    }

    /// Publishes a copy of the configuration with `change` applied; the
    /// name stays what it was at start, because handlers stamp it.
    fn update(&self, change: impl Fn(&mut MockConfig)) {
        self.backend.config.rcu(|current| {
            let mut next = MockConfig::clone(current);
            change(&mut next);
            next
        });
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // Dropping the loop's future drops the listener and the JoinSet,
            // which aborts every connection.
            task.abort();
        }
    }
}

/// Accepts until told to stop, then aborts all connections and waits for them.
async fn accept_loop(
    listener: TcpListener,
    backend: Arc<Backend>,
    tls: Option<TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // A dropped sender means the server is going away too.
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    backend.stats.connection();
                    conns.spawn(serve_tcp(stream, tls.clone(), Arc::clone(&backend)));
                }
                Err(e) => {
                    log::warn!("mock {}: accept failed: {e}", backend.name);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow forever.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

async fn serve_tcp(stream: TcpStream, tls: Option<TlsAcceptor>, backend: Arc<Backend>) {
    // Tokens are small writes that must leave at their time, not coalesce.
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve_connection(stream, backend).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => serve_connection(stream, backend).await,
            // A client that did not trust the certificate, or had none
            // to show: nothing to serve.
            Err(e) => log::debug!("mock {}: TLS handshake failed: {e}", backend.name),
        },
    }
}

async fn serve_connection<S>(stream: S, backend: Arc<Backend>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| routes::handle(Arc::clone(&backend), req));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        log::debug!("mock connection ended: {e}");
    }
}
