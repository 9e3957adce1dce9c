//! The health service: runs the probes of every pool of the current
//! snapshot at each pool's interval, and records what they find, in each
//! backend's [`BackendHealth`] and in its circuit.
//!
//! [`check_new`] is the same work for the backends a reload adds, done
//! before the reload is published.
//!
//! [`BackendHealth`]: crate::health::BackendHealth

use crate::balance::pool::{pingora_backend, Pool, Upstream};
use crate::config::HealthKind;
use crate::health::probe::{check_once, probe};
use crate::state::{SharedState, Snapshot};
use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Checks every backend of `pool` once, concurrently, and records the results.
pub async fn check_pool(pool: Arc<Pool>) {
    check_some(&pool, |_| true).await
}

/// Checks, before a reloaded snapshot is published, every backend that no
/// check has seen yet (those a reload adds), so that a reload that replaces
/// a pool's backends does not leave it with none usable until the health
/// service comes round: at most one check's `timeout`.
pub async fn check_new(snapshot: &Snapshot) {
    let pools = snapshot
        .pools
        .iter()
        .map(|pool| check_some(pool, |up| up.health.is_unchecked()));
    futures_util::future::join_all(pools).await;
}

/// Checks the backends of `pool` that pass `which`.
async fn check_some(pool: &Pool, which: impl Fn(&Upstream) -> bool) {
    let spec = &pool.spec.health;
    let checks = pool
        .upstreams()
        .iter()
        .filter(|up| which(up))
        .filter_map(|up| {
            let probe = up.probe.get_or_init(|| probe(spec, &up.spec)).clone()?;
            let up = up.clone();
            let pool_name = pool.spec.name.clone();
            let spec = spec.clone();
            Some(async move {
                // Another round (the pool this one replaced) is checking it.
                let Some(turn) = up.health.begin_check() else {
                    return;
                };
                let target = pingora_backend(up.spec.addr, 1);
                let started = Instant::now();
                let result = check_once(probe.as_ref(), &target, spec.timeout).await;
                let took = started.elapsed();
                if result.is_ok() && up.circuit.check_passed() {
                    info!(
                        "pool {pool_name}: backend {} passed its health check: circuit closed",
                        up.spec.name
                    );
                }
                match (turn.finish(&result, took, &spec), result) {
                    (Some(true), _) => {
                        info!("pool {pool_name}: backend {} is healthy", up.spec.name)
                    }
                    (Some(false), Err(why)) => {
                        warn!(
                            "pool {pool_name}: backend {} is unhealthy: {why}",
                            up.spec.name
                        )
                    }
                    _ => {}
                }
            })
        });
    futures_util::future::join_all(checks).await;
}

/// The background service that drives [`check_pool`] for every pool of the
/// current routing state, each at its own interval.
pub struct HealthService {
    state: Arc<SharedState>,
}

impl HealthService {
    pub fn new(state: Arc<SharedState>) -> Self {
        HealthService { state }
    }
}

/// The longest the service sleeps: a bound for a pool whose next check
/// time cannot be represented (an interval past the clock's end).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Next due time per pool, keyed by the pool's id, which is new for
        // every pool a reload builds, so that a reloaded pool is checked at once.
        let mut due: HashMap<u64, Instant> = HashMap::new();
        let mut published = self.state.subscribe();
        loop {
            published.borrow_and_update();
            let snapshot = self.state.load();
            let now = Instant::now();
            let mut next = now.checked_add(LONGEST_SLEEP).unwrap_or(now);
            let mut live = Vec::with_capacity(snapshot.pools.len());
            for pool in snapshot.pools.iter() {
                if matches!(pool.spec.health.kind, HealthKind::None) {
                    continue;
                }
                let id = pool.id;
                live.push(id);
                let at = due.entry(id).or_insert(now);
                if *at <= now {
                    *at = now.checked_add(pool.spec.health.interval).unwrap_or(next);
                    let pool = pool.clone();
                    // A backend whose previous check still runs is skipped
                    // by this round (its `CheckTurn`), so rounds never pile up.
                    tokio::spawn(check_pool(pool));
                }
                next = next.min(*at);
            }
            due.retain(|id, _| live.contains(id));
            drop(snapshot);
            // Until a pool is due, or a reload publishes new pools.
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = published.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
