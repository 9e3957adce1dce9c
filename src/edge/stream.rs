//! A client connection as the proxy reads it, with the limits that apply
//! before a request exists.
//!
//! Pingora reads a request header with a per-read timeout only, waits for a
//! kept-alive connection's next request as long as the client likes, and
//! takes headers up to 1 MiB. A client that trickles its header a byte at a
//! time, or opens connections and sends nothing, holds a connection (and up
//! to 1 MiB of buffer) for ever. [`EdgeStream`] wraps each accepted
//! connection and enforces, underneath Pingora's HTTP code:
//! - the whole header within `client_header`, counted from accept or from
//!   the first byte of a kept-alive connection's next request (408);
//! - a kept-alive connection's silence between requests within `keepalive`
//!   (closed quietly, as every server closes idle connections);
//! - the header's size within `max_header_size` (431).
//!
//! It also answers in Switchyard's JSON the errors that Pingora writes
//! itself before any hook has run (a malformed header's 400, `CONNECT`'s
//! 405), which would otherwise go out with an empty body and
//! `Server: Pingora`.
//!
//! The stream does not parse HTTP: it finds where a header ends (its first
//! empty line), and learns from the proxy's first hook ([`Conn::request_started`])
//! and from the connection loop ([`Conn::idle`]) when a request has begun
//! and ended. Once a request has begun, reads and writes pass straight
//! through: the body and response timeouts are Pingora's own, set per
//! request by the proxy.

use crate::errors::Refusal;
use crate::metrics::Metrics;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long an answer written by the stream itself (408, 431, a rewritten
/// Pingora error) may take to leave: a few hundred bytes that always fit a
/// fresh socket's buffer, unless the client has stopped reading entirely.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Between two requests of a kept-alive connection.
const IDLE: u8 = 0;
/// Receiving a request header.
const HEADER: u8 = 1;
/// The header's end has been seen; the proxy has not started on it yet.
const PARSED: u8 = 2;
/// The proxy is serving a request.
const REQUEST: u8 = 3;

/// The limits one connection is held to, taken from the configuration when
/// it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    pub header_timeout: Duration,
    pub keepalive: Duration,
    pub max_header_size: usize,
}

/// What the proxy and the connection loop tell the stream about the
/// request on it.
#[derive(Debug)]
pub struct Conn {
    phase: AtomicU8,
}

impl Conn {
    /// The proxy has read a request's header and runs its hooks: from now
    /// on, reads are its body and writes its response.
    pub fn request_started(&self) {
        self.phase.store(REQUEST, Ordering::Release);
    }

    /// A request has ended and the connection waits for the next one.
    pub(super) fn idle(&self) {
        self.phase.store(IDLE, Ordering::Release);
    }

    fn get(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }
}

/// Where a header's end is: the first empty line after a non-empty one.
/// Bare `\n` line ends count too, as the HTTP parser accepts them.
#[derive(Debug, Default)]
struct HeaderEnd {
    /// Bytes of the current header seen so far.
    len: usize,
    /// The line being read has had something besides `\r`.
    line_has_content: bool,
    /// Some line before this one had content (leading empty lines, which
    /// HTTP allows, do not end a header).
    any_content: bool,
    /// The request line holds a control character, which Pingora would
    /// pass on percent-encoded: the backend would see another target than
    /// the client sent.
    bad_request_line: bool,
}

impl HeaderEnd {
    /// Consumes `bytes`; returns the offset just past the header's end if
    /// it is among them.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut start = 0;
        if !self.any_content {
            let line = memchr::memchr(b'\n', bytes).unwrap_or(bytes.len());
            self.bad_request_line |= bytes[..line]
                .iter()
                .any(|&b| (b < b' ' && b != b'\r' && b != b'\t') || b == 0x7f);
        }
        for nl in memchr::memchr_iter(b'\n', bytes) {
            let content = self.line_has_content || bytes[start..nl].iter().any(|&b| b != b'\r');
            if !content && self.any_content {
                self.len += nl + 1;
                return Some(nl + 1);
            }
            self.any_content |= content;
            self.line_has_content = false;
            start = nl + 1;
        }
        self.line_has_content |= bytes[start..].iter().any(|&b| b != b'\r');
        self.len += bytes.len();
        None
    }

    fn reset(&mut self) {
        *self = HeaderEnd::default();
    }
}

/// A response the stream writes itself, after which the connection ends.
#[derive(Debug)]
struct Answer {
    bytes: Bytes,
    written: usize,
}

