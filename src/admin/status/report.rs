//! The `/status` document: what it says, field by field, and how it is
//! read from the routing snapshot and the records kept beside it.
//!
//! The document is built per request from state that already exists:
//! each backend's health, circuit, in-flight count, last minute of
//! requests and model list, each pool's queue, the reload history and the
//! last round of `/api/ps`. Nothing here is kept up to date for it.
//! Times are Unix seconds (fractions included), durations are named for
//! their unit (`_ms`, `_s`); the README's Status section lists the fields.

use crate::balance::pool::{Pool, Upstream};
use crate::config::{HealthKind, RouteSpec};
use crate::health::circuit::CircuitState;
use crate::health::state::CheckRecord;
use crate::lifecycle::history::ConfigHistory;
use crate::metrics::window;
use crate::models::loaded::{LoadedModel, PsRound};
use crate::state::Snapshot;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most model names listed per backend; `models_count` has them all.
/// An Ollama server holds tens of models; a backend that lists thousands
/// would otherwise make every refresh of the page megabytes long.
pub const MAX_MODELS_LISTED: usize = 200;

/// Everything `/status` says.
#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    /// When the document was made.
    pub now: f64,
    pub uptime_s: f64,
    /// Requests the proxy is serving, queued ones included.
    pub requests_in_flight: usize,
    pub config: ConfigStatus,
    pub pools: Vec<PoolStatus>,
    /// In the order they are tried; the first match wins.
    pub routes: Vec<RouteStatus>,
}

#[derive(Debug, Serialize)]
pub struct ConfigStatus {
    /// The file SIGHUP re-reads; `null` without one (the demo).
    pub path: Option<String>,
    /// The routing snapshot in force: 1 at start, one more per reload.
    pub generation: u64,
    pub started_at: f64,
    pub last_reload: Option<ReloadStatus>,
    pub last_failed_reload: Option<FailedReload>,
}

