//! Who may send a request, and whether its limits admit it now: the API
//! key (`auth:`), the pools and models the key may use, and the rate and
//! concurrency limits (`limits:`). Each step answers the client itself
//! when it refuses.
//!
//! A key limited to some models is held to them on Ollama's model
//! management too: `/api/pull`, `/api/push`, `/api/delete`, `/api/copy` and
//! `/api/create` name their models in a small JSON body, which is read (as
//! model routing reads its body) and every model it names, a copy's source
//! and destination and a create's base included, must be one the key may
//! use. Otherwise a key for `llama3*` could delete `qwen`, or copy it to
//! `llama3-qwen` and use it under that name. `/api/blobs/...` names no model
//! (a blob is content by its digest; a model is made of it only by an
//! `/api/create` that is checked), so it is held to the key's pools only.

use super::body::{read_all, BodyError};
use super::ctx::RequestCtx;
use super::refuse;
use crate::auth::{Access, Denied};
use crate::errors::Refusal;
use crate::limits::admission::write_windows;
use crate::limits::window::retry_after_secs;
use crate::limits::{Limiter, NotAdmitted};
use crate::models::{same_model, ModelEntry};
use crate::state::Snapshot;
use pingora_error::Result;
use pingora_proxy::Session;

/// Finds the request's key when `auth:` is on. `Ok(false)`: refused, and
/// answered.
pub(super) async fn authenticate(
    session: &mut Session,
    ctx: &mut RequestCtx,
    snapshot: &Snapshot,
) -> Result<bool> {
    let Some(auth) = &snapshot.config.auth else {
        return Ok(true);
    };
    let refusal = match auth.identify(&session.req_header().headers) {
        Ok(key) => {
            ctx.key = Some(key.clone());
            return Ok(true);
        }
        Err(Denied::Missing) => Refusal::MissingApiKey,
        Err(Denied::Unknown) => Refusal::InvalidApiKey,
    };
    refuse(session, ctx, &refusal).await?;
    Ok(false)
}

/// Whether the request's key may use its model (when it names one) and
/// `pool`. `Ok(false)`: refused, and answered.
pub(super) async fn check_access(
    session: &mut Session,
    ctx: &mut RequestCtx,
    pool: &str,
) -> Result<bool> {
    let Some(key) = &ctx.key else {
        return Ok(true);
    };
    let what = match &ctx.model {
        Some(model) if !key.access.allows_model(model) => format!("the model '{model}'"),
        _ if !key.access.allows_pool(pool) => format!("the pool '{pool}'"),
        _ => return Ok(true),
    };
    refuse(session, ctx, &Refusal::ModelNotAllowed { what }).await?;
    Ok(false)
}

/// For a model management request by a key limited to some models:
/// reads the body and checks every model it names. `Ok(false)`: refused,
/// and answered.
pub(super) async fn check_managed_models(
    session: &mut Session,
    ctx: &mut RequestCtx,
    snapshot: &Snapshot,
) -> Result<bool> {
    let Some(key) = ctx.key.clone().filter(|k| k.access.models.is_some()) else {
        return Ok(true);
    };
    if session.req_header().uri.path().starts_with("/api/blobs/") {
        return Ok(true);
    }
    let max = snapshot.config.server.max_request_body;
    let body = match read_all(session, max).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            refuse(session, ctx, &Refusal::BodyTooLarge { limit: max }).await?;
            return Ok(false);
        }
        Err(BodyError::Client(e)) => return Err(e),
    };
    let refusal = match managed_models(&body) {
        Ok(models) => models
            .into_iter()
            .find(|m| !key.access.allows_model(m))
            .map(|model| Refusal::ModelNotAllowed {
                what: format!("the model '{model}'"),
            }),
        Err(refusal) => Some(refusal),
    };
    // Forwarded as read, like a body read for its model.
    ctx.body = Some(body);
    match refusal {
        Some(refusal) => {
            refuse(session, ctx, &refusal).await?;
            Ok(false)
        }
        None => Ok(true),
    }
}