/// An accepted client connection with the edge's limits applied.
pub struct EdgeStream {
    inner: Stream,
    conn: Conn,
    limits: EdgeLimits,
    metrics: Arc<Metrics>,
    /// The phase the stream last acted on.
    seen: u8,
    /// When the current phase's allowance runs out.
    deadline: Option<Instant>,
    /// Wakes a pending read at `deadline`; made on first use.
    timer: Option<Pin<Box<Sleep>>>,
    header: HeaderEnd,
    /// A response being written in place of the connection's own.
    answer: Option<Answer>,
    /// The connection has been answered (or given up): reads see its end,
    /// writes are dropped.
    done: bool,
}

impl std::fmt::Debug for EdgeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStream")
            .field("inner", &self.inner)
            .field("phase", &self.seen)
            .finish()
    }
}

impl EdgeStream {
    /// Wraps a connection accepted just now: its first header is due within
    /// `limits.header_timeout`.
    pub fn new(inner: Stream, limits: EdgeLimits, metrics: Arc<Metrics>) -> Self {
        EdgeStream {
            inner,
            conn: Conn {
                phase: AtomicU8::new(HEADER),
            },
            limits,
            metrics,
            seen: HEADER,
            deadline: Some(Instant::now() + limits.header_timeout),
            timer: None,
            header: HeaderEnd::default(),
            answer: None,
            done: false,
        }
    }

    /// What the proxy tells the stream.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Acts on a phase the proxy or the connection loop set.
    fn follow(&mut self) {
        let phase = self.conn.get();
        if phase == self.seen {
            return;
        }
        self.seen = phase;
        self.header.reset();
        self.deadline = match phase {
            IDLE => Some(Instant::now() + self.limits.keepalive),
            _ => None,
        };
    }

    /// The first bytes of a kept-alive connection's next request.
    fn begin_header(&mut self) {
        self.seen = HEADER;
        self.conn.phase.store(HEADER, Ordering::Release);
        self.deadline = Some(Instant::now() + self.limits.header_timeout);
    }

    /// Whether `deadline` has passed; if not, the task is woken when it does.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// Starts writing `refusal` in place of whatever the connection would have
    /// carried; the connection ends after it.
    fn answer(&mut self, refusal: &Refusal) {
        self.answer = Some(Answer {
            bytes: super::raw_answer(refusal),
            written: 0,
        });
        self.deadline = Some(Instant::now() + ANSWER_TIMEOUT);
    }

    /// Drives the answer out; ready once it is written, failed or timed out.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Some(answer) = &mut self.answer {
            if answer.written == answer.bytes.len() {
                match Pin::new(&mut self.inner).poll_flush(cx) {
                    Poll::Pending if !self.expired(cx) => return Poll::Pending,
                    _ => break,
                }
            }
            match Pin::new(&mut self.inner).poll_write(cx, &answer.bytes[answer.written..]) {
                Poll::Ready(Ok(n)) if n > 0 => answer.written += n,
                Poll::Pending if !self.expired(cx) => return Poll::Pending,
                _ => break,
            }
        }
        self.answer = None;
        self.done = true;
        self.deadline = None;
        Poll::Ready(())
    }

    /// The current phase's allowance ran out while waiting for the client.
    fn on_timeout(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.seen == IDLE {
            self.metrics.keepalive_timeouts.inc();
            self.done = true;
            return Poll::Ready(Ok(()));
        }
        self.metrics.client_header_timeouts.inc();
        if self.header.len == 0 {
            // Nothing sent at all: close as quietly as an idle connection.
            self.done = true;
            return Poll::Ready(Ok(()));
        }
        self.answer(&Refusal::HeaderTimeout(self.limits.header_timeout));
        self.poll_answer(cx).map(Ok)
    }

    /// Reads while a header is expected: counts it, finds its end, holds
    /// it to its size and time.
    fn poll_read_header(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() == before {
                    return Poll::Ready(Ok(()));
                }
                if self.seen == IDLE {
                    self.begin_header();
                }
                let end = self.header.scan(&buf.filled()[before..]);
                if self.header.bad_request_line {
                    buf.set_filled(before);
                    self.answer(&Refusal::InvalidRequestLine);
                    return self.poll_answer(cx).map(Ok);
                }
                if self.header.len > self.limits.max_header_size {
                    // Not one byte of it goes to the HTTP parser.
                    buf.set_filled(before);
                    self.metrics.client_headers_too_large.inc();
                    self.answer(&Refusal::HeaderTooLarge {
                        limit: self.limits.max_header_size,
                    });
                    return self.poll_answer(cx).map(Ok);
                }
                if end.is_some() {
                    self.seen = PARSED;
                    self.conn.phase.store(PARSED, Ordering::Release);
                    self.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => self.on_timeout(cx),
            other => other,
        }
    }
}