#[derive(Debug, Serialize)]
pub struct ReloadStatus {
    pub at: f64,
    pub generation: u64,
    /// What changed, as logged (`+chat/gpu-4, -chat/gpu-2`).
    pub summary: String,
    /// Changed keys that only a restart applies.
    pub needs_restart: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FailedReload {
    pub at: f64,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub strategy: &'static str,
    /// Requests waiting in the pool's queue for a backend below its cap.
    pub queued: usize,
    pub queue_max: usize,
    /// `http`, `tcp` or `none`.
    pub health_check: &'static str,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub url: String,
    pub weight: usize,
    pub priority: u32,
    /// At a glance: `up`; `down` (failing its active checks); `unchecked`
    /// (added by a reload, not checked yet); `ejected` (its circuit is
    /// open or half-open: real requests failed); `drained` (weight 0).
    pub state: &'static str,
    /// Passing its active checks (always, with `health_check: none`).
    pub healthy: bool,
    pub last_check: Option<CheckStatus>,
    /// The last check that failed, kept after later ones pass.
    pub last_failed_check: Option<CheckStatus>,
    pub circuit: CircuitStatus,
    pub in_flight: usize,
    /// `max_in_flight`; `null` is no cap.
    pub max_in_flight: Option<usize>,
    pub last_minute: WindowStatus,
    /// The models it serves (its discovered or configured list, at most
    /// [`MAX_MODELS_LISTED`]); `null` while not known yet.
    pub models: Option<Vec<String>>,
    pub models_count: Option<usize>,
    /// What it has loaded now, from its `/api/ps`; `null` for a backend
    /// that does not answer it (not Ollama, or down).
    pub loaded: Option<Vec<LoadedStatus>>,
}

#[derive(Debug, Serialize)]
pub struct CheckStatus {
    pub at: f64,
    pub took_ms: f64,
    /// `null` when it passed.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CircuitStatus {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Open: seconds until a probe request may be let through (0 when the
    /// cooldown has passed and the next request will be the probe).
    pub closes_in_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct WindowStatus {
    /// The seconds the figures cover (60, or less just after start).
    pub seconds: u64,
    /// Requests sent to it, attempts retried on another backend included.
    pub requests: u64,
    pub requests_per_s: f64,
    /// Those that failed at it: a 5xx, no answer, a timeout, or an answer
    /// that made Switchyard retry the request elsewhere.
    pub errors: u64,
    /// `errors / requests`; `null` without a request.
    pub error_rate: Option<f64>,
    /// Time to first token of streamed responses; `null` without one.
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    /// Completion tokens.
    pub tokens: u64,
    pub tokens_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct LoadedStatus {
    pub name: String,
    pub size_vram: Option<u64>,
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RouteStatus {
    pub path_prefix: Option<String>,
    pub header: Option<HeaderStatus>,
    pub model: Option<String>,
    pub pool: String,
}

#[derive(Debug, Serialize)]
pub struct HeaderStatus {
    pub name: String,
    pub regex: String,
}

/// What the document is read from, besides the snapshot.
pub struct Inputs<'a> {
    pub history: &'a ConfigHistory,
    pub loaded: &'a PsRound,
    pub requests_in_flight: usize,
    /// `std`'s clock for the request windows, which record with it.
    pub now: std::time::Instant,
    /// Tokio's clock for the circuits, which run on it.
    pub circuit_now: tokio::time::Instant,
}

impl Status {
    pub fn read(snapshot: &Snapshot, inputs: &Inputs) -> Status {
        let history = inputs.history;
        let config = ConfigStatus {
            path: history.path.as_ref().map(|p| p.display().to_string()),
            generation: snapshot.generation,
            started_at: unix(history.started),
            last_reload: history.last_applied.as_ref().map(|r| ReloadStatus {
                at: unix(r.at),
                generation: r.generation,
                summary: r.summary.clone(),
                needs_restart: r.needs_restart.clone(),
            }),
            last_failed_reload: history.last_failed.as_ref().map(|f| FailedReload {
                at: unix(f.at),
                errors: f.errors.clone(),
            }),
        };
        let now = SystemTime::now();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            now: unix(now),
            uptime_s: now
                .duration_since(history.started)
                .unwrap_or_default()
                .as_secs_f64(),
            requests_in_flight: inputs.requests_in_flight,
            config,
            pools: snapshot
                .pools
                .iter()
                .map(|p| pool_status(p, inputs))
                .collect(),
            routes: snapshot.config.routes.iter().map(route_status).collect(),
        }
    }
}

fn pool_status(pool: &Pool, inputs: &Inputs) -> PoolStatus {
    let spec = &pool.spec;
    PoolStatus {
        name: spec.name.clone(),
        strategy: spec.strategy.name(),
        queued: pool.shared.queue.waiting(),
        queue_max: spec.queue.max,
        health_check: match spec.health.kind {
            HealthKind::Http { .. } => "http",
            HealthKind::Tcp => "tcp",
            HealthKind::None => "none",
        },
        backends: pool
            .upstreams()
            .iter()
            .map(|up| backend_status(up, inputs))
            .collect(),
    }
}

fn backend_status(up: &Upstream, inputs: &Inputs) -> BackendStatus {
    let spec = &up.spec;
    let healthy = up.health.is_healthy();
    let circuit = up.circuit.state();
    let state = if !healthy && up.health.is_unchecked() {
        "unchecked"
    } else if !healthy {
        "down"
    } else if circuit != CircuitState::Closed {
        "ejected"
    } else if spec.weight == 0 {
        "drained"
    } else {
        "up"
    };
    let checks = up.health.history();
    let models = up.models.get();
    BackendStatus {
        name: spec.name.clone(),
        url: spec.url.clone(),
        weight: spec.weight,
        priority: spec.priority,
        state,
        healthy,
        last_check: checks.last.as_ref().map(check_status),
        last_failed_check: checks.last_failure.as_ref().map(check_status),
        circuit: CircuitStatus {
            state: circuit.as_str(),
            closes_in_s: match circuit {
                CircuitState::Open { until } => Some(
                    until
                        .saturating_duration_since(inputs.circuit_now)
                        .as_secs_f64(),
                ),
                _ => None,
            },
        },
        in_flight: up.in_flight.current(),
        max_in_flight: spec.max_in_flight,
        last_minute: window_status(&up.window.summary(inputs.now)),
        models_count: models.as_ref().map(|m| m.len()),
        models: models.map(|m| {
            m.iter()
                .take(MAX_MODELS_LISTED)
                .map(|e| e.name.clone())
                .collect()
        }),
        loaded: inputs
            .loaded
            .of(spec.addr)
            .filter(|_| healthy)
            .map(|list| list.iter().map(loaded_status).collect()),
    }
}

fn check_status(c: &CheckRecord) -> CheckStatus {
    CheckStatus {
        at: unix(c.at),
        took_ms: millis(c.took),
        error: c.error.clone(),
    }
}

fn window_status(s: &window::Summary) -> WindowStatus {
    WindowStatus {
        seconds: s.seconds,
        requests: s.requests,
        requests_per_s: s.requests_per_second(),
        errors: s.errors,
        error_rate: s.error_rate(),
        ttft_p50_ms: s.ttft_p50.map(|t| t * 1000.0),
        ttft_p95_ms: s.ttft_p95.map(|t| t * 1000.0),
        tokens: s.tokens,
        tokens_per_s: s.tokens_per_second(),
    }
}

fn loaded_status(m: &LoadedModel) -> LoadedStatus {
    LoadedStatus {
        name: m.name.clone(),
        size_vram: m.size_vram,
        expires_at: m.expires_at.clone(),
    }
}

fn route_status(r: &RouteSpec) -> RouteStatus {
    RouteStatus {
        path_prefix: r.path_prefix.clone(),
        header: r.header.as_ref().map(|h| HeaderStatus {
            name: h.name.clone(),
            regex: h.regex.as_str().to_string(),
        }),
        model: r.model.clone(),
        pool: r.pool.clone(),
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::lifecycle::history::ReloadHistory;
    use crate::metrics::window::Sample;
    use crate::models::ModelEntry;
    use crate::state::SharedState;
    use serde_json::Value;

    fn snapshot() -> std::sync::Arc<Snapshot> {
        let yaml = "pools:\n  chat:\n    strategy: least_connections\n    backends:\n\
                    \x20     - { name: a, url: \"http://127.0.0.1:9001\", max_in_flight: 4 }\n\
                    \x20     - { name: b, url: \"http://127.0.0.1:9002\", weight: 3, priority: 2 }\n\
                    \x20     - { name: c, url: \"http://127.0.0.1:9003\", weight: 0 }\n\
                    routes:\n  - { path_prefix: /api, header: { name: X-Team, regex: \"^ml$\" }, pool: chat }\n\
                    \x20 - { model: \"qwen*\", pool: chat }\n";
        SharedState::new(Config::from_yaml(yaml).unwrap()).load_full()
    }

    fn read(s: &Snapshot, history: &ReloadHistory, loaded: &PsRound) -> Value {
        let history = history.get();
        let inputs = Inputs {
            history: &history,
            loaded,
            requests_in_flight: 2,
            now: std::time::Instant::now(),
            circuit_now: tokio::time::Instant::now(),
        };
        serde_json::to_value(Status::read(s, &inputs)).unwrap()
    }

    #[test]
    fn the_document_says_what_the_state_is() {
        let s = snapshot();
        let ups = s.pools[0].upstreams();
        let (a, b) = (&ups[0], &ups[1]);
        let _slot = a.in_flight.acquire();
        a.models
            .set(vec![ModelEntry::named("llama3"), ModelEntry::named("qwen")]);
        a.window.record(
            std::time::Instant::now(),
            Sample {
                error: false,
                ttft: Some(Duration::from_millis(40)),
                tokens: 30,
            },
        );
        b.circuit.open_for(Duration::from_secs(30));
        let history = ReloadHistory::new(Some("/etc/switchyard/switchyard.yaml".into()));
        history.failed(vec![
            "pools.chat.retries: 99 is more than the maximum 16".into()
        ]);
        let loaded = PsRound {
            merged: Default::default(),
            entries: Vec::new(),
            backends: vec![(
                a.spec.addr,
                Some(vec![LoadedModel {
                    name: "llama3".into(),
                    size_vram: Some(5),
                    expires_at: None,
                }]),
            )],
        };
        let v = read(&s, &history, &loaded);

        assert_eq!(v["requests_in_flight"], 2);
        assert_eq!(v["config"]["generation"], 1);
        assert_eq!(v["config"]["path"], "/etc/switchyard/switchyard.yaml");
        assert_eq!(v["config"]["last_reload"], Value::Null);
        assert_eq!(
            v["config"]["last_failed_reload"]["errors"][0],
            "pools.chat.retries: 99 is more than the maximum 16"
        );
        let pool = &v["pools"][0];
        assert_eq!(
            (&pool["name"], &pool["strategy"], &pool["queued"]),
            (&"chat".into(), &"least_connections".into(), &0.into())
        );
        let a = &pool["backends"][0];
        assert_eq!(a["state"], "up");
        assert_eq!(
            (&a["in_flight"], &a["max_in_flight"]),
            (&1.into(), &4.into())
        );
        assert_eq!(a["models"], serde_json::json!(["llama3", "qwen"]));
        assert_eq!(a["loaded"][0]["name"], "llama3");
        assert_eq!(a["last_minute"]["requests"], 1);
        assert_eq!(a["last_minute"]["tokens"], 30);
        let p50 = a["last_minute"]["ttft_p50_ms"].as_f64().unwrap();
        assert!((32.0..=41.0).contains(&p50), "{p50}");
        assert_eq!(a["last_check"], Value::Null, "not checked yet");

        let b = &pool["backends"][1];
        assert_eq!(
            (&b["state"], &b["weight"], &b["priority"]),
            (&"ejected".into(), &3.into(), &2.into())
        );
        assert_eq!(b["circuit"]["state"], "open");
        let closes = b["circuit"]["closes_in_s"].as_f64().unwrap();
        assert!((29.0..=30.0).contains(&closes), "{closes}");
        assert_eq!((&b["models"], &b["loaded"]), (&Value::Null, &Value::Null));
        assert_eq!(b["max_in_flight"], Value::Null);
        assert_eq!(b["last_minute"]["error_rate"], Value::Null);

        assert_eq!(pool["backends"][2]["state"], "drained");

        assert_eq!(v["routes"][0]["path_prefix"], "/api");
        assert_eq!(v["routes"][0]["header"]["name"], "x-team");
        assert_eq!(v["routes"][0]["header"]["regex"], "^ml$");
        assert_eq!(v["routes"][1]["model"], "qwen*");
        assert_eq!(v["routes"][1]["pool"], "chat");
    }

    #[test]
    fn down_and_unchecked_backends() {
        let s = snapshot();
        let a = &s.pools[0].upstreams()[0];
        let spec = &s.pools[0].spec.health;
        let refused = Err("Connection refused".to_string());
        while a
            .health
            .begin_check()
            .unwrap()
            .finish(&refused, Duration::from_millis(2), spec)
            != Some(false)
        {}
        let history = ReloadHistory::new(None);
        history.applied(2, "+chat/c".into(), &["server.listen"]);
        let v = read(&s, &history, &PsRound::default());
        let a = &v["pools"][0]["backends"][0];
        assert_eq!(
            (&a["state"], &a["healthy"]),
            (&"down".into(), &false.into())
        );
        assert_eq!(a["last_check"]["error"], "Connection refused");
        assert_eq!(a["last_failed_check"]["error"], "Connection refused");
        assert_eq!(a["last_check"]["took_ms"], 2.0);
        assert_eq!(v["config"]["path"], Value::Null);
        assert_eq!(v["config"]["last_reload"]["summary"], "+chat/c");
        assert_eq!(
            v["config"]["last_reload"]["needs_restart"][0],
            "server.listen"
        );
    }
}
