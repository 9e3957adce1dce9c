//! The routing state: an immutable snapshot of routes and pools, and the
//! shared handle through which requests read it and reloads replace it.
//!
//! Requests take one snapshot at their start and keep it to their end, so a
//! reload never changes the pool or backends under a running request. A new
//! snapshot is built off to the side from a validated [`Config`], carrying
//! over the health of every backend that stays (keyed by pool and address),
//! and published with one atomic store.

use crate::circuit::Circuit;
use crate::config::{BackendSpec, Config, HealthKind};
use crate::health::BackendHealth;
use crate::models::lists::ListCache;
use crate::models::BackendModels;
use crate::pool::{Pool, PoolShared, Upstream};
use crate::route::Router;
use arc_swap::{ArcSwap, Guard};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Everything a request needs to be routed, frozen.
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    pub config: Arc<Config>,
    /// In the order of `config.pools`.
    pub pools: Vec<Arc<Pool>>,
    pub router: Router,
    /// The model lists Switchyard answers, built once per change of the
    /// backends rather than per request; a new snapshot starts it empty.
    pub lists: ListCache,
}

impl Snapshot {
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.spec.name == name)
    }

    /// The backends of every pool that pass `keep`, once per address, for
    /// work done per server rather than per pool (model lists, `/api/ps`).
    pub fn backends(&self, keep: impl Fn(&Upstream) -> bool) -> Vec<Arc<Upstream>> {
        let mut out: Vec<Arc<Upstream>> = Vec::new();
        for up in self.pools.iter().flat_map(|p| p.upstreams()) {
            if keep(up) && !out.iter().any(|o| o.spec.addr == up.spec.addr) {
                out.push(up.clone());
            }
        }
        out
    }
}

/// The current snapshot, shared by the proxy, the health checker and the
/// reloader.
pub struct SharedState {
    current: ArcSwap<Snapshot>,
    /// Source of pool ids, unique for the life of the process.
    next_pool_id: AtomicU64,
}

impl SharedState {
    /// The state at start: every backend is assumed healthy until checked.
    pub fn new(config: Config) -> Arc<Self> {
        let next_pool_id = AtomicU64::new(1);
        let snapshot = build(&config, None, 1, &next_pool_id);
        Arc::new(SharedState {
            current: ArcSwap::from_pointee(snapshot),
            next_pool_id,
        })
    }

    /// The current snapshot, cheaply, for the duration of a short borrow.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, to keep for as long as a request lasts.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Builds a snapshot from `config`, carrying health over from the
    /// current one, publishes it and returns the one it replaced.
    pub fn replace(&self, config: Config) -> Arc<Snapshot> {
        let old = self.load_full();
        let next = build(&config, Some(&old), old.generation + 1, &self.next_pool_id);
        self.current.swap(Arc::new(next))
    }
}

fn build(
    config: &Config,
    previous: Option<&Snapshot>,
    generation: u64,
    ids: &AtomicU64,
) -> Snapshot {
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
            let circuit_of = |b: &BackendSpec| {
                same_backend(b)
                    .map(|u| u.circuit.clone())
                    .filter(|c| *c.spec() == spec.circuit)
                    .unwrap_or_else(|| Arc::new(Circuit::new(spec.circuit.clone())))
            };
            // In-flight counts and the queue carry over by pool name; new
            // queue settings start both afresh.
            let shared = before
                .map(|p| p.shared.clone())
                .filter(|s| *s.queue.spec() == spec.queue)
                .unwrap_or_else(|| PoolShared::new(spec.queue.clone()));
            Arc::new(Pool::new(
                ids.fetch_add(1, Ordering::Relaxed),
                spec.clone(),
                shared,
                health_of,
                models_of,
                circuit_of,
            ))
        })
        .collect();
    Snapshot {
        generation,
        router: Router::new(&config.routes, &config.pools),
        config: Arc::new(config.clone()),
        pools,
        lists: ListCache::default(),
    }
}