/// Switchyard's answer for an error response Pingora was about to write
/// itself (its status line is at the start of `bytes`): before any hook,
/// Pingora answers only a malformed header (400) and `CONNECT` (405).
fn rewrite(bytes: &[u8]) -> Refusal {
    match bytes.get(9..12) {
        Some(b"405") => Refusal::MethodNotAllowed("CONNECT".into()),
        _ => Refusal::BadRequest,
    }
}

impl AsyncRead for EdgeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.answer.is_some() {
            return this.poll_answer(cx).map(Ok);
        }
        if this.done {
            return Poll::Ready(Ok(()));
        }
        this.follow();
        match this.seen {
            IDLE | HEADER => this.poll_read_header(cx, buf),
            _ => Pin::new(&mut this.inner).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.answer.is_none() && !this.done {
            if this.conn.get() == REQUEST {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
            // No hook has run for this request, so this is an error
            // response of Pingora's own.
            this.answer(&rewrite(buf));
        }
        // Whatever Pingora writes in place of our answer, or after it, is
        // dropped: the connection ends with the answer.
        this.poll_answer(cx).map(|()| Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.answer.is_none() && !this.done && this.conn.get() == REQUEST {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        Pin::new(this).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.answer.is_some() || this.done {
            return this.poll_answer(cx).map(Ok);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for EdgeStream {
    async fn shutdown(&mut self) {
        if self.answer.is_some() {
            std::future::poll_fn(|cx| self.poll_answer(cx)).await;
        }
        self.inner.shutdown().await
    }
}

impl UniqueID for EdgeStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for EdgeStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for EdgeStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for EdgeStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for EdgeStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for EdgeStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The peer address, for the refusal log line.
pub(super) fn peer(stream: &Stream) -> Option<SocketAddr> {
    stream.get_socket_digest()?.peer_addr().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(chunks: &[&[u8]]) -> Option<usize> {
        let mut h = HeaderEnd::default();
        for c in chunks {
            if h.scan(c).is_some() {
                return Some(h.len);
            }
        }
        None
    }

    #[test]
    fn finds_the_end_of_a_header() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        assert_eq!(end_of(&[req]), Some(req.len() - 4));
        assert_eq!(end_of(&[b"GET / HTTP/1.1\nHost: a\n\nX"]), Some(24));
    }

    #[test]
    fn finds_an_end_split_across_reads() {
        let parts: [&[u8]; 4] = [b"GET / HTTP/1.1\r", b"\nHost: a\r\n", b"\r", b"\nBODY"];
        assert_eq!(end_of(&parts), Some(27));
        let bytes: Vec<[u8; 1]> = b"GET / HTTP/1.1\r\nA: b\r\n\r\n".map(|b| [b]).to_vec();
        let chunks: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        assert_eq!(end_of(&chunks), Some(24));
    }

    #[test]
    fn leading_empty_lines_do_not_end_a_header() {
        assert_eq!(end_of(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]), Some(22));
        assert_eq!(end_of(&[b"\r\n", b"\r\n"]), None);
    }

    #[test]
    fn control_characters_in_the_request_line_are_found() {
        let mut h = HeaderEnd::default();
        h.scan(b"GET /a\x01b HTTP/1.1\r\n");
        assert!(h.bad_request_line);
        let mut h = HeaderEnd::default();
        h.scan(b"\r\nGET /a");
        h.scan(b"b HTTP/1.1\r\nX-Tab: a\x01b\r\n\r\n");
        assert!(!h.bad_request_line, "only the request line is held to it");
    }

    #[test]
    fn an_unfinished_header_has_no_end() {
        assert_eq!(end_of(&[b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b"]), None);
    }

    #[test]
    fn pingora_errors_become_json() {
        let r = rewrite(b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\n\r\n");
        assert_eq!((r.status(), r.code()), (400, "bad_request"));
        let r = rewrite(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
        assert_eq!((r.status(), r.code()), (405, "method_not_allowed"));
    }
}
