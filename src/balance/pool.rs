//! Which backend to pick: a pool's backends, their selector and the key a
//! request is hashed on.
//!
//! Selection is Pingora's: a [`LoadBalancer`] per pool with the weighted
//! round-robin, weighted random or Ketama selector, our least-connections
//! selector, or one weighted round-robin per priority tier. Pingora's own
//! health tracking is not used; the `accept` callback of `select_with`
//! consults our state instead: active health, the circuit breaker, the
//! model list, the backend's concurrency cap, and the backends a request has
//! already tried, so a retry never lands on the same backend twice.

use super::in_flight::{InFlightCount, InFlightTable};
use super::least_conn::LeastConnections;
use super::queue::PoolQueue;
use crate::config::{BackendSpec, PoolSpec, QueueSpec, Strategy};
use crate::health::circuit::Circuit;
use crate::health::BackendHealth;
use crate::metrics::window::RequestWindow;
use crate::metrics::SeriesHint;
use crate::models::BackendModels;
use futures_util::FutureExt;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// How many candidates one selection may look at. Ketama walks its ring
/// node by node (160 points per unit of weight), so this must be well above
/// the backend count for a selection to find the one healthy backend left.
const MAX_ITERATIONS: usize = 4096;

/// One backend of one pool.
pub struct Upstream {
    pub spec: BackendSpec,
    /// Shared with the previous snapshot when the backend stays.
    pub health: Arc<BackendHealth>,
    /// Shared with the previous snapshot, and with other pools that list
    /// the same address.
    pub models: Arc<BackendModels>,
    /// Requests in flight, kept in the pool's table across reloads.
    pub in_flight: Arc<InFlightCount>,
    /// Passive health, shared with the previous snapshot.
    pub circuit: Arc<Circuit>,
    /// The last minute of its requests, for `/status`; shared with the
    /// previous snapshot, like its health.
    pub window: Arc<RequestWindow>,
    /// Its health probe, made on its first check and kept for this
    /// snapshot's life: making one builds Pingora's connector, and with it
    /// the TLS settings and the system's trusted roots, which is too much
    /// to do every check round. A reload makes new ones.
    pub probe: OnceLock<Option<Arc<dyn HealthCheck + Send + Sync>>>,
    /// Its name as the `x-switchyard-backend` value, made once rather than
    /// per response; `None` for a name no header can carry (the file
    /// allows any string), which is then left out.
    pub name_header: Option<http::HeaderValue>,
    /// Where its requests are counted, found without the metrics' shared
    /// cache; this snapshot's own, as a reload may rename it.
    pub series: SeriesHint,
}

impl Upstream {
    /// Up by active checks and not shut out by its circuit.
    pub fn usable(&self, model: Option<&str>) -> bool {
        self.spec.weight > 0
            && self.health.is_healthy()
            && self.circuit.would_admit()
            && self.may_serve(model)
    }

    /// Below its `max_in_flight`.
    pub fn has_room(&self) -> bool {
        self.spec
            .max_in_flight
            .is_none_or(|max| self.in_flight.current() < max)
    }

    /// Whether this backend may serve `model` (any model when none is asked
    /// for, or while its list is not known yet). A model its `model_map`
    /// renames is served when the name it maps to is.
    pub fn may_serve(&self, model: Option<&str>) -> bool {
        model.is_none_or(|m| self.models.serves(self.spec.served_name(m)).unwrap_or(true))
    }
}

/// Pingora's name for a backend address.
pub(crate) fn pingora_backend(addr: SocketAddr, weight: usize) -> Backend {
    Backend {
        addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(addr),
        weight,
        ext: Default::default(),
    }
}

/// A pool's selector, one variant per strategy.
enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
    LeastConnections(LoadBalancer<LeastConnections>),
    /// One weighted rotation per tier, highest priority first.
    Priority(Vec<LoadBalancer<RoundRobin>>),
}

/// What a pool keeps across reloads, by pool name.
pub struct PoolShared {
    /// Requests in flight per backend address.
    pub in_flight: Arc<InFlightTable>,
    /// Requests waiting for a backend below its cap.
    pub queue: Arc<PoolQueue>,
}

