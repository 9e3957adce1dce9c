//! The fleet's model list, answered by Switchyard itself: `GET /v1/models`
//! (OpenAI), `GET /api/tags` and `GET /api/ps` (Ollama). Clients such as
//! Open WebUI or the `ollama` CLI then see the fleet as one server.
//!
//! A model is listed once, if at least one healthy backend serves it;
//! an alias is listed when its target is.

use super::{fetch, same_model, ModelEntry};
use crate::state::Snapshot;
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;

/// What a list request should get, by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    OpenAi,
    OllamaTags,
    OllamaPs,
}

impl ListKind {
    pub fn of(method: &http::Method, path: &str) -> Option<ListKind> {
        if method != http::Method::GET {
            return None;
        }
        match path.trim_end_matches('/') {
            "/v1/models" => Some(ListKind::OpenAi),
            "/api/tags" => Some(ListKind::OllamaTags),
            "/api/ps" => Some(ListKind::OllamaPs),
            _ => None,
        }
    }
}

/// Every model served by a healthy backend, once, in name order, followed
/// by the aliases whose target is among them.
pub fn fleet_models(snapshot: &Snapshot) -> Vec<ModelEntry> {
    let mut out: Vec<ModelEntry> = Vec::new();
    for pool in &snapshot.pools {
        for up in pool.upstreams() {
            if !up.health.is_healthy() {
                continue;
            }
            let Some(list) = up.models.get() else {
                continue;
            };
            for entry in list.iter() {
                if !out.iter().any(|e| same_model(&e.name, &entry.name)) {
                    out.push(entry.clone());
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let aliases: Vec<ModelEntry> = snapshot
        .config
        .models
        .aliases
        .iter()
        .filter(|(alias, target)| {
            out.iter().any(|e| same_model(&e.name, target))
                && !out.iter().any(|e| same_model(&e.name, alias))
        })
        .map(|(alias, target)| {
            let base = out
                .iter()
                .find(|e| same_model(&e.name, target))
                .and_then(|e| e.ollama.clone());
            ModelEntry {
                name: alias.clone(),
                ollama: base.map(|mut v| {
                    v["name"] = json!(alias);
                    v["model"] = json!(alias);
                    v
                }),
            }
        })
        .collect();
    out.extend(aliases);
    out
}

/// `GET /v1/models`.
pub fn openai(models: &[ModelEntry]) -> Bytes {
    let data: Vec<Value> = models
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "switchyard"}))
        .collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

/// `GET /api/tags`.
pub fn ollama_tags(models: &[ModelEntry]) -> Bytes {
    let list: Vec<Value> = models
        .iter()
        .map(|m| {
            m.ollama.clone().unwrap_or_else(|| {
                json!({
                    "name": m.name, "model": m.name, "modified_at": "1970-01-01T00:00:00Z",
                    "size": 0, "digest": "", "details": {}
                })
            })
        })
        .collect();
    Bytes::from(json!({"models": list}).to_string())
}

/// How long each backend gets to answer `/api/ps`.
const PS_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /api/ps`: the models loaded on every healthy backend, merged.
/// Backends that do not answer are left out.
pub async fn ollama_ps(snapshot: &Snapshot) -> Bytes {
    let targets = snapshot.backends(|up| up.health.is_healthy());
    let answers = futures_util::future::join_all(
        targets
            .iter()
            .map(|up| fetch::get(up.spec.addr, up.spec.host(), "/api/ps", PS_TIMEOUT)),
    )
    .await;
    let mut merged: Vec<Value> = Vec::new();
    for answer in answers {
        let Ok((200, body)) = answer else { continue };
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        if let Some(models) = v.get("models").and_then(|m| m.as_array()) {
            merged.extend(models.iter().cloned());
        }
    }
    Bytes::from(json!({"models": merged}).to_string())
}
