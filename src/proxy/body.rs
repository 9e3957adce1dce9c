//! Reading a request body whole before a backend is chosen, within
//! `server.max_request_body`, so its `model` can pick the backend.

use super::replay::ReplaySession;
use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;

/// The most reserved for a body before its bytes arrive: a typical chat
/// request fits, and a larger one grows its buffer as it is read.
const INITIAL_CAPACITY: usize = 64 << 10;

/// Why the body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the limit (declared or actual).
    TooLarge,
    /// The client failed or went away while sending it.
    Client(Box<pingora_error::Error>),
}

/// Reads the whole body, at most `max` bytes. Pingora's proxy loop forwards
/// a body read this early only from its 64 KiB retry buffer; when the body
/// was larger, the session is wrapped so the whole body is forwarded.
pub async fn read_all(session: &mut Session, max: usize) -> Result<Bytes, BodyError> {
    // The declared length was checked against `max` with the request.
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // The client waits for a go-ahead before sending the body that
        // Switchyard needs to route it.
        session.write_continue_response().await.map_err(|mut e| {
            e.as_down();
            BodyError::Client(e)
        })?;
    }
    session.enable_retry_buffering();
    // Grown as bytes arrive: a client that declares 32 MiB and sends
    // nothing must not get 32 MiB reserved for it.
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(INITIAL_CAPACITY));
    while let Some(chunk) = session.read_request_body().await.map_err(|mut e| {
        e.as_down();
        BodyError::Client(e)
    })? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    if session.as_ref().retry_buffer_truncated() {
        ReplaySession::install(&mut session.downstream_session, body.clone());
    }
    Ok(body)
}
