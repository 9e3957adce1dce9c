//! Who may send a request, and whether its limits admit it now: the API
//! key (`auth:`), the pools and models the key may use, and the rate and
//! concurrency limits (`limits:`). Each step answers the client itself
//! when it refuses.

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
        Err(Denied::Missing) => Refusal::InvalidApiKey(
            "no API key: send it as Authorization: Bearer KEY, or in x-api-key",
        ),
        Err(Denied::Unknown) => Refusal::InvalidApiKey("the API key is not valid"),
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
            ctx.admission = Some(admission);
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
