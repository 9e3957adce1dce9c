//! Forwarding a request body that Switchyard had to read in full first.
//!
//! Routing on `model` means reading the body before a backend is chosen.
//! Pingora 0.9 forwards a body consumed that early only from its retry
//! buffer, which holds 64 KiB: anything larger reaches the backend empty.
//! [`ReplaySession`] wraps the client's session and presents the body read
//! so far as a complete retry buffer, so Pingora's own proxy loop sends it,
//! and sends it again on a retry. Everything else is passed to the wrapped
//! session, so the response still streams to the client as usual.
//!
//! The cost: Pingora only keeps a plain HTTP/1 session alive after a
//! request, so the client connection of such a (large) request is closed
//! once its response is complete.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use http::HeaderMap;
use pingora_core::protocols::http::custom::server::Session as CustomSession;
use pingora_core::protocols::http::custom::CustomMessageWrite;
use pingora_core::protocols::http::{HttpTask, ServerSession};
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::Digest;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::Duration;

/// The client's session, with its body already read.
pub struct ReplaySession {
    inner: Box<ServerSession>,
    body: Bytes,
}

impl ReplaySession {
    /// Replaces the session in `slot` with one that replays `body`.
    pub fn install(slot: &mut Box<ServerSession>, body: Bytes) {
        // The connection cannot go back to Pingora's keep-alive handling
        // once wrapped, so the response says `Connection: close`.
        slot.set_keepalive(None);
        // Moving the session out of the slot needs something to leave behind
        // for that instant.
        let header = slot.req_header().clone();
        let placeholder = Box::new(ServerSession::new_custom(Box::new(Empty(header))));
        let inner = std::mem::replace(slot, placeholder);
        **slot = ServerSession::new_custom(Box::new(ReplaySession { inner, body }));
    }
}

type MessageReader = Box<dyn Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>;

#[async_trait]
impl CustomSession for ReplaySession {
    fn req_header(&self) -> &RequestHeader {
        self.inner.req_header()
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        self.inner.req_header_mut()
    }

    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        // The body has been read whole; only the replay buffer remains.
        Ok(None)
    }

    async fn drain_request_body(&mut self) -> Result<()> {
        Ok(())
    }

    async fn write_response_header(&mut self, resp: Box<ResponseHeader>, _end: bool) -> Result<()> {
        self.inner.write_response_header(resp).await
    }

    async fn write_response_header_ref(&mut self, resp: &ResponseHeader, _end: bool) -> Result<()> {
        self.inner.write_response_header_ref(resp).await
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        self.inner.write_response_body(data, end).await
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        self.inner.write_response_trailers(trailers).await
    }

    async fn response_duplex_vec(&mut self, tasks: Vec<HttpTask>) -> Result<bool> {
        self.inner.response_duplex_vec(tasks).await
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.inner.set_read_timeout(timeout)
    }

    fn get_read_timeout(&self) -> Option<Duration> {
        self.inner.get_read_timeout()
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.inner.set_write_timeout(timeout)
    }

    fn get_write_timeout(&self) -> Option<Duration> {
        self.inner.get_write_timeout()
    }

    fn set_total_drain_timeout(&mut self, timeout: Option<Duration>) {
        self.inner.set_total_drain_timeout(timeout)
    }

    fn get_total_drain_timeout(&self) -> Option<Duration> {
        self.inner.get_total_drain_timeout()
    }

    fn request_summary(&self) -> String {
        self.inner.request_summary()
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.inner.response_written()
    }

    async fn shutdown(&mut self, _code: u32, _ctx: &str) {
        self.inner.shutdown().await
    }

    fn is_body_done(&mut self) -> bool {
        true
    }

    async fn finish(&mut self) -> Result<()> {
        self.inner.finish_body().await
    }

    fn is_body_empty(&mut self) -> bool {
        self.body.is_empty()
    }

    async fn read_body_or_idle(&mut self, no_body_expected: bool) -> Result<Option<Bytes>> {
        // Watches the client connection while the response streams, which is
        // how a client that hangs up is noticed.
        self.inner.read_body_or_idle(no_body_expected).await
    }

    fn body_bytes_sent(&self) -> usize {
        self.inner.body_bytes_sent()
    }

    fn body_bytes_read(&self) -> usize {
        self.body.len()
    }

    fn digest(&self) -> Option<&Digest> {
        self.inner.digest()
    }

    fn digest_mut(&mut self) -> Option<&mut Digest> {
        self.inner.digest_mut()
    }

    fn client_addr(&self) -> Option<&SocketAddr> {
        self.inner.client_addr()
    }

    fn server_addr(&self) -> Option<&SocketAddr> {
        self.inner.server_addr()
    }

    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        self.inner.to_h1_raw()
    }

    fn enable_retry_buffering(&mut self) {}

    fn retry_buffer_truncated(&self) -> bool {
        false
    }

    fn get_retry_buffer(&self) -> Option<Bytes> {
        Some(self.body.clone())
    }

    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_reader(&mut self) -> Option<MessageReader> {
        None
    }

    fn restore_custom_message_reader(&mut self, _reader: MessageReader) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }

    fn restore_custom_message_writer(
        &mut self,
        _writer: Box<dyn CustomMessageWrite>,
    ) -> Result<()> {
        Ok(())
    }

    fn is_upgrade_req(&self) -> bool {
        self.inner.is_upgrade_req()
    }

    fn was_upgraded(&self) -> bool {
        self.inner.was_upgraded()
    }
}

