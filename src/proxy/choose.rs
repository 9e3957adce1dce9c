//! The request's model, the backend for each attempt, and the model lists
//! Switchyard answers itself.

use super::attempt::Attempt;
use super::body::{read_all, BodyError};
use super::ctx::RequestCtx;
use super::endpoints::ModelKeys;
use crate::balance::pool::{Pick, Pool, Upstream};
use crate::balance::queue::QueueError;
use crate::errors::{send_json, Refusal};
use crate::metrics::Metrics;
use crate::models::lists::{self, ListCache, ListKind};
use crate::models::{scan, ModelEntry};
use crate::routing;
use crate::state::Snapshot;
use log::debug;
use pingora_error::Result;
use pingora_proxy::Session;
use std::sync::Arc;

/// Names the model that served a response, which differs from the one asked
/// for when a fallback was used.
pub const MODEL_HEADER: &str = "x-switchyard-model";

/// Answers `/v1/models` (and one model of it), `/api/tags` or `/api/ps`
/// for the whole fleet, to the request whose id is `request_id`.
/// `Ok(Err(..))` is an answer for the client (a model that is not there);
/// `Err` a failed client connection.
///
/// `keep`, for a key that may use only some models, says which entries it
/// sees; a model it may not use is not found.
pub(super) async fn answer_list(
    session: &mut Session,
    request_id: Option<&str>,
    snapshot: &Snapshot,
    lists: &ListCache,
    kind: ListKind,
    keep: Option<&(dyn Fn(&ModelEntry) -> bool + Sync)>,
) -> Result<Result<(), Refusal>> {
    let body = match (kind, keep) {
        (ListKind::OpenAi, None) => lists.openai(snapshot),
        (ListKind::OpenAi, Some(keep)) => lists::openai(&lists.models_where(snapshot, keep)),
        (ListKind::OpenAiModel, keep) => {
            let id = lists::model_id(session.req_header().uri.path()).unwrap_or_default();
            let keep = keep.unwrap_or(&|_| true);
            match lists.openai_model(snapshot, &id, keep) {
                Some(body) => body,
                None => return Ok(Err(Refusal::ModelNotFound { model: id })),
            }
        }
        (ListKind::OllamaTags, None) => lists.ollama_tags(snapshot),
        (ListKind::OllamaTags, Some(keep)) => {
            lists::ollama_tags(&lists.models_where(snapshot, keep))
        }
        (ListKind::OllamaPs, None) => lists.ollama_ps(snapshot).await,
        (ListKind::OllamaPs, Some(keep)) => lists
            .loaded(snapshot)
            .await
            .merged_where(&|name| keep(&ModelEntry::named(name))),
    };
    send_json(session, 200, body, None, request_id)
        .await
        .map(Ok)
}

