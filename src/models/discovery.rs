//! Keeps each backend's model list: a background service polls every
//! backend of the current snapshot every `models.refresh`.
//!
//! A backend whose list cannot be fetched keeps its last known list (a
//! restarting Ollama should not lose its models for a refresh), and the
//! failure is logged once, not at every refresh.
//!
//! A list is bounded (in bytes read, in models kept, in what is logged of
//! it), and stored only when it changed, so the fleet's list, rebuilt on
//! each change, is not rebuilt at every refresh.

use super::scan::check_model_name;
use super::{base_name, fetch, ModelEntry};
use crate::config::{BackendKind, BackendSpec};

use std::collections::HashMap;
use std::time::Duration;

/// How long one model-list request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The most models kept from one backend's list; the rest are left out,
/// with a warning. Ollama servers hold tens of models and a vLLM server one;
/// a list of thousands is a misconfigured or hostile backend, and every
/// model listed costs memory, routing and `/v1/models` work.
pub const MAX_MODELS: usize = 10_000;

/// The most a model-list answer may weigh; a larger one is refused rather
/// than buffered. Room for [`MAX_MODELS`] Ollama entries, which with their
/// `details` weigh some 400 to 600 bytes each.
const MAX_LIST_BODY: usize = 8 << 20;

/// How many names the log line of a changed list shows.
const LOGGED_NAMES: usize = 10;

/// Parses an OpenAI `/v1/models` answer, keeping each entry.
pub fn parse_openai(body: &[u8]) -> Option<Vec<ModelEntry>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = v.get("data")?.as_array()?;
    Some(
        data.iter()
            .filter_map(|m| {
                let id = m.get("id")?.as_str()?;
                Some(ModelEntry {
                    name: id.to_string(),
                    openai: Some(m.clone()),
                    ollama: None,
                })
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
                    openai: None,
                    ollama: Some(m.clone()),
                })
            })
            .collect(),
    )
}

/// Fetches one backend's list the way its `type` says. An `auto` backend is
/// asked both ways at once: an Ollama server answers both, and only its
/// `/api/tags` has sizes and details, only its `/v1/models` what OpenAI
/// clients read; a vLLM or llama.cpp server answers `/v1/models` alone.
pub async fn discover(backend: &BackendSpec) -> Result<Vec<ModelEntry>, String> {
    let try_one = |path: &'static str, parse: fn(&[u8]) -> Option<Vec<ModelEntry>>| async move {
        match fetch::get(backend, path, FETCH_TIMEOUT, MAX_LIST_BODY).await {
            Ok((200, body)) => parse(&body).ok_or_else(|| format!("{path}: not a model list")),
            Ok((status @ (401 | 403), _)) => Err(format!(
                "{path}: HTTP {status}: the backend wants an API key: give it in the \
                 backend's (or pool's) headers; until it lists its models it is sent \
                 requests for any model"
            )),
            Ok((status, _)) => Err(format!("{path}: HTTP {status}")),
            Err(e) => Err(format!("{path}: {e}")),
        }
    };
    match backend.kind {
        BackendKind::OpenAi => try_one("/v1/models", parse_openai).await,
        BackendKind::Ollama => try_one("/api/tags", parse_ollama).await,
        BackendKind::Auto => {
            let (openai, ollama) = futures_util::future::join(
                try_one("/v1/models", parse_openai),
                try_one("/api/tags", parse_ollama),
            )
            .await;
            match (openai, ollama) {
                (Ok(openai), Ok(ollama)) => Ok(merge(openai, ollama)),
                (Ok(list), Err(_)) | (Err(_), Ok(list)) => Ok(list),
                (Err(first), Err(second)) => Err(format!("{first}; {second}")),
            }
        }
    }
}

/// One backend's two lists as one: its `/v1/models` order, each model with
/// its `/api/tags` entry too, then the models only `/api/tags` has.
fn merge(openai: Vec<ModelEntry>, ollama: Vec<ModelEntry>) -> Vec<ModelEntry> {
    let mut tags: HashMap<String, ModelEntry> = ollama
        .into_iter()
        .map(|e| (base_name(&e.name).to_string(), e))
        .collect();
    let mut merged: Vec<ModelEntry> = openai
        .into_iter()
        .map(|mut e| {
            if let Some(tag) = tags.remove(base_name(&e.name)) {
                e.ollama = tag.ollama;
            }
            e
        })
        .collect();
    let mut rest: Vec<ModelEntry> = tags.into_values().collect();
    rest.sort_by(|a, b| a.name.cmp(&b.name));
    merged.extend(rest);
    merged
}

