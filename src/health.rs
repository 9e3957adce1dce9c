//! Is each backend up? Active health checks and the state they drive.
//!
//! Each backend has a [`BackendHealth`], shared by `Arc` between routing
//! snapshots so that a reload keeps what is known about a backend that stays.
//! The probe itself is Pingora's: [`TcpHealthCheck`] or [`HttpHealthCheck`],
//! one per backend so the HTTP probe carries the backend's own `Host`. The
//! thresholds (how many checks in a row flip the state) are applied here,
//! not by Pingora, because the state must outlive the selector it was
//! measured for.
//!
//! [`HealthService`] is the Pingora background service that runs the probes
//! of every pool of the current snapshot at each pool's interval.

use crate::config::{BackendSpec, HealthKind, HealthSpec};
use crate::pool::{pingora_backend, Pool, Upstream};
use crate::state::{SharedState, Snapshot};
use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::ResponseHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The health of one backend, as the checks have seen it.
#[derive(Debug)]
pub struct BackendHealth {
    /// Read on every request: whether the backend may be selected.
    healthy: AtomicBool,
    /// Passing checks in a row while unhealthy.
    successes: AtomicUsize,
    /// Failing checks in a row while healthy.
    failures: AtomicUsize,
    /// Not checked yet: the first check decides alone, whatever the thresholds.
    fresh: AtomicBool,
    /// A check of this backend is running. [`BackendHealth::observe`] is a
    /// read-modify-write over the counters above that is right only with one
    /// observer; after a reload, the old pool's round and the new pool's
    /// first check could both reach the same backend, so a check starts only
    /// through [`BackendHealth::begin_check`], which admits one at a time.
    checking: AtomicBool,
}

/// The one check of a backend that may run now; ends when dropped.
#[derive(Debug)]
pub struct CheckTurn<'a>(&'a BackendHealth);

impl CheckTurn<'_> {
    /// Records the check's result. Returns `Some(new state)` when it flipped.
    pub fn observe(self, passed: bool, spec: &HealthSpec) -> Option<bool> {
        self.0.observe(passed, spec)
    }
}

impl Drop for CheckTurn<'_> {
    fn drop(&mut self) {
        self.0.checking.store(false, Ordering::Release);
    }
}

impl BackendHealth {
    /// A backend known at start is assumed up until a check says otherwise,
    /// so the proxy serves at once; one added by a reload starts down and is
    /// used only after its first passing check.
    pub fn new(healthy: bool) -> Self {
        BackendHealth {
            healthy: AtomicBool::new(healthy),
            successes: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            fresh: AtomicBool::new(!healthy),
            checking: AtomicBool::new(false),
        }
    }

    /// The right to check this backend now, unless a check already runs.
    pub fn begin_check(&self) -> Option<CheckTurn<'_>> {
        self.checking
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(CheckTurn(self))
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Added by a reload and not checked yet.
    pub fn is_unchecked(&self) -> bool {
        self.fresh.load(Ordering::Relaxed)
    }

