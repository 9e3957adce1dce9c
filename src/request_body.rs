//! Reading a request body whole before a backend is chosen, within
//! `server.max_request_body`, so its `model` can pick the backend.

use crate::replay::ReplaySession;
use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;

/// Paths whose POST body names a model, which Switchyard reads to route.
/// Other requests stream through unread.
const MODEL_PATHS: [&str; 9] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
];

/// Whether this request must name a model in its body.
pub fn names_a_model(method: &http::Method, path: &str) -> bool {
    method == http::Method::POST && MODEL_PATHS.contains(&path.trim_end_matches('/'))
}

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
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge);
    }
    session.enable_retry_buffering();
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(BodyError::Client)?
    {
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
