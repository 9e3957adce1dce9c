//! The request's model, the backend for each attempt, and the model lists
//! Switchyard answers itself.

use super::body::{read_all, BodyError};
use super::ctx::RequestCtx;
use crate::balance::pool::{Pick, Pool, Upstream};
use crate::balance::queue::QueueError;
use crate::errors::{send_json, ApiError};
use crate::models::lists::{ListCache, ListKind};
use crate::models::scan;
use crate::routing;
use crate::state::Snapshot;
use log::debug;
use pingora_error::Result;
use pingora_proxy::Session;
use std::sync::Arc;

/// Names the model that served a response, which differs from the one asked
/// for when a fallback was used.
pub const MODEL_HEADER: &str = "x-switchyard-model";

/// Answers `/v1/models`, `/api/tags` or `/api/ps` for the whole fleet.
pub(super) async fn answer_list(
    session: &mut Session,
    snapshot: &Snapshot,
    lists: &ListCache,
    kind: ListKind,
) -> Result<()> {
    let body = match kind {
        ListKind::OpenAi => lists.openai(snapshot),
        ListKind::OllamaTags => lists.ollama_tags(snapshot),
        ListKind::OllamaPs => lists.ollama_ps(snapshot).await,
    };
    send_json(session, 200, body, None).await
}

/// Reads the body and finds its model (resolving an alias). `Ok(Err(..))`
/// is an answer for the client; `Err` a failed client connection.
pub(super) async fn read_model(
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
        Err(scan::ScanError::DuplicateModel) => {
            return Ok(Err(ApiError::new(
                400,
                "invalid_request_error",
                "invalid_json",
                "the request body names \"model\" more than once",
            )))
        }
        Err(scan::ScanError::UnusableModel(what)) => {
            return Ok(Err(ApiError::new(
                400,
                "invalid_request_error",
                "invalid_model",
                format!(
                    "{what}: a model name has at most {} bytes and no control characters",
                    scan::MAX_MODEL_NAME
                ),
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

/// Picks the backend for this attempt and takes its in-flight slot and
/// circuit permit. When every candidate is at its `max_in_flight`, waits in
/// the pool's FIFO queue for a slot.
pub(super) async fn choose(
    session: &Session,
    ctx: &mut RequestCtx,
    pool: &Arc<Pool>,
) -> std::result::Result<Arc<Upstream>, ApiError> {
    // A retry gives its previous slot back before it queues for another.
    ctx.slot = None;
    let queue = pool.shared.queue.clone();
    // Requests wait in line with those for the same model: another model's
    // backends may be free.
    let key = ctx.model.clone().unwrap_or_default();
    match queue.wait(&key, || choose_once(session, ctx, pool)).await {
        Ok(chosen) => chosen,
        Err(e) => {
            let (code, what) = match e {
                QueueError::Full => ("queue_full", "all backends are busy and the queue is full"),
                QueueError::TimedOut => ("queue_timeout", "no backend became free in time"),
            };
            let kind = if e.status() == 429 {
                "rate_limit_error"
            } else {
                "server_error"
            };
            let mut api = ApiError::new(
                e.status(),
                kind,
                code,
                format!("{what} in pool '{}'", pool.spec.name),
            );
            api.retry_after = Some(1);
            Err(api)
        }
    }
}

/// One attempt at choosing; `None` means "all busy, wait".
fn choose_once(
    session: &Session,
    ctx: &mut RequestCtx,
    pool: &Pool,
) -> Option<std::result::Result<Arc<Upstream>, ApiError>> {
    // Backends whose slot or half-open probe another request took between
    // selection and acquisition.
    let mut skip = Vec::new();
    loop {
        match pick(session, ctx, pool, &skip) {
            Outcome::Chosen(up, model) => {
                let Some(slot) = up.in_flight.try_acquire(up.spec.max_in_flight) else {
                    skip.push(up.spec.addr);
                    continue;
                };
                let Some(permit) = up.circuit.try_acquire() else {
                    skip.push(up.spec.addr);
                    continue;
                };
                ctx.slot = Some(slot);
                ctx.permit = Some(permit);
                if let Some(model) = model {
                    ctx.set_served(model);
                }
                return Some(Ok(up));
            }
            Outcome::Busy => return None,
            Outcome::Refused(_) if !skip.is_empty() => return None,
            Outcome::Refused(api) => return Some(Err(api)),
        }
    }
}

enum Outcome {
    /// A backend, and the model to send it when one was asked for.
    Chosen(Arc<Upstream>, Option<String>),
    Busy,
    Refused(ApiError),
}

/// One selection: a backend for the request's model, else (on the first
/// attempt) for a fallback model.
fn pick(
    session: &Session,
    ctx: &RequestCtx,
    pool: &Pool,
    skip: &[std::net::SocketAddr],
) -> Outcome {
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
    let other = if ctx.tried.is_empty() { "" } else { "other " };
    let Some(model) = ctx.model.clone() else {
        let key = key_of(session, pool, None);
        return match pool.select(&key, &ctx.tried, skip, None) {
            Pick::Chosen(up) => Outcome::Chosen(up, None),
            Pick::Busy => Outcome::Busy,
            Pick::None => Outcome::Refused(no_backend(&format!("no {other}healthy backend"))),
        };
    };
    let current = ctx.served_model.clone().unwrap_or_else(|| model.clone());
    let key = key_of(session, pool, Some(&current));
    match pool.select(&key, &ctx.tried, skip, Some(&current)) {
        Pick::Chosen(up) => return Outcome::Chosen(up, Some(current)),
        Pick::Busy => return Outcome::Busy,
        Pick::None => {}
    }
    if ctx.tried.is_empty() {
        let fallbacks = ctx
            .snapshot
            .as_ref()
            .and_then(|s| s.config.models.fallbacks.get(&model).cloned());
        for fallback in fallbacks.unwrap_or_default() {
            let key = key_of(session, pool, Some(&fallback));
            match pool.select(&key, &ctx.tried, skip, Some(&fallback)) {
                Pick::Chosen(up) => {
                    debug!("model {model}: no healthy backend, falling back to {fallback}");
                    return Outcome::Chosen(up, Some(fallback));
                }
                Pick::Busy => return Outcome::Busy,
                Pick::None => {}
            }
        }
        if !pool.knows(&model) {
            return Outcome::Refused(ApiError::new(
                404,
                "invalid_request_error",
                "model_not_found",
                format!("the model '{model}' does not exist or is not served here"),
            ));
        }
    }
    Outcome::Refused(no_backend(&format!(
        "no {other}healthy backend for model '{current}'"
    )))
}

/// The bytes the pool's `consistent_hash` places this request by.
fn key_of(session: &Session, pool: &Pool, model: Option<&str>) -> Vec<u8> {
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    routing::hash_key(&pool.spec.strategy, session.req_header(), client, model)
}