    /// Records one check; only through a [`CheckTurn`].
    fn observe(&self, passed: bool, spec: &HealthSpec) -> Option<bool> {
        let healthy = self.is_healthy();
        if self.fresh.swap(false, Ordering::Relaxed) {
            self.healthy.store(passed, Ordering::Relaxed);
            return (passed != healthy).then_some(passed);
        }
        if passed {
            self.failures.store(0, Ordering::Relaxed);
            if healthy {
                return None;
            }
            let n = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= spec.healthy_threshold {
                self.successes.store(0, Ordering::Relaxed);
                self.healthy.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.successes.store(0, Ordering::Relaxed);
            if !healthy {
                return None;
            }
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= spec.unhealthy_threshold {
                self.failures.store(0, Ordering::Relaxed);
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }
}

/// Builds the probe for one backend, or `None` for `type: none`.
pub fn probe(
    spec: &HealthSpec,
    backend: &BackendSpec,
) -> Option<Arc<dyn HealthCheck + Send + Sync>> {
    match &spec.kind {
        HealthKind::None => None,
        HealthKind::Tcp => {
            let mut check = TcpHealthCheck::default();
            check.peer_template.options.connection_timeout = Some(spec.timeout);
            Some(Arc::new(check))
        }
        HealthKind::Http {
            path,
            expect_status,
        } => {
            let host = backend.host();
            let mut check = HttpHealthCheck::new(host, false);
            check.peer_template.options.connection_timeout = Some(spec.timeout);
            check.peer_template.options.read_timeout = Some(spec.timeout);
            // A fresh connection each time: a reused one can hide a backend
            // that no longer accepts.
            check.reuse_connection = false;
            if let Ok(uri) = path.parse() {
                check.req.set_uri(uri);
            }
            let expect = *expect_status;
            check.validator = Some(Box::new(move |resp: &ResponseHeader| {
                let status = resp.status.as_u16();
                let ok = match expect {
                    Some(want) => status == want,
                    None => resp.status.is_success(),
                };
                if ok {
                    Ok(())
                } else {
                    pingora_error::Error::e_explain(
                        pingora_error::ErrorType::HTTPStatus(status),
                        "health check status",
                    )
                }
            }));
            Some(Arc::new(check))
        }
    }
}

/// Runs one probe with the pool's timeout over the whole check.
async fn check_once(
    check: &(dyn HealthCheck + Send + Sync),
    addr: &Backend,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, check.check(addr)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

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
            let probe = up.probe.clone()?;
            let up = up.clone();
            let pool_name = pool.spec.name.clone();
            let spec = spec.clone();
            Some(async move {
                // Another round (the pool this one replaced) is checking it.
                let Some(turn) = up.health.begin_check() else {
                    return;
                };
                let target = pingora_backend(up.spec.addr, 1);
                let result = check_once(probe.as_ref(), &target, spec.timeout).await;
                if result.is_ok() && up.circuit.check_passed() {
                    info!(
                        "pool {pool_name}: backend {} passed its health check: circuit closed",
                        up.spec.name
                    );
                }
                match (turn.observe(result.is_ok(), &spec), result) {
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

/// How often the service looks for a changed snapshot or a due pool when no
/// pool is due sooner. Bounds how long a reloaded pool waits for its first
/// check.
const RESCAN: Duration = Duration::from_millis(250);

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Next due time per pool, keyed by the pool's id, which is new for
        // every pool a reload builds, so that a reloaded pool is checked at once.
        let mut due: HashMap<u64, Instant> = HashMap::new();
        loop {
            let snapshot = self.state.load();
            let now = Instant::now();
            let mut next = now + RESCAN;
            let mut live = Vec::with_capacity(snapshot.pools.len());
            for pool in snapshot.pools.iter() {
                if matches!(pool.spec.health.kind, HealthKind::None) {
                    continue;
                }
                let id = pool.id;
                live.push(id);
                let at = due.entry(id).or_insert(now);
                if *at <= now {
                    *at = now
                        .checked_add(pool.spec.health.interval)
                        .unwrap_or(now + RESCAN);
                    let pool = pool.clone();
                    // A backend whose previous check still runs is skipped
                    // by this round (its `CheckTurn`), so rounds never pile up.
                    tokio::spawn(check_pool(pool));
                }
                next = next.min(*at);
            }
            due.retain(|id, _| live.contains(id));
            drop(snapshot);
            tokio::select! {
                _ = tokio::time::sleep_until(next.max(now + Duration::from_millis(10))) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> HealthSpec {
        HealthSpec {
            kind: HealthKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }

    #[test]
    fn one_check_of_a_backend_at_a_time() {
        let h = BackendHealth::new(true);
        let turn = h.begin_check().expect("nobody checks yet");
        assert!(h.begin_check().is_none(), "a second round must wait");
        turn.observe(false, &spec());
        assert!(h.begin_check().is_some(), "the turn ended with its check");
    }

    #[test]
    fn thresholds_flip_state() {
        let h = BackendHealth::new(true);
        let s = spec();
        assert_eq!(h.observe(false, &s), None);
        assert_eq!(h.observe(false, &s), None);
        assert_eq!(h.observe(false, &s), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.observe(true, &s), None);
        assert_eq!(
            h.observe(false, &s),
            None,
            "a failure resets the passing streak"
        );
        assert_eq!(h.observe(true, &s), None);
        assert_eq!(h.observe(true, &s), Some(true));
        assert!(h.is_healthy());
    }

    #[test]
    fn a_new_backend_is_decided_by_its_first_check() {
        let s = spec();
        let h = BackendHealth::new(false);
        assert_eq!(h.observe(true, &s), Some(true));
        let h = BackendHealth::new(false);
        assert_eq!(h.observe(false, &s), None);
        assert!(!h.is_healthy());
        assert_eq!(h.observe(true, &s), None, "then thresholds apply");
        assert_eq!(h.observe(true, &s), Some(true));
    }

    #[test]
    fn a_pass_resets_the_failure_streak() {
        let h = BackendHealth::new(true);
        let s = spec();
        h.observe(false, &s);
        h.observe(false, &s);
        h.observe(true, &s);
        h.observe(false, &s);
        h.observe(false, &s);
        assert!(h.is_healthy());
    }
}
