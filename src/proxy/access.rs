//! A request's access log line, read from its context as it ends.
//!
//! Kept apart from the hooks so that the `logging` hook makes one call,
//! and from [`crate::access_log`], which knows nothing of requests.

use super::ctx::RequestCtx;
use super::usage::{Source, Usage};
use crate::access_log::{AccessLog, Entry};
use pingora_proxy::Session;
use std::time::SystemTime;

/// Adds the line of the request in `session` and `ctx`, which has ended,
/// with its token `usage` if its response had any. Nothing is built when
/// the access log is off.
pub(super) fn log(log: &AccessLog, session: &Session, ctx: &RequestCtx, usage: Option<&Usage>) {
    if !log.is_on() {
        return;
    }
    let duration = ctx.timing.start.elapsed();
    let now = SystemTime::now();
    let header = session.req_header();
    log.record(&Entry {
        time: now.checked_sub(duration).unwrap_or(now),
        request_id: ctx.request_id(),
        client: ctx.client_ip(),
        key: ctx.key.as_ref().map(|k| k.name.as_str()),
        method: header.method.as_str(),
        path: header.uri.path(),
        status: session.response_written().map_or(0, |r| r.status.as_u16()),
        pool: ctx.pool().map(|p| p.spec.name.as_str()),
        backend: ctx.attempt.as_ref().map(|a| a.upstream.spec.name.as_str()),
        model: ctx.model.as_deref(),
        served_model: ctx.served_model.as_deref(),
        attempts: ctx.tried.len(),
        failures: &ctx.failures,
        queue: ctx.queue_wait,
        ttft: ctx.timing.ttft(),
        duration,
        // Pingora's counts of what crossed the client connection: a body
        // read to find its model counts, and so does an answer Switchyard
        // wrote itself, or the part of a stream a client got before it
        // hung up.
        bytes_in: session.body_bytes_read() as u64,
        bytes_out: session.body_bytes_sent() as u64,
        prompt_tokens: usage.and_then(|u| u.prompt),
        completion_tokens: usage.and_then(|u| u.completion),
        tokens_estimated: usage
            .is_some_and(|u| u.completion.is_some() && u.source == Source::Estimated),
        error: ctx.observed.error_code(),
    });
}
