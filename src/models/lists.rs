//! The fleet's model list, answered by Switchyard itself: `GET /v1/models`
//! (OpenAI), `GET /api/tags` and `GET /api/ps` (Ollama). Clients such as
//! Open WebUI or the `ollama` CLI then see the fleet as one server.
//!
//! A model is listed once, if at least one healthy backend serves it;
//! an alias is listed when its target is.
//!
//! Answers are not built per request: a backend may list thousands of
//! models, and clients poll these paths. [`ListCache`] keeps the fleet's list
//! and its two serializations until a backend's health or list changes, and
//! keeps a round of `/api/ps` ([`super::loaded`], which asks every backend)
//! for a second, with one round in flight however many clients (and
//! status pages) ask.

use super::loaded::{self, PsRound, PS_FRESH};
use super::{base_name, entries, same_model, ModelEntry};
use crate::balance::pool::Upstream;
use crate::state::Snapshot;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use tokio::time::Instant;

/// What a list request should get, by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    OpenAi,
    /// `GET /v1/models/{id}` (the OpenAI SDK's `models.retrieve`).
    OpenAiModel,
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
            p if model_id(p).is_some() => Some(ListKind::OpenAiModel),
            _ => None,
        }
    }
}

/// The model a `/v1/models/{id}` path names, percent-decoded (an id may
/// hold `/`, as `Qwen/Qwen2.5-7B` does, or `:`).
pub fn model_id(path: &str) -> Option<String> {
    let raw = path.strip_prefix("/v1/models/")?;
    if raw.is_empty() {
        return None;
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The list answers, kept until the backends or the snapshot change. One
/// per process, passed by `Arc` to the proxy and the admin listener; a reload (new backends, new aliases) publishes a
/// new snapshot generation, which the fleet's list is rebuilt for.
#[derive(Default)]
pub struct ListCache {
    /// The fleet's list as last built, with what it was built from.
    fleet: ArcSwapOption<Fleet>,
    /// The last round of `/api/ps` and when it was fetched. The lock is
    /// held while fetching, so callers that arrive meanwhile wait for that
    /// round instead of starting their own.
    ps: tokio::sync::Mutex<Option<(Instant, Arc<PsRound>)>>,
}

/// The fleet's list for one state of its backends.
struct Fleet {
    /// The snapshot it was built from.
    generation: u64,
    /// Each backend's health and list when this was built, in snapshot
    /// order. Holding the lists keeps their addresses from being reused, so
    /// comparing addresses tells whether a list was replaced.
    sources: Vec<(bool, Option<Arc<Vec<ModelEntry>>>)>,
    models: Vec<ModelEntry>,
    /// Serialized on first use: most clients ask in one format only.
    openai: OnceLock<Bytes>,
    tags: OnceLock<Bytes>,
}

impl Fleet {
    /// Whether the backends are still as they were when this was built.
    fn is_current(&self, snapshot: &Snapshot) -> bool {
        let mut sources = self.sources.iter();
        let same = snapshot.pools.iter().flat_map(|p| p.upstreams()).all(|up| {
            sources.next().is_some_and(|(healthy, list)| {
                let now = up.models.get();
                *healthy == up.health.is_healthy()
                    && match (list, &now) {
                        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                        (None, None) => true,
                        _ => false,
                    }
            })
        });
        same && sources.next().is_none() && snapshot.generation == self.generation
    }
}

impl ListCache {
    /// `GET /v1/models`.
    pub fn openai(&self, snapshot: &Snapshot) -> Bytes {
        let fleet = self.fleet(snapshot);
        fleet.openai.get_or_init(|| openai(&fleet.models)).clone()
    }

    /// `GET /v1/models/{id}`: the fleet's entry for `id`, if it has one.
    /// `keep` hides entries from a caller that may not use them.
    pub fn openai_model(
        &self,
        snapshot: &Snapshot,
        id: &str,
        keep: &dyn Fn(&ModelEntry) -> bool,
    ) -> Option<Bytes> {
        let fleet = self.fleet(snapshot);
        let entry = fleet
            .models
            .iter()
            .find(|m| same_model(&m.name, id) && keep(m))?;
        Some(Bytes::from(entries::openai(entry).to_string()))
    }

    /// The fleet's entries that `keep` passes, for a caller that may use
    /// only some models; built for each call, as such lists differ by key.
    pub fn models_where(
        &self,
        snapshot: &Snapshot,
        keep: &dyn Fn(&ModelEntry) -> bool,
    ) -> Vec<ModelEntry> {
        let fleet = self.fleet(snapshot);
        fleet.models.iter().filter(|m| keep(m)).cloned().collect()
    }

    /// `GET /api/tags`.
    pub fn ollama_tags(&self, snapshot: &Snapshot) -> Bytes {
        let fleet = self.fleet(snapshot);
        fleet
            .tags
            .get_or_init(|| ollama_tags(&fleet.models))
            .clone()
    }

    /// The fleet's list, rebuilt only when a backend's health or list
    /// changed since it was last built.
    fn fleet(&self, snapshot: &Snapshot) -> Arc<Fleet> {
        if let Some(fleet) = self.fleet.load_full() {
            if fleet.is_current(snapshot) {
                return fleet;
            }
        }
        // Sources first: a change while building makes the next request
        // build again rather than be missed.
        let sources = snapshot
            .pools
            .iter()
            .flat_map(|p| p.upstreams())
            .map(|up| (up.health.is_healthy(), up.models.get()))
            .collect();
        let fleet = Arc::new(Fleet {
            generation: snapshot.generation,
            sources,
            models: fleet_models(snapshot),
            openai: OnceLock::new(),
            tags: OnceLock::new(),
        });
        self.fleet.store(Some(fleet.clone()));
        fleet
    }

    /// `GET /api/ps`: the models loaded on every healthy backend, merged,
    /// asked of the backends at most once per [`PS_FRESH`].
    pub async fn ollama_ps(&self, snapshot: &Snapshot) -> Bytes {
        self.loaded(snapshot).await.merged.clone()
    }

    /// The last round of `/api/ps`, merged and per backend, asked again
    /// when older than [`PS_FRESH`].
    pub async fn loaded(&self, snapshot: &Snapshot) -> Arc<PsRound> {
        self.ps_cached(Instant::now, || async {
            Arc::new(loaded::ask(snapshot).await)
        })
        .await
    }

    /// The kept round while `clock` says it is fresh, else the one `fetch`
    /// gets. Callers that arrive during a fetch wait for it.
    async fn ps_cached<Fut>(
        &self,
        clock: impl Fn() -> Instant,
        fetch: impl FnOnce() -> Fut,
    ) -> Arc<PsRound>
    where
        Fut: Future<Output = Arc<PsRound>>,
    {
        let mut kept = self.ps.lock().await;
        if let Some((at, body)) = kept.as_ref() {
            if clock().saturating_duration_since(*at) < PS_FRESH {
                return body.clone();
            }
        }
        let body = fetch().await;
        *kept = Some((clock(), body.clone()));
        body
    }
}

/// Every model served by a healthy backend, once, in name order, followed
/// by the aliases whose target is among them. Where backends list one
/// model (also under two names, `llama3` and `llama3:latest`), their
/// entries are merged ([`entries::merge`]), the first backend's first.
/// Sorting, not pairwise comparison, so a fleet of long lists costs
/// O(n log n).
pub fn fleet_models(snapshot: &Snapshot) -> Vec<ModelEntry> {
    let healthy: Vec<(&Arc<Upstream>, Arc<Vec<ModelEntry>>)> = snapshot
        .pools
        .iter()
        .flat_map(|p| p.upstreams())
        .filter(|up| up.health.is_healthy())
        .filter_map(|up| Some((up, up.models.get()?)))
        .collect();
    // A backend's `model_map` makes it serve the requested names of the
    // models it lists, and those are what clients ask for.
    let mapped: Vec<ModelEntry> = healthy
        .iter()
        .flat_map(|(up, list)| {
            up.spec.model_map.iter().filter_map(|(requested, served)| {
                let entry = list.iter().find(|e| same_model(&e.name, served))?;
                Some(ModelEntry {
                    name: requested.clone(),
                    ..entry.clone()
                })
            })
        })
        .collect();
    let mut all: Vec<&ModelEntry> = healthy
        .iter()
        .flat_map(|(_, l)| l.iter())
        .chain(&mapped)
        .collect();
    // Stable, so the first backend's entry of a model stays first.
    all.sort_by(|a, b| base_name(&a.name).cmp(base_name(&b.name)));
    let mut models: Vec<ModelEntry> = all
        .chunk_by(|a, b| base_name(&a.name) == base_name(&b.name))
        .filter_map(|same| entries::merge(same.iter().copied()))
        .collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    let served: HashMap<&str, &ModelEntry> =
        models.iter().map(|e| (base_name(&e.name), e)).collect();
    let aliases: Vec<ModelEntry> = snapshot
        .config
        .models
        .aliases
        .iter()
        .filter(|(alias, _)| !served.contains_key(base_name(alias)))
        .filter_map(|(alias, target)| {
            let base = served.get(base_name(target))?;
            Some(ModelEntry {
                name: alias.clone(),
                ..(*base).clone()
            })
        })
        .collect();
    models.extend(aliases);
    models
}

/// `GET /v1/models`.
pub fn openai(models: &[ModelEntry]) -> Bytes {
    let data: Vec<Value> = models.iter().map(entries::openai).collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

/// `GET /api/tags`.
pub fn ollama_tags(models: &[ModelEntry]) -> Bytes {
    let list: Vec<Value> = models.iter().map(entries::ollama).collect();
    Bytes::from(json!({"models": list}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_in_paths() {
        assert_eq!(
            model_id("/v1/models/llama3.1:8b").as_deref(),
            Some("llama3.1:8b")
        );
        assert_eq!(
            model_id("/v1/models/Qwen/Qwen2.5-7B").as_deref(),
            Some("Qwen/Qwen2.5-7B")
        );
        assert_eq!(model_id("/v1/models/a%3Ab%2Fc").as_deref(), Some("a:b/c"));
        assert_eq!(model_id("/v1/models/"), None);
        assert_eq!(model_id("/v1/modelsx"), None);
    }
    use crate::balance::pool::Upstream;
    use crate::config::Config;
    use crate::state::SharedState;

    /// A snapshot of one unchecked pool of three backends.
    fn snapshot() -> Arc<Snapshot> {
        let yaml = "models:\n  aliases: { gpt-4o: llama3, codestral: qwen, ghost: nothing }\n\
                    pools:\n  p:\n    health_check: { type: none }\n    backends:\n\
                    \x20     - { url: \"http://127.0.0.1:10001\" }\n\
                    \x20     - { url: \"http://127.0.0.1:10002\" }\n\
                    \x20     - { url: \"http://127.0.0.1:10003\" }\n";
        SharedState::new(Config::from_yaml(yaml).expect("valid test config")).load_full()
    }

    fn up(snapshot: &Snapshot, i: usize) -> &Arc<Upstream> {
        &snapshot.pools[0].upstreams()[i]
    }

    fn named(names: &[&str]) -> Vec<ModelEntry> {
        names.iter().map(|n| ModelEntry::named(*n)).collect()
    }

    fn take_down(snapshot: &Snapshot, i: usize) {
        let spec = &snapshot.pools[0].spec.health;
        while up(snapshot, i)
            .health
            .begin_check()
            .unwrap()
            .observe(false, spec)
            != Some(false)
        {}
    }

    fn names(models: &[ModelEntry]) -> Vec<&str> {
        models.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn each_model_once_then_aliases_of_served_targets() {
        let s = snapshot();
        let mut a = named(&["qwen", "llama3:latest"]);
        a[1].ollama = Some(json!({"name": "llama3:latest", "size": 1}));
        up(&s, 0).models.set(a);
        let mut b = named(&["llama3", "codestral", "qwen"]);
        b[0].openai = Some(json!({"id": "llama3", "owned_by": "library", "created": 7}));
        up(&s, 1).models.set(b);
        // The third backend's list is not known yet: it adds nothing.
        let fleet = fleet_models(&s);
        assert_eq!(
            names(&fleet),
            ["codestral", "llama3:latest", "qwen", "gpt-4o"]
        );
        // One model listed by two backends has what each said of it.
        assert_eq!(fleet[1].ollama.as_ref().unwrap()["size"], 1);
        assert_eq!(fleet[1].openai.as_ref().unwrap()["created"], 7);
        // An alias takes its target's entries, listed under its own name.
        let tags: Value = serde_json::from_slice(&ollama_tags(&fleet)).unwrap();
        assert_eq!(tags["models"][3]["name"], "gpt-4o");
        assert_eq!(tags["models"][3]["size"], 1);
        let models: Value = serde_json::from_slice(&openai(&fleet)).unwrap();
        assert_eq!(models["data"][3]["id"], "gpt-4o");
        assert_eq!(models["data"][3]["created"], 7);
        assert_eq!(models["data"][3]["owned_by"], "library");

        take_down(&s, 0);
        assert_eq!(
            names(&fleet_models(&s)),
            ["codestral", "llama3", "qwen", "gpt-4o"]
        );
    }

    #[test]
    fn answers_are_built_once_per_change_of_the_backends() {
        let s = snapshot();
        let many = |prefix: &str| -> Vec<ModelEntry> {
            (0..10_000)
                .map(|i| ModelEntry::named(format!("{prefix}-{i:05}")))
                .collect()
        };
        up(&s, 0).models.set(many("a"));
        up(&s, 1).models.set(many("b"));
        let cache = &ListCache::default();
        let first = cache.openai(&s);
        let listed = |body: &Bytes| {
            let v: Value = serde_json::from_slice(body).unwrap();
            v["data"].as_array().unwrap().len()
        };
        assert_eq!(listed(&first), 20_000);
        // Asked again, the same bytes: nothing was rebuilt.
        assert_eq!(cache.openai(&s).as_ptr(), first.as_ptr());
        let tags = cache.ollama_tags(&s);
        assert_eq!(cache.ollama_tags(&s).as_ptr(), tags.as_ptr());

        // A backend's list changes: rebuilt.
        up(&s, 2).models.set(named(&["c"]));
        let second = cache.openai(&s);
        assert_eq!(listed(&second), 20_001);
        assert_eq!(cache.openai(&s).as_ptr(), second.as_ptr());

        // A backend goes down: rebuilt without its models.
        take_down(&s, 1);
        assert_eq!(listed(&cache.openai(&s)), 10_001);
        let v: Value = serde_json::from_slice(&cache.ollama_tags(&s)).unwrap();
        assert_eq!(v["models"].as_array().unwrap().len(), 10_001);
    }

    #[tokio::test]
    async fn api_ps_is_fetched_once_for_concurrent_callers_and_kept_briefly() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cache = Arc::new(ListCache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let start = Instant::now();
        let fetch = |fetches: Arc<AtomicUsize>, gate: Arc<tokio::sync::Notify>| async move {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            gate.notified().await;
            Arc::new(PsRound {
                merged: Bytes::from(n.to_string()),
                entries: Vec::new(),
                backends: Vec::new(),
            })
        };
        let arrived = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let (cache, fetches, gate, arrived) = (
                    cache.clone(),
                    fetches.clone(),
                    gate.clone(),
                    arrived.clone(),
                );
                tokio::spawn(async move {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    cache
                        .ps_cached(|| start, || fetch(fetches, gate))
                        .await
                        .merged
                        .clone()
                })
            })
            .collect();
        // Every caller has run up to its wait, one of them inside the fetch.
        while arrived.load(Ordering::SeqCst) < 10 || fetches.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), "1");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        // Fresh for PS_FRESH, then fetched again. (The gate is opened
        // ahead, so that a wrong fetch fails the test instead of hanging it.)
        gate.notify_one();
        let soon = start + PS_FRESH / 2;
        let got = cache.ps_cached(|| soon, || fetch(fetches.clone(), gate.clone()));
        assert_eq!(got.await.merged, "1");
        let later = start + PS_FRESH;
        let got = cache.ps_cached(|| later, || fetch(fetches.clone(), gate.clone()));
        assert_eq!(got.await.merged, "2");
    }
}
