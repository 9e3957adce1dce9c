//! When a failed attempt is made again on another backend.
//!
//! Only before anything has reached the client, and only while the pool's
//! `retries` allow and a backend is left that this request has not tried:
//! - a connect that failed (refused, timed out);
//! - no response header within `first_byte`;
//! - a pooled connection the backend had closed while it sat idle (the
//!   request never reached it, so even a POST is safe to send again, as
//!   long as its body can be replayed whole), also when it is found out
//!   only while the body is written (`Broken pipe` on a backend killed
//!   an instant earlier): the backend did not get the whole request, so
//!   it cannot have acted on it;
//! - an answer of 502, 503 or 429, which Pingora would pass on: it is
//!   turned into a retryable error from the response-header hook, before
//!   anything is written to the client.
//!
//! Pingora's own retries follow connection errors only; these functions are
//! the one place Switchyard decides, and the hooks ask them.

use super::ctx::RequestCtx;
use crate::metrics::RetryReason;
use pingora_error::{Error, ErrorType};
use pingora_proxy::Session;

/// The statuses a backend answers when another backend may do better:
/// bad gateway (a proxy in front of it), unavailable, too many requests.
pub(super) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 502 | 503 | 429)
}

/// Whether another attempt is allowed: within `retries`, with a backend
/// left that was not tried.
pub(super) fn may_retry(ctx: &RequestCtx) -> bool {
    ctx.pool().is_some_and(|pool| {
        ctx.tried.len() <= pool.spec.retries
            && pool.has_untried(&ctx.tried, ctx.served_model.as_deref())
    })
}

/// Sets whether `e`, an error while proxying to a backend, is retried.
/// Returns why it is, if it is.
pub(super) fn decide(
    e: &mut Error,
    session: &Session,
    ctx: &RequestCtx,
    client_reused: bool,
) -> Option<RetryReason> {
    if session.as_ref().retry_buffer_truncated() || session.response_written().is_some() {
        // The body cannot be replayed whole, or the client has part of a
        // response: nothing is retried.
        e.set_retry(false);
        None
    } else if before_header_timeout(e, ctx) && may_retry(ctx) {
        e.set_retry(true);
        Some(RetryReason::FirstByteTimeout)
    } else if client_reused
        && *e.etype() == ErrorType::WriteError
        && e.esource() == &pingora_error::ErrorSource::Upstream
        && ctx.timing.header.is_none()
        && may_retry(ctx)
    {
        e.set_retry(true);
        Some(RetryReason::ConnectionClosed)
    } else {
        // A pooled connection closed under the request: Pingora's own rule.
        e.retry.decide_reuse(client_reused);
        e.retry().then_some(RetryReason::ConnectionClosed)
    }
}

/// Whether `e` is the first-byte timeout: Pingora's read timeout, or the
/// watchdog shutting the socket down before any response.
fn before_header_timeout(e: &Error, ctx: &RequestCtx) -> bool {
    *e.etype() == ErrorType::ReadTimedout || ctx.timed_out()
}