/// The models a management request's JSON body names: `model` (or the
/// older `name`), a copy's `source` and `destination`, a create's `from`,
/// and the `FROM` lines of the older `modelfile` that are not blobs
/// (`@sha256:...`).
fn managed_models(body: &[u8]) -> std::result::Result<Vec<String>, Refusal> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Refusal::InvalidJson(e.to_string()))?;
    let Some(fields) = value.as_object() else {
        return Err(Refusal::InvalidJson("expected an object".into()));
    };
    let mut models: Vec<String> = ["model", "name", "source", "destination", "from"]
        .iter()
        .filter_map(|k| fields.get(*k)?.as_str())
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(modelfile) = fields.get("modelfile").and_then(|m| m.as_str()) {
        let bases = modelfile.lines().filter_map(|line| {
            let line = line.trim_start();
            let (word, rest) = line.split_at(line.find(char::is_whitespace)?);
            let base = rest.trim();
            (word.eq_ignore_ascii_case("from") && !base.starts_with('@')).then_some(base)
        });
        models.extend(bases.map(str::to_string));
    }
    if models.is_empty() {
        return Err(Refusal::ModelRequired);
    }
    Ok(models)
}

/// Checks the request against its limits and keeps its admission in the
/// context. `Ok(false)`: refused, and answered.
pub(super) async fn admit(
    limiter: &Limiter,
    session: &mut Session,
    ctx: &mut RequestCtx,
    snapshot: &Snapshot,
    pool: usize,
) -> Result<bool> {
    let spec = &snapshot.config.pools[pool];
    let (subjects, n) =
        Limiter::subjects(snapshot, ctx.client_ip(), ctx.key.as_deref(), Some(spec));
    if n == 0 {
        return Ok(true);
    }
    let subjects: Vec<_> = subjects.into_iter().flatten().collect();
    let key_name = ctx.key.as_ref().map_or("", |k| k.name.as_str());
    let refused = match limiter.admit(snapshot, &subjects, key_name).await {
        Ok(admission) => {
            ctx.admission = Some(Box::new(admission));
            return Ok(true);
        }
        Err(refused) => refused,
    };
    match refused {
        NotAdmitted::StoreUnavailable => {
            refuse(session, ctx, &Refusal::LimitStoreUnavailable).await?;
        }
        NotAdmitted::Limited(r) => {
            let refusal = Refusal::RateLimited {
                scope: r.scope.as_str(),
                limit: r.limit.as_str(),
                retry_after: retry_after_secs(r.wait),
            };
            ctx.observed.answered(Some(&refusal));
            refusal
                .send_with(session, ctx.request_id(), |h| {
                    write_windows(h, r.requests, r.tokens)
                })
                .await?;
        }
    }
    Ok(false)
}

/// Whether a key with `access` sees `entry` in the model lists: a model it
/// may ask for, served by a pool it may use.
pub(super) fn may_list(snapshot: &Snapshot, access: &Access, entry: &ModelEntry) -> bool {
    if !access.allows_model(&entry.name) {
        return false;
    }
    let Some(pools) = &access.pools else {
        return true;
    };
    let name = snapshot
        .config
        .models
        .aliases
        .get(&entry.name)
        .unwrap_or(&entry.name);
    pools
        .iter()
        .filter_map(|p| snapshot.pool(p))
        .flat_map(|p| p.upstreams())
        .filter_map(|u| u.models.get())
        .any(|list| list.iter().any(|m| same_model(&m.name, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_bodies_name_their_models() {
        let names = |body: &str| managed_models(body.as_bytes());
        assert_eq!(
            names(r#"{"model":"qwen2.5","stream":false}"#),
            Ok(vec!["qwen2.5".into()])
        );
        assert_eq!(names(r#"{"name":"qwen2.5"}"#), Ok(vec!["qwen2.5".into()]));
        assert_eq!(
            names(r#"{"source":"qwen2.5","destination":"llama3-q"}"#),
            Ok(vec!["qwen2.5".into(), "llama3-q".into()])
        );
        assert_eq!(
            names(r#"{"model":"llama3-x","from":"qwen2.5","files":{"a.gguf":"sha256:00"}}"#),
            Ok(vec!["llama3-x".into(), "qwen2.5".into()])
        );
        assert_eq!(
            names(
                r##"{"name":"llama3-x","modelfile":"# base\n  from qwen2.5\nFROM @sha256:ab\nSYSTEM hi\n"}"##
            ),
            Ok(vec!["llama3-x".into(), "qwen2.5".into()])
        );
        assert_eq!(names(r#"{"model":""}"#), Err(Refusal::ModelRequired));
        assert!(matches!(names("[1]"), Err(Refusal::InvalidJson(_))));
        assert!(matches!(names("{"), Err(Refusal::InvalidJson(_))));
    }
}
