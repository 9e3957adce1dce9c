//! The routing state: an immutable snapshot of routes and pools, and the
//! shared handle through which requests read it and reloads replace it.
//!
//! Requests take one snapshot at their start and keep it to their end, so a
//! reload never changes the pool or backends under a running request. A new
//! snapshot is built off to the side from a validated [`Config`], carrying
//! over what is known of every backend that stays (keyed by pool and
//! address), and published with one atomic store.
//!
//! # Layout
//! - [`diff`]: what a reload changes, computed once.
//! - [`build`]: a snapshot from a configuration, and what it carries over.

mod build;
pub mod diff;

pub use diff::SnapshotDiff;

use crate::balance::pool::{Pool, Upstream};
use crate::config::Config;
use crate::routing::Router;
use arc_swap::{ArcSwap, Guard};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Everything a request needs to be routed, frozen.
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    pub config: Arc<Config>,
    /// In the order of `config.pools`.
    pub pools: Vec<Arc<Pool>>,
    pub router: Router,
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
    /// The generation of the current snapshot, for background services to
    /// wait on instead of polling.
    published: tokio::sync::watch::Sender<u64>,
    /// Source of pool ids, unique for the life of the process.
    next_pool_id: AtomicU64,
}

impl SharedState {
    /// The state at start: every backend is assumed healthy until checked.
    pub fn new(config: Config) -> Arc<Self> {
        let next_pool_id = AtomicU64::new(1);
        let snapshot = build::build(&config, None, 1, &next_pool_id);
        Arc::new(SharedState {
            current: ArcSwap::from_pointee(snapshot),
            published: tokio::sync::watch::Sender::new(1),
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

    /// Builds the snapshot that would replace the current one with
    /// `config`, and what changes, without publishing it.
    pub fn prepare(&self, config: Config) -> (Snapshot, SnapshotDiff) {
        let old = self.load_full();
        let diff = SnapshotDiff::between(&old.config, &config);
        let next = build::build(
            &config,
            Some((&old, &diff)),
            old.generation + 1,
            &self.next_pool_id,
        );
        (next, diff)
    }

    /// Makes `next` the current snapshot.
    pub fn publish(&self, next: Snapshot) {
        let generation = next.generation;
        self.current.store(Arc::new(next));
        self.published.send_replace(generation);
    }

    /// Changes whenever a new snapshot is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }
}
