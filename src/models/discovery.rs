//! Keeps each backend's model list: a background service polls every
//! backend of the current snapshot every `models.refresh`.
//!
//! A backend whose list cannot be fetched keeps its last known list (a
//! restarting Ollama should not lose its models for a refresh), and the
//! failure is logged once, not at every refresh.

use super::{fetch, ModelEntry};
use crate::config::BackendKind;
use crate::state::SharedState;
use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long one model-list request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses an OpenAI `/v1/models` answer.
pub fn parse_openai(body: &[u8]) -> Option<Vec<ModelEntry>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = v.get("data")?.as_array()?;
    Some(
        data.iter()
            .filter_map(|m| m.get("id")?.as_str())
            .map(|id| ModelEntry {
                name: id.to_string(),
                ollama: None,
            })
            .collect(),
    )
}

/// Parses an Ollama `/api/tags` answer, keeping each entry.
pub fn parse_ollama(body: &[u8]) -> Option<Vec<ModelEntry>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let models = v.get("models")?.as_array()?;
    Some(
        models
            .iter()
            .filter_map(|m| {
                let name = m.get("name").or_else(|| m.get("model"))?.as_str()?;
                Some(ModelEntry {
                    name: name.to_string(),
                    ollama: Some(m.clone()),
                })
            })
            .collect(),
    )
}

/// Fetches one backend's list the way its `type` says.
pub async fn discover(
    addr: SocketAddr,
    host: &str,
    kind: BackendKind,
) -> Result<Vec<ModelEntry>, String> {
    let try_one = |path: &'static str, parse: fn(&[u8]) -> Option<Vec<ModelEntry>>| async move {
        match fetch::get(addr, host, path, FETCH_TIMEOUT).await {
            Ok((200, body)) => parse(&body).ok_or_else(|| format!("{path}: not a model list")),
            Ok((status, _)) => Err(format!("{path}: HTTP {status}")),
            Err(e) => Err(format!("{path}: {e}")),
        }
    };
    match kind {
        BackendKind::OpenAi => try_one("/v1/models", parse_openai).await,
        BackendKind::Ollama => try_one("/api/tags", parse_ollama).await,
        BackendKind::Auto => match try_one("/v1/models", parse_openai).await {
            Ok(list) => Ok(list),
            Err(first) => try_one("/api/tags", parse_ollama)
                .await
                .map_err(|second| format!("{first}; {second}")),
        },
    }
}

/// The background service.
pub struct DiscoveryService {
    state: Arc<SharedState>,
}

impl DiscoveryService {
    pub fn new(state: Arc<SharedState>) -> Self {
        DiscoveryService { state }
    }

    /// One round over every backend whose list is not fixed by the file.
    async fn round(&self, failing: &mut HashMap<SocketAddr, bool>) {
        let backends = self.state.load().backends(|up| up.spec.models.is_none());
        let rounds = backends.into_iter().map(|up| async move {
            let result = discover(up.spec.addr, up.spec.host(), up.spec.kind).await;
            (up, result)
        });
        for (up, result) in futures_util::future::join_all(rounds).await {
            let models = &up.models;
            match result {
                Ok(list) => {
                    let changed = models.get().is_none_or(|old| *old != list);
                    if changed {
                        let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
                        info!("backend {}: models {}", up.spec.name, names.join(", "));
                    }
                    models.set(list);
                    failing.insert(up.spec.addr, false);
                }
                Err(e) => {
                    if !failing.insert(up.spec.addr, true).unwrap_or(false) {
                        warn!(
                            "backend {}: cannot list models, keeping the last known list: {e}",
                            up.spec.name
                        );
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut failing = HashMap::new();
        loop {
            let generation = self.state.load().generation;
            self.round(&mut failing).await;
            let refresh = self.state.load().config.models.refresh;
            // Wake early when a reload brings backends nobody has asked yet.
            let deadline = tokio::time::Instant::now().checked_add(refresh);
            while self.state.load().generation == generation
                && deadline.is_none_or(|d| tokio::time::Instant::now() < d)
            {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats() {
        let openai =
            br#"{"object":"list","data":[{"id":"llama3","object":"model"},{"id":"qwen"}]}"#;
        let names: Vec<_> = parse_openai(openai)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["llama3", "qwen"]);
        let ollama = br#"{"models":[{"name":"llama3:latest","size":1},{"model":"phi3:mini"}]}"#;
        let list = parse_ollama(ollama).unwrap();
        assert_eq!(list[0].name, "llama3:latest");
        assert_eq!(list[0].ollama.as_ref().unwrap()["size"], 1);
        assert_eq!(list[1].name, "phi3:mini");
        assert!(parse_openai(b"{}").is_none());
        assert!(parse_ollama(b"nope").is_none());
    }
}
