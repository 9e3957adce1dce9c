//! Which backend serves which model, and what a request asks for.
//!
//! # Layout
//! - [`scan`]: the request body's `model`, found without a full parse.
//! - [`fetch`]: a small HTTP client for backends' model lists.
//! - [`discovery`]: the background service that keeps each backend's list.
//! - [`lists`]: the fleet's model list, answered by Switchyard itself.
//! - [`loaded`]: the models Ollama backends have loaded now (`/api/ps`).
//! - [`entries`]: one model's entry in each list format, from what the
//!   backends said of it.
//!
//! A backend's list ([`BackendModels`]) is shared between routing
//! snapshots by address, like its health, so a reload keeps what was
//! discovered. A backend whose list is not known yet (before its first
//! discovery) is a candidate for any model, so a new fleet serves at once.

pub mod discovery;
pub mod entries;
pub mod fetch;
pub mod lists;
pub mod loaded;
pub mod scan;

use arc_swap::ArcSwapOption;
use std::sync::Arc;

/// One model as a backend lists it, with the backend's own entries kept so
/// that Switchyard's lists say what the backends said: sizes, digests and
/// details in `/api/tags`, `created`, `owned_by` and a server's own fields
/// (vLLM's `max_model_len`) in `/v1/models`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelEntry {
    pub name: String,
    /// The backend's `/v1/models` entry.
    pub openai: Option<serde_json::Value>,
    /// The backend's `/api/tags` entry.
    pub ollama: Option<serde_json::Value>,
}

impl ModelEntry {
    /// A model known by name only, as `models:` in the configuration gives it.
    pub fn named(name: impl Into<String>) -> Self {
        ModelEntry {
            name: name.into(),
            ..ModelEntry::default()
        }
    }
}

/// The models one backend serves.
#[derive(Debug, Default)]
pub struct BackendModels {
    /// `None` until the first successful discovery.
    list: ArcSwapOption<Vec<ModelEntry>>,
}

impl BackendModels {
    /// A list fixed by the configuration.
    pub fn fixed(names: &[String]) -> Self {
        let m = BackendModels::default();
        m.set(names.iter().map(ModelEntry::named).collect());
        m
    }

    pub fn set(&self, list: Vec<ModelEntry>) {
        self.list.store(Some(Arc::new(list)));
    }

    pub fn get(&self) -> Option<Arc<Vec<ModelEntry>>> {
        self.list.load_full()
    }

    /// Whether the backend serves `model`: `None` while its list is unknown.
    pub fn serves(&self, model: &str) -> Option<bool> {
        let list = self.list.load();
        list.as_ref()
            .map(|l| l.iter().any(|e| same_model(&e.name, model)))
    }
}

/// Ollama treats `llama3` and `llama3:latest` as one model.
pub fn same_model(a: &str, b: &str) -> bool {
    base_name(a) == base_name(b)
}

/// A model's name without Ollama's default tag: what [`same_model`]
/// compares, and what model lists are sorted and merged on.
pub fn base_name(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("qwen*", "qwen2.5-coder:7b"));
        assert!(glob_match("*coder*", "qwen2.5-coder:7b"));
        assert!(glob_match("llama3.?:8b", "llama3.1:8b"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("qwen*", "llama3"));
        assert!(!glob_match("llama3", "llama3.1"));
    }

    #[test]
    fn latest_tag() {
        assert!(same_model("llama3", "llama3:latest"));
        assert!(!same_model("llama3", "llama3:8b"));
        let m = BackendModels::default();
        assert_eq!(m.serves("x"), None);
        m.set(vec![ModelEntry::named("llama3:latest")]);
        assert_eq!(m.serves("llama3"), Some(true));
        assert_eq!(m.serves("qwen"), Some(false));
    }
}
