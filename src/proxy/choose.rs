//! The request's model, the backend for each attempt, and the model lists
//! Switchyard answers itself.

use super::ctx::RequestCtx;
use crate::error_response::ApiError;
use crate::models::lists::{self, ListKind};
use crate::models::scan;
use crate::pool::{Pool, Upstream};
use crate::request_body::{read_all, BodyError};
use crate::state::Snapshot;
use log::debug;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::sync::Arc;

/// Names the model that served a response, which differs from the one asked
/// for when a fallback was used.
pub const MODEL_HEADER: &str = "x-switchyard-model";

/// Answers `/v1/models`, `/api/tags` or `/api/ps` for the whole fleet.
pub(super) async fn answer_list(
    session: &mut Session,
    snapshot: &Snapshot,
    kind: ListKind,
) -> Result<()> {
    let body = match kind {
        ListKind::OpenAi => lists::openai(&lists::fleet_models(snapshot)),
        ListKind::OllamaTags => lists::ollama_tags(&lists::fleet_models(snapshot)),
        ListKind::OllamaPs => lists::ollama_ps(snapshot).await,
    };
    let mut header = ResponseHeader::build(200, Some(2))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
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

/// Picks the backend for this attempt: one that serves the request's model,
/// else (on the first attempt) one that serves a fallback.
pub(super) fn choose(
    session: &Session,
    ctx: &mut RequestCtx,
    pool: &Arc<Pool>,
) -> std::result::Result<Arc<Upstream>, ApiError> {
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
    let Some(model) = ctx.model.clone() else {
        let key = pool.hash_key(session, None);
        return pool.select(&key, &ctx.tried, None).ok_or_else(|| {
            no_backend(if ctx.tried.is_empty() {
                "no healthy backend"
            } else {
                "no other healthy backend"
            })
        });
    };
    let current = ctx.served_model.clone().unwrap_or_else(|| model.clone());
    let key = pool.hash_key(session, Some(&current));
    if let Some(up) = pool.select(&key, &ctx.tried, Some(&current)) {
        ctx.set_served(current);
        return Ok(up);
    }
    if ctx.tried.is_empty() {
        let fallbacks = ctx
            .snapshot
            .as_ref()
            .and_then(|s| s.config.models.fallbacks.get(&model).cloned());
        for fallback in fallbacks.unwrap_or_default() {
            let key = pool.hash_key(session, Some(&fallback));
            if let Some(up) = pool.select(&key, &ctx.tried, Some(&fallback)) {
                debug!("model {model}: no healthy backend, falling back to {fallback}");
                ctx.set_served(fallback);
                return Ok(up);
            }
        }
        if !pool.knows(&model) {
            return Err(ApiError::new(
                404,
                "invalid_request_error",
                "model_not_found",
                format!("the model '{model}' does not exist or is not served here"),
            ));
        }
    }
    Err(no_backend(&format!(
        "no {}healthy backend for model '{current}'",
        if ctx.tried.is_empty() { "" } else { "other " }
    )))
}