/// Reads the body and finds its model (resolving an alias). `Ok(Err(..))`
/// is an answer for the client; `Err` a failed client connection.
pub(super) async fn read_model(
    session: &mut Session,
    ctx: &mut RequestCtx,
    snapshot: &Snapshot,
    keys: ModelKeys,
) -> Result<Result<(), Refusal>> {
    let body = match read_all(session, snapshot.config.server.max_request_body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Ok(Err(Refusal::BodyTooLarge {
                limit: snapshot.config.server.max_request_body,
            }));
        }
        Err(BodyError::Client(e)) => return Err(e),
    };
    let scanned = match keys {
        ModelKeys::Model => scan::find_model(&body),
        ModelKeys::ModelOrName => scan::find_model_or_name(&body),
    };
    let found = match scanned {
        Ok(found) => found,
        Err(scan::ScanError::Missing) => return Ok(Err(Refusal::ModelRequired)),
        Err(scan::ScanError::Malformed(what)) => {
            return Ok(Err(Refusal::InvalidJson(format!("expected {what}"))))
        }
        Err(scan::ScanError::DuplicateModel) => {
            return Ok(Err(Refusal::InvalidJson(
                "it names \"model\" more than once".into(),
            )))
        }
        Err(scan::ScanError::UnusableModel(what)) => {
            return Ok(Err(Refusal::InvalidModel(format!(
                "{what}: a model name has at most {} bytes and no control characters",
                scan::MAX_MODEL_NAME
            ))))
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
/// the pool's FIFO queue for a slot, and tells `metrics` how long.
pub(super) async fn choose(
    session: &Session,
    ctx: &mut RequestCtx,
    pool: &Arc<Pool>,
    metrics: &Metrics,
) -> std::result::Result<Attempt, Refusal> {
    // A retry gives its previous slot back before it queues for another.
    ctx.attempt = None;
    let queue = pool.shared.queue.clone();
    // Requests wait in line with those for the same model: another model's
    // backends may be free.
    let key = ctx.model.clone().unwrap_or_default();
    // Timed from when the request entered the queue: most requests are
    // admitted at their first try and read no clock.
    let (admitted, waited) = queue
        .wait_timed(&key, || choose_once(session, ctx, pool))
        .await;
    if let Some(waited) = waited {
        ctx.queue_wait += waited;
        metrics.queue_waited(&pool.spec.name, waited);
    }
    match admitted {
        Ok(chosen) => chosen,
        Err(QueueError::Full) => Err(Refusal::QueueFull {
            pool: pool.spec.name.clone(),
        }),
        Err(QueueError::TimedOut) => Err(Refusal::QueueTimeout {
            pool: pool.spec.name.clone(),
        }),
    }
}

/// One attempt at choosing; `None` means "all busy, wait".
fn choose_once(
    session: &Session,
    ctx: &mut RequestCtx,
    pool: &Pool,
) -> Option<std::result::Result<Attempt, Refusal>> {
    // Backends whose slot or half-open probe another request took between
    // selection and acquisition.
    let mut skip = Vec::new();
    let client = ctx.client_ip();
    loop {
        match pick(
            &|model| key_of(session, pool, client, model),
            ctx,
            pool,
            &skip,
        ) {
            Outcome::Chosen(up, model) => {
                let Some(slot) = up.in_flight.try_acquire(up.spec.max_in_flight) else {
                    skip.push(up.spec.addr);
                    continue;
                };
                let Some(permit) = up.circuit.try_acquire() else {
                    skip.push(up.spec.addr);
                    continue;
                };
                if let Some(model) = model {
                    let wire = up.spec.served_name(&model).to_string();
                    ctx.set_served(model, &wire);
                }
                return Some(Ok(Attempt::new(up, slot, permit, &pool.spec.timeouts)));
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
    Refused(Refusal),
}

/// One selection: a backend for the request's model, else (on the first
/// attempt) for a fallback model. `key_for` gives the `consistent_hash`
/// key for a model.
fn pick(
    key_for: &dyn Fn(Option<&str>) -> Vec<u8>,
    ctx: &RequestCtx,
    pool: &Pool,
    skip: &[std::net::SocketAddr],
) -> Outcome {
    let no_backend = |detail: &str| Refusal::NoHealthyBackend {
        pool: pool.spec.name.clone(),
        detail: detail.to_string(),
    };
    let other = if ctx.tried.is_empty() { "" } else { "other " };
    let Some(model) = ctx.model.clone() else {
        let key = key_for(None);
        return match pool.select(&key, &ctx.tried, skip, None) {
            Pick::Chosen(up) => Outcome::Chosen(up, None),
            Pick::Busy => Outcome::Busy,
            Pick::None => Outcome::Refused(no_backend(&format!("no {other}healthy backend"))),
        };
    };
    let current = ctx.served_model.clone().unwrap_or_else(|| model.clone());
    let key = key_for(Some(&current));
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
            let key = key_for(Some(&fallback));
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
            return Outcome::Refused(Refusal::ModelNotFound { model });
        }
    }
    Outcome::Refused(no_backend(&format!(
        "no {other}healthy backend for model '{current}'"
    )))
}

/// The bytes the pool's `consistent_hash` places this request by; `client`
/// is the client's address behind any trusted proxies.
fn key_of(
    session: &Session,
    pool: &Pool,
    client: Option<std::net::IpAddr>,
    model: Option<&str>,
) -> Vec<u8> {
    routing::hash_key(&pool.spec.strategy, session.req_header(), client, model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::lifecycle::drain::Requests;
    use crate::state::SharedState;

    /// A fleet of `big` on one backend and `small` on another, with a
    /// fallback from `big` to `small`.
    fn ctx_for(model: &str) -> (RequestCtx, Arc<Requests>) {
        let config = Config::from_yaml(
            "pools:\n  chat:\n    health_check: { type: tcp }\n    backends:\n\
             \x20     - { name: a, url: \"http://127.0.0.1:9001\", models: [big] }\n\
             \x20     - { name: b, url: \"http://127.0.0.1:9002\", models: [small] }\n\
             models:\n  fallbacks: { big: [small] }\n",
        )
        .unwrap();
        let state = SharedState::new(config);
        let requests = Arc::new(Requests::default());
        let mut ctx = RequestCtx::new(requests.enter());
        ctx.snapshot = Some(state.load_full());
        ctx.pool = Some(0);
        ctx.model = Some(model.to_string());
        (ctx, requests)
    }

    fn take_down(ctx: &RequestCtx, name: &str) {
        let pool = ctx.pool().unwrap();
        let up = pool
            .upstreams()
            .iter()
            .find(|u| u.spec.name == name)
            .unwrap();
        while up
            .health
            .begin_check()
            .unwrap()
            .observe(false, &pool.spec.health)
            != Some(false)
        {}
    }

    fn picked(ctx: &RequestCtx) -> Result<(String, Option<String>), &'static str> {
        match pick(&|_| Vec::new(), ctx, ctx.pool().unwrap(), &[]) {
            Outcome::Chosen(up, model) => Ok((up.spec.name.clone(), model)),
            Outcome::Busy => Err("busy"),
            Outcome::Refused(r) => Err(r.code()),
        }
    }

    #[test]
    fn a_model_goes_to_a_backend_that_serves_it() {
        let (ctx, _r) = ctx_for("big");
        assert_eq!(picked(&ctx), Ok(("a".into(), Some("big".into()))));
        let (ctx, _r) = ctx_for("small");
        assert_eq!(picked(&ctx), Ok(("b".into(), Some("small".into()))));
    }

    #[test]
    fn a_model_without_a_healthy_backend_falls_back() {
        let (ctx, _r) = ctx_for("big");
        take_down(&ctx, "a");
        assert_eq!(picked(&ctx), Ok(("b".into(), Some("small".into()))));
    }

    #[test]
    fn no_fallback_left_and_unknown_models_are_refused() {
        let (ctx, _r) = ctx_for("big");
        take_down(&ctx, "a");
        take_down(&ctx, "b");
        assert_eq!(picked(&ctx), Err("no_healthy_backend"));
        let (ctx, _r) = ctx_for("nobody-serves-this");
        assert_eq!(picked(&ctx), Err("model_not_found"));
    }

    #[test]
    fn a_retry_does_not_fall_back() {
        let (mut ctx, _r) = ctx_for("big");
        take_down(&ctx, "a");
        ctx.tried.push("127.0.0.1:9003".parse().unwrap());
        assert_eq!(picked(&ctx), Err("no_healthy_backend"));
    }
}