/// Holds the slot for the instant the real session is moved into its wrapper.
struct Empty(RequestHeader);

#[async_trait]
impl CustomSession for Empty {
    fn req_header(&self) -> &RequestHeader {
        &self.0
    }
    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.0
    }
    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        Ok(None)
    }
    async fn drain_request_body(&mut self) -> Result<()> {
        Ok(())
    }
    async fn write_response_header(&mut self, _: Box<ResponseHeader>, _: bool) -> Result<()> {
        Ok(())
    }
    async fn write_response_header_ref(&mut self, _: &ResponseHeader, _: bool) -> Result<()> {
        Ok(())
    }
    async fn write_body(&mut self, _: Bytes, _: bool) -> Result<()> {
        Ok(())
    }
    async fn write_trailers(&mut self, _: HeaderMap) -> Result<()> {
        Ok(())
    }
    async fn response_duplex_vec(&mut self, _: Vec<HttpTask>) -> Result<bool> {
        Ok(true)
    }
    fn set_read_timeout(&mut self, _: Option<Duration>) {}
    fn get_read_timeout(&self) -> Option<Duration> {
        None
    }
    fn set_write_timeout(&mut self, _: Option<Duration>) {}
    fn get_write_timeout(&self) -> Option<Duration> {
        None
    }
    fn set_total_drain_timeout(&mut self, _: Option<Duration>) {}
    fn get_total_drain_timeout(&self) -> Option<Duration> {
        None
    }
    fn request_summary(&self) -> String {
        String::new()
    }
    fn response_written(&self) -> Option<&ResponseHeader> {
        None
    }
    async fn shutdown(&mut self, _: u32, _: &str) {}
    fn is_body_done(&mut self) -> bool {
        true
    }
    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
    fn is_body_empty(&mut self) -> bool {
        true
    }
    async fn read_body_or_idle(&mut self, _: bool) -> Result<Option<Bytes>> {
        Ok(None)
    }
    fn body_bytes_sent(&self) -> usize {
        0
    }
    fn body_bytes_read(&self) -> usize {
        0
    }
    fn digest(&self) -> Option<&Digest> {
        None
    }
    fn digest_mut(&mut self) -> Option<&mut Digest> {
        None
    }
    fn client_addr(&self) -> Option<&SocketAddr> {
        None
    }
    fn server_addr(&self) -> Option<&SocketAddr> {
        None
    }
    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        Bytes::new()
    }
    fn enable_retry_buffering(&mut self) {}
    fn retry_buffer_truncated(&self) -> bool {
        false
    }
    fn get_retry_buffer(&self) -> Option<Bytes> {
        None
    }
    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }
    fn take_custom_message_reader(&mut self) -> Option<MessageReader> {
        None
    }
    fn restore_custom_message_reader(&mut self, _: MessageReader) -> Result<()> {
        Ok(())
    }
    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }
    fn restore_custom_message_writer(&mut self, _: Box<dyn CustomMessageWrite>) -> Result<()> {
        Ok(())
    }
}
