//! The models Ollama backends have loaded now (`GET /api/ps`), asked of
//! every healthy backend in one round: merged, it is Switchyard's own
//! `/api/ps` answer; per backend, it is what the admin listener's
//! `/status` shows in each backend's row.
//!
//! A round is kept for [`PS_FRESH`] by [`super::lists::ListCache`], which
//! both callers share, so clients polling `/api/ps` and open status pages
//! together cost the backends one request per second each.

use super::{entries, fetch};
use crate::state::Snapshot;
use bytes::Bytes;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// How long each backend gets to answer `/api/ps`.
const PS_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a round of `/api/ps` answers is given again. `ollama ps` users
/// and dashboards poll it every few seconds; a second is fresh enough to
/// say what is loaded where, and makes a burst of polls cost one round of
/// requests to the backends instead of one per poll.
pub const PS_FRESH: Duration = Duration::from_secs(1);

/// The most one backend's `/api/ps` answer may weigh. Ollama lists the
/// models it has loaded, a handful of entries of about 500 bytes; a larger
/// answer is left out rather than buffered.
const MAX_PS_BODY: usize = 256 << 10;

/// One model loaded on one backend, as `/status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedModel {
    pub name: String,
    /// Bytes of it in GPU memory, as Ollama reports.
    pub size_vram: Option<u64>,
    /// When Ollama will unload it, as Ollama wrote it (RFC 3339).
    pub expires_at: Option<String>,
}

/// One round of `/api/ps`.
#[derive(Debug, Clone, Default)]
pub struct PsRound {
    /// The merged answer Switchyard gives `GET /api/ps`.
    pub merged: Bytes,
    /// Its entries, one per model, for a caller that may see only some.
    pub entries: Vec<Value>,
    /// Each backend asked, by address, with its loaded models; `None` when
    /// it did not answer as Ollama does (a vLLM server answers 404).
    pub backends: Vec<(SocketAddr, Option<Vec<LoadedModel>>)>,
}

impl PsRound {
    /// `GET /api/ps` with only the entries whose model `keep` passes.
    pub fn merged_where(&self, keep: &dyn Fn(&str) -> bool) -> Bytes {
        let models: Vec<&Value> = self
            .entries
            .iter()
            .filter(|e| ps_name(e).is_some_and(keep))
            .collect();
        Bytes::from(json!({ "models": models }).to_string())
    }

    /// What `addr` has loaded, if it was asked and answered.
    pub fn of(&self, addr: SocketAddr) -> Option<&[LoadedModel]> {
        self.backends
            .iter()
            .find(|(a, _)| *a == addr)
            .and_then(|(_, list)| list.as_deref())
    }
}

/// Asks every healthy backend (once per address) for `/api/ps`, at once.
pub async fn ask(snapshot: &Snapshot) -> PsRound {
    let targets = snapshot.backends(|up| up.health.is_healthy());
    let answers = futures_util::future::join_all(
        targets
            .iter()
            .map(|up| fetch::get(&up.spec, "/api/ps", PS_TIMEOUT, MAX_PS_BODY)),
    )
    .await;
    let lists: Vec<(SocketAddr, Option<Vec<Value>>)> = targets
        .iter()
        .zip(answers)
        .map(|(up, answer)| (up.spec.addr, answer.ok().and_then(parse)))
        .collect();
    round(lists)
}

/// The `models` of a 200 answer.
fn parse((status, body): (u16, Bytes)) -> Option<Vec<Value>> {
    if status != 200 {
        return None;
    }
    let mut v = serde_json::from_slice::<Value>(&body).ok()?;
    match v.get_mut("models").map(Value::take) {
        Some(Value::Array(models)) => Some(models),
        _ => None,
    }
}

/// The round from each backend's entries: merged to one entry per model
/// ([`entries::merge_ps`]), and summarised per backend.
fn round(lists: Vec<(SocketAddr, Option<Vec<Value>>)>) -> PsRound {
    let backends = lists
        .iter()
        .map(|(addr, list)| {
            let loaded = list
                .as_ref()
                .map(|entries| entries.iter().filter_map(loaded_model).collect());
            (*addr, loaded)
        })
        .collect();
    let merged = entries::merge_ps(lists.into_iter().filter_map(|(_, l)| l));
    PsRound {
        merged: Bytes::from(json!({ "models": merged }).to_string()),
        entries: merged,
        backends,
    }
}

/// The model an `/api/ps` entry is about: its `name`, else its `model`.
fn ps_name(entry: &Value) -> Option<&str> {
    entry
        .get("name")
        .or_else(|| entry.get("model"))
        .and_then(Value::as_str)
}

fn loaded_model(entry: &Value) -> Option<LoadedModel> {
    let name = ps_name(entry)?;
    Some(LoadedModel {
        name: name.to_string(),
        size_vram: entry.get("size_vram").and_then(Value::as_u64),
        expires_at: entry
            .get("expires_at")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_and_per_backend() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let entry = |name: &str, expires: &str| json!({"name": name, "size_vram": 42, "expires_at": expires});
        let r = round(vec![
            (a, Some(vec![entry("llama3", "2026-01-01T00:00:00Z")])),
            (
                b,
                Some(vec![
                    entry("llama3", "2026-01-02T00:00:00Z"),
                    json!({"model": "qwen"}),
                    json!({"nameless": true}),
                ]),
            ),
            (c, None),
        ]);
        let merged: Value = serde_json::from_slice(&r.merged).unwrap();
        let names: Vec<&str> = merged["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.get("name").or(m.get("model")).unwrap().as_str().unwrap())
            .collect();
        assert_eq!(names, ["llama3", "qwen"]);
        let only_qwen: Value = serde_json::from_slice(&r.merged_where(&|m| m == "qwen")).unwrap();
        assert_eq!(only_qwen, json!({"models": [{"model": "qwen"}]}));
        assert_eq!(
            r.of(a).unwrap(),
            [LoadedModel {
                name: "llama3".into(),
                size_vram: Some(42),
                expires_at: Some("2026-01-01T00:00:00Z".into()),
            }]
        );
        let on_b: Vec<&str> = r.of(b).unwrap().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(on_b, ["llama3", "qwen"]);
        assert_eq!(r.of(c), None);
        assert_eq!(r.of("127.0.0.1:4".parse().unwrap()), None);
    }

    #[test]
    fn only_a_200_with_a_list_counts() {
        let ok = Bytes::from_static(br#"{"models":[{"name":"x"}]}"#);
        assert_eq!(parse((200, ok.clone())).map(|l| l.len()), Some(1));
        assert_eq!(parse((404, ok)), None);
        assert_eq!(
            parse((200, Bytes::from_static(b"404 page not found"))),
            None
        );
        assert_eq!(parse((200, Bytes::from_static(br#"{"models":7}"#))), None);
    }
}