impl PoolShared {
    pub fn new(queue: QueueSpec) -> Arc<Self> {
        let queue = Arc::new(PoolQueue::new(queue));
        let wake = queue.clone();
        let in_flight = Arc::new(InFlightTable::with_on_release(Arc::new(move |_| {
            wake.notify_released()
        })));
        Arc::new(PoolShared { in_flight, queue })
    }
}

/// The outcome of one selection.
pub enum Pick {
    Chosen(Arc<Upstream>),
    /// Usable backends exist but all are at their cap: wait for a slot.
    Busy,
    /// No usable backend.
    None,
}

/// Builds a Pingora load balancer over a static backend set.
fn balancer<S>(backends: BTreeSet<Backend>) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    balancer_with(backends, None)
}

/// [`balancer`] with a selector configuration.
fn balancer_with<S>(backends: BTreeSet<Backend>, config: Option<S::Config>) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let lb = LoadBalancer::from_backends_with_config(Backends::new(Static::new(backends)), config);
    // Static discovery answers at once; this only builds the selector.
    if let Some(Err(e)) = lb.update().now_or_never() {
        log::error!("building selector: {e}");
    }
    lb
}

/// A pool, ready to serve: its spec, its backends and its selector.
pub struct Pool {
    /// Unique per pool built, so that background work can tell a reloaded
    /// pool from the one it replaced.
    pub id: u64,
    pub spec: PoolSpec,
    upstreams: Vec<Arc<Upstream>>,
    selector: Selector,
    /// In-flight counts and the queue, shared with the pools this one
    /// replaced and will be replaced by.
    pub shared: Arc<PoolShared>,
}

impl Pool {
    /// Builds a pool. `health_of`, `models_of`, `circuit_of` and
    /// `window_of` supply each backend's health, model list, circuit and
    /// request window: the previous ones when a reload keeps it.
    pub fn new(
        id: u64,
        spec: PoolSpec,
        shared: Arc<PoolShared>,
        health_of: impl Fn(&BackendSpec) -> Arc<BackendHealth>,
        models_of: impl Fn(&BackendSpec) -> Arc<BackendModels>,
        circuit_of: impl Fn(&BackendSpec) -> Arc<Circuit>,
        window_of: impl Fn(&BackendSpec) -> Arc<RequestWindow>,
    ) -> Self {
        let upstreams: Vec<Arc<Upstream>> = spec
            .backends
            .iter()
            .map(|b| {
                Arc::new(Upstream {
                    spec: b.clone(),
                    health: health_of(b),
                    models: models_of(b),
                    in_flight: shared.in_flight.counter(b.addr),
                    circuit: circuit_of(b),
                    window: window_of(b),
                    probe: OnceLock::new(),
                    name_header: http::HeaderValue::from_str(&b.name).ok(),
                    series: SeriesHint::default(),
                })
            })
            .collect();
        // Weight 0 drains a backend: it is left out of the selector entirely.
        let of = |keep: &dyn Fn(&BackendSpec) -> bool| -> BTreeSet<Backend> {
            spec.backends
                .iter()
                .filter(|b| b.weight > 0 && keep(b))
                .map(|b| pingora_backend(b.addr, b.weight))
                .collect()
        };
        let backends = of(&|_| true);
        let selector = match spec.strategy {
            Strategy::RoundRobin => Selector::RoundRobin(balancer(backends)),
            Strategy::Random => Selector::Random(balancer(backends)),
            Strategy::ConsistentHash(_) => Selector::Consistent(balancer(backends)),
            Strategy::LeastConnections => {
                Selector::LeastConnections(balancer_with(backends, Some(shared.in_flight.clone())))
            }
            Strategy::Priority => {
                let mut tiers: Vec<u32> = spec.backends.iter().map(|b| b.priority).collect();
                tiers.sort_unstable_by(|a, b| b.cmp(a));
                tiers.dedup();
                Selector::Priority(
                    tiers
                        .into_iter()
                        .map(|t| balancer(of(&|b| b.priority == t)))
                        .collect(),
                )
            }
        };
        Pool {
            id,
            spec,
            upstreams,
            selector,
            shared,
        }
    }

