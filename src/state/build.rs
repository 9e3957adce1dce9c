//! Building a snapshot, and what it carries over from the one it replaces.
//!
//! Everything that belongs to a backend rather than to a configuration
//! follows the backend (pool name and address) from snapshot to snapshot:
//! its health, its circuit (unless the pool's `circuit` settings changed),
//! its in-flight count, its last minute of requests, and its model list. A pool's queue and in-flight
//! table follow the pool's name whatever else changes, so a request that
//! holds a slot is never forgotten by a reload and a cap is never exceeded.

use super::diff::SnapshotDiff;
use super::Snapshot;
use crate::balance::pool::{Pool, PoolShared};
use crate::config::{BackendSpec, Config, HealthKind};
use crate::health::circuit::Circuit;
use crate::health::BackendHealth;
use crate::models::BackendModels;
use crate::routing::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A snapshot of `config`; `previous`, with what changes from it, supplies
/// what carries over.
pub(super) fn build(
    config: &Config,
    previous: Option<(&Snapshot, &SnapshotDiff)>,
    generation: u64,
    ids: &AtomicU64,
) -> Snapshot {
    let diff = previous.map(|(_, d)| d);
    let previous = previous.map(|(s, _)| s);
    // Model lists are per address, whatever pools list it.
    let mut known: HashMap<SocketAddr, Arc<BackendModels>> = HashMap::new();
    for pool in previous.map(|s| s.pools.as_slice()).unwrap_or_default() {
        for up in pool.upstreams() {
            if up.spec.models.is_none() {
                known
                    .entry(up.spec.addr)
                    .or_insert_with(|| up.models.clone());
            }
        }
    }
    let known = std::cell::RefCell::new(known);
    let models_of = |b: &BackendSpec| match &b.models {
        Some(fixed) => Arc::new(BackendModels::fixed(fixed)),
        None => known
            .borrow_mut()
            .entry(b.addr)
            .or_insert_with(|| Arc::new(BackendModels::default()))
            .clone(),
    };
    let pools = config
        .pools
        .iter()
        .map(|spec| {
            let before = previous.and_then(|s| s.pool(&spec.name));
            let changed = |key: &str| {
                diff.and_then(|d| d.pool(&spec.name))
                    .is_some_and(|p| p.changed(key))
            };
            let checked = !matches!(spec.health.kind, HealthKind::None);
            let same_backend = |b: &BackendSpec| before.and_then(|p| p.upstream(b.addr));
            let health_of = |b: &BackendSpec| {
                same_backend(b)
                    .filter(|_| checked)
                    .map(|u| u.health.clone())
                    // At start every backend is assumed up so the proxy serves
                    // at once; one added by a reload must pass a check first.
                    .unwrap_or_else(|| Arc::new(BackendHealth::new(previous.is_none() || !checked)))
            };
            // A circuit carries over unless its thresholds changed.
            let circuit_changed = changed("circuit");
            let circuit_of = |b: &BackendSpec| {
                same_backend(b)
                    .filter(|_| !circuit_changed)
                    .map(|u| u.circuit.clone())
                    .unwrap_or_else(|| Arc::new(Circuit::new(spec.circuit.clone())))
            };
            let window_of = |b: &BackendSpec| {
                same_backend(b)
                    .map(|u| u.window.clone())
                    .unwrap_or_default()
            };
            // In-flight counts and the queue follow the pool's name, new
            // queue settings included: waiters stay in line and slots held
            // stay counted.
            let shared = match before {
                Some(p) => {
                    if changed("queue") {
                        p.shared.queue.set_spec(spec.queue.clone());
                    }
                    p.shared.clone()
                }
                None => PoolShared::new(spec.queue.clone()),
            };
            Arc::new(Pool::new(
                ids.fetch_add(1, Ordering::Relaxed),
                spec.clone(),
                shared,
                health_of,
                models_of,
                circuit_of,
                window_of,
            ))
        })
        .collect();
    Snapshot {
        generation,
        router: Router::new(&config.routes, &config.pools),
        config: Arc::new(config.clone()),
        pools,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::state::SharedState;
    use std::sync::Arc;

    fn config(pool_extra: &str) -> Config {
        Config::from_yaml(&format!(
            "pools:\n  chat:\n{pool_extra}    backends:\n      - {{ name: a, url: \"http://127.0.0.1:9001\" }}\n"
        ))
        .unwrap()
    }

    #[test]
    fn what_follows_a_backend_across_a_reload() {
        let state = SharedState::new(config(""));
        let old = state.load_full();
        let before = old.pools[0].upstreams()[0].clone();
        // New queue and circuit settings for the same backend.
        let (next, diff) = state.prepare(config(
            "    queue: { max: 3 }\n    circuit: { cooldown: 20s }\n",
        ));
        let after = next.pools[0].upstreams()[0].clone();
        assert!(diff
            .pool("chat")
            .is_some_and(|p| p.changed("queue") && p.changed("circuit")));
        assert!(Arc::ptr_eq(&before.health, &after.health), "health follows");
        assert!(
            Arc::ptr_eq(&before.models, &after.models),
            "the model list follows"
        );
        assert!(
            Arc::ptr_eq(&old.pools[0].shared, &next.pools[0].shared),
            "in-flight counts and the queue follow the pool, new settings and all"
        );
        assert!(Arc::ptr_eq(&before.in_flight, &after.in_flight));
        assert!(
            Arc::ptr_eq(&before.window, &after.window),
            "the last minute of requests follows"
        );
        assert!(
            !Arc::ptr_eq(&before.circuit, &after.circuit),
            "a circuit with new thresholds starts afresh"
        );
        assert_eq!(next.generation, old.generation + 1);
    }

    #[test]
    fn a_backend_a_reload_adds_waits_for_its_first_check() {
        let state = SharedState::new(config(""));
        let (next, _) = state.prepare(
            Config::from_yaml(
                "pools:\n  chat:\n    backends:\n      - { name: a, url: \"http://127.0.0.1:9001\" }\n\
                 \x20     - { name: b, url: \"http://127.0.0.1:9002\" }\n",
            )
            .unwrap(),
        );
        let ups = next.pools[0].upstreams();
        assert!(ups[0].health.is_healthy() && !ups[0].health.is_unchecked());
        assert!(!ups[1].health.is_healthy() && ups[1].health.is_unchecked());
    }
}