/// What [`bounded`] left out of a list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Names no client could ask for (see [`check_model_name`]).
    pub unusable: usize,
    /// Models beyond [`MAX_MODELS`].
    pub beyond: usize,
}

impl Dropped {
    pub fn any(&self) -> bool {
        self.unusable + self.beyond > 0
    }
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.unusable > 0 {
            parts.push(format!(
                "{} model names that are too long or have control characters",
                self.unusable
            ));
        }
        if self.beyond > 0 {
            parts.push(format!(
                "{} models beyond the first {MAX_MODELS}",
                self.beyond
            ));
        }
        write!(f, "its list leaves out {}", parts.join(" and "))
    }
}

/// `list` without the names no client can ask for, and at most
/// [`MAX_MODELS`] long, in the backend's order.
pub fn bounded(mut list: Vec<ModelEntry>) -> (Vec<ModelEntry>, Dropped) {
    let before = list.len();
    list.retain(|e| check_model_name(&e.name).is_ok());
    let unusable = before - list.len();
    let beyond = list.len().saturating_sub(MAX_MODELS);
    list.truncate(MAX_MODELS);
    (list, Dropped { unusable, beyond })
}

/// A changed list as logged: how many models, and the first few names,
/// so that one line stays short however long the list.
pub fn summary(list: &[ModelEntry]) -> String {
    let names: Vec<&str> = list
        .iter()
        .take(LOGGED_NAMES)
        .map(|e| e.name.as_str())
        .collect();
    let more = list.len().saturating_sub(LOGGED_NAMES);
    let mut line = format!("{} models: {}", list.len(), names.join(", "));
    if more > 0 {
        line.push_str(&format!(" and {more} more"));
    }
    line
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
        let vllm =
            br#"{"data":[{"id":"Qwen/Qwen2.5-7B","created":1700000000,"max_model_len":32768}]}"#;
        let list = parse_openai(vllm).unwrap();
        assert_eq!(list[0].openai.as_ref().unwrap()["max_model_len"], 32768);
        assert!(parse_ollama(b"nope").is_none());
    }

    #[test]
    fn an_ollama_servers_two_lists_are_one() {
        let openai = parse_openai(
            br#"{"data":[{"id":"llama3:latest","created":1,"owned_by":"library"},{"id":"qwen"}]}"#,
        )
        .unwrap();
        let ollama = parse_ollama(
            br#"{"models":[{"name":"phi3","size":3},{"name":"llama3","size":1,"digest":"d"}]}"#,
        )
        .unwrap();
        let merged = merge(openai, ollama);
        let names: Vec<&str> = merged.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["llama3:latest", "qwen", "phi3"]);
        assert_eq!(merged[0].openai.as_ref().unwrap()["owned_by"], "library");
        assert_eq!(merged[0].ollama.as_ref().unwrap()["digest"], "d");
        assert!(merged[1].ollama.is_none());
        assert!(merged[2].openai.is_none());
    }

    fn entries(names: impl IntoIterator<Item = String>) -> Vec<ModelEntry> {
        names.into_iter().map(ModelEntry::named).collect()
    }

    #[test]
    fn a_list_is_bounded_and_logged_short() {
        let mut names: Vec<String> = (0..MAX_MODELS + 5).map(|i| format!("m{i:05}")).collect();
        names.insert(3, "bad\nname".into());
        names.insert(4, "x".repeat(300));
        let (list, dropped) = bounded(entries(names));
        assert_eq!(list.len(), MAX_MODELS);
        assert_eq!(list[3].name, "m00003");
        assert_eq!(list.last().unwrap().name, format!("m{:05}", MAX_MODELS - 1));
        assert_eq!(
            dropped,
            Dropped {
                unusable: 2,
                beyond: 5
            }
        );
        let line = summary(&list);
        assert!(line.starts_with("10000 models: m00000, m00001,"), "{line}");
        assert!(line.ends_with(" and 9990 more"), "{line}");
        assert!(line.len() < 200, "{line}");

        let (short, dropped) = bounded(entries(["a".to_string(), "b".to_string()]));
        assert!(!dropped.any());
        assert_eq!(summary(&short), "2 models: a, b");
    }
}