    /// A pool with nothing carried over: every backend up, its models not
    /// known yet, fresh circuits and counts. For tools that use a pool on
    /// its own (benchmarks, tests); the proxy builds pools in `state`.
    pub fn detached(spec: PoolSpec) -> Self {
        let circuit = spec.circuit.clone();
        Pool::new(
            0,
            spec.clone(),
            PoolShared::new(spec.queue.clone()),
            |_| Arc::new(BackendHealth::new(true)),
            |_| Arc::new(BackendModels::default()),
            |_| Arc::new(Circuit::new(circuit.clone())),
            |_| Arc::new(RequestWindow::default()),
        )
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The backend at `addr`, if this pool has one.
    pub fn upstream(&self, addr: SocketAddr) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.spec.addr == addr)
    }

    /// Picks a usable backend not in `tried` (nor in `skip`) that may
    /// serve `model` and is below its cap. `key` is used by
    /// `consistent_hash` only.
    pub fn select(
        &self,
        key: &[u8],
        tried: &[SocketAddr],
        skip: &[SocketAddr],
        model: Option<&str>,
    ) -> Pick {
        let candidate = |addr: SocketAddr| {
            (!tried.contains(&addr) && !skip.contains(&addr))
                .then(|| self.upstream(addr))
                .flatten()
                .filter(|u| u.usable(model))
        };
        let accept = |b: &Backend, _: bool| {
            b.addr
                .as_inet()
                .and_then(|a| candidate(*a))
                .is_some_and(|u| u.has_room())
        };
        let chosen = match &self.selector {
            Selector::RoundRobin(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
            Selector::Random(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
            Selector::Consistent(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
            Selector::LeastConnections(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
            Selector::Priority(tiers) => tiers
                .iter()
                .find_map(|lb| lb.select_with(key, MAX_ITERATIONS, accept)),
        };
        match chosen.and_then(|b| b.addr.as_inet().and_then(|a| self.upstream(*a)).cloned()) {
            Some(up) => Pick::Chosen(up),
            None if self
                .upstreams
                .iter()
                .any(|u| candidate(u.spec.addr).is_some()) =>
            {
                Pick::Busy
            }
            None => Pick::None,
        }
    }

    /// Whether a backend other than those in `tried` could still be selected.
    pub fn has_untried(&self, tried: &[SocketAddr], model: Option<&str>) -> bool {
        self.upstreams
            .iter()
            .any(|u| !tried.contains(&u.spec.addr) && u.usable(model))
    }

    /// Whether any backend, usable or not, may serve `model`.
    pub fn knows(&self, model: &str) -> bool {
        self.upstreams
            .iter()
            .any(|u| u.spec.weight > 0 && u.may_serve(Some(model)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HealthSpec};

    fn pool(yaml_backends: &str, strategy: &str) -> Pool {
        let yaml = format!(
            "pools:\n  p:\n    strategy: {strategy}\n    health_check: {{ type: none }}\n    backends:\n{yaml_backends}"
        );
        Pool::detached(Config::from_yaml(&yaml).unwrap().pools[0].clone())
    }

    fn chosen(pick: Pick) -> Option<Arc<Upstream>> {
        match pick {
            Pick::Chosen(up) => Some(up),
            _ => None,
        }
    }

    const THREE: &str = "      - { url: \"http://127.0.0.1:1001\", weight: 5 }\n      - { url: \"http://127.0.0.1:1002\", weight: 3 }\n      - { url: \"http://127.0.0.1:1003\", weight: 2 }\n";

    #[test]
    fn round_robin_honours_weights() {
        let p = pool(THREE, "round_robin");
        let mut counts = std::collections::HashMap::new();
        for _ in 0..1000 {
            *counts
                .entry(
                    chosen(p.select(b"", &[], &[], None))
                        .unwrap()
                        .spec
                        .addr
                        .port(),
                )
                .or_insert(0) += 1;
        }
        assert_eq!(counts[&1001], 500);
        assert_eq!(counts[&1002], 300);
        assert_eq!(counts[&1003], 200);
    }

    #[test]
    fn tried_and_unhealthy_backends_are_skipped() {
        let p = pool(THREE, "random");
        let a: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        p.upstream(b)
            .unwrap()
            .health
            .begin_check()
            .unwrap()
            .observe(
                false,
                &crate::config::HealthSpec {
                    unhealthy_threshold: 1,
                    ..p.spec.health.clone()
                },
            );
        for _ in 0..100 {
            assert_eq!(
                chosen(p.select(b"", &[a], &[], None))
                    .unwrap()
                    .spec
                    .addr
                    .port(),
                1003
            );
        }
        let c: SocketAddr = "127.0.0.1:1003".parse().unwrap();
        assert!(chosen(p.select(b"", &[a, c], &[], None)).is_none());
        assert!(!p.has_untried(&[a, c], None));
    }

    #[test]
    fn consistent_hash_is_stable() {
        let p = pool(THREE, "consistent_hash\n    hash_key: path");
        let first = chosen(p.select(b"user-1", &[], &[], None))
            .unwrap()
            .spec
            .addr;
        for _ in 0..10 {
            assert_eq!(
                chosen(p.select(b"user-1", &[], &[], None))
                    .unwrap()
                    .spec
                    .addr,
                first
            );
        }
    }

    #[test]
    fn only_backends_with_the_model_are_candidates() {
        use crate::models::ModelEntry;
        let p = pool(THREE, "round_robin");
        let entry = ModelEntry::named;
        p.upstreams[0]
            .models
            .set(vec![entry("llama3"), entry("qwen")]);
        p.upstreams[1].models.set(vec![entry("llama3")]);
        p.upstreams[2].models.set(vec![entry("codestral")]);
        for _ in 0..20 {
            assert_eq!(
                chosen(p.select(b"", &[], &[], Some("qwen")))
                    .unwrap()
                    .spec
                    .addr
                    .port(),
                1001
            );
            assert_eq!(
                chosen(p.select(b"", &[], &[], Some("codestral")))
                    .unwrap()
                    .spec
                    .addr
                    .port(),
                1003
            );
            assert_ne!(
                chosen(p.select(b"", &[], &[], Some("llama3")))
                    .unwrap()
                    .spec
                    .addr
                    .port(),
                1003
            );
        }
        assert!(chosen(p.select(b"", &[], &[], Some("mistral"))).is_none());
        assert!(!p.knows("mistral"));
        assert!(p.knows("qwen"));
    }

    #[test]
    fn priority_spills_to_the_next_tier_and_returns() {
        let tiers = "      - { url: \"http://127.0.0.1:1001\", priority: 2 }\n      - { url: \"http://127.0.0.1:1002\", priority: 2 }\n      - { url: \"http://127.0.0.1:1003\", priority: 1 }\n";
        let p = pool(tiers, "priority");
        let port = |p: &Pool| {
            chosen(p.select(b"", &[], &[], None))
                .unwrap()
                .spec
                .addr
                .port()
        };
        for _ in 0..10 {
            assert_ne!(port(&p), 1003);
        }
        let down = HealthSpec {
            unhealthy_threshold: 1,
            ..p.spec.health.clone()
        };
        p.upstreams[0]
            .health
            .begin_check()
            .unwrap()
            .observe(false, &down);
        p.upstreams[1]
            .health
            .begin_check()
            .unwrap()
            .observe(false, &down);
        assert_eq!(port(&p), 1003);
        p.upstreams[0].health.begin_check().unwrap().observe(
            true,
            &HealthSpec {
                healthy_threshold: 1,
                ..down
            },
        );
        assert_eq!(port(&p), 1001);
    }

    #[test]
    fn a_backend_at_its_cap_makes_the_pool_busy() {
        let one = "      - { url: \"http://127.0.0.1:1001\", max_in_flight: 1 }\n";
        let p = pool(one, "least_connections");
        let up = chosen(p.select(b"", &[], &[], None)).unwrap();
        let slot = up.in_flight.try_acquire(up.spec.max_in_flight).unwrap();
        assert!(matches!(p.select(b"", &[], &[], None), Pick::Busy));
        drop(slot);
        assert!(chosen(p.select(b"", &[], &[], None)).is_some());
    }
}
