//! Gauges that mirror the fleet's state, read from the current routing
//! snapshot when Prometheus scrapes rather than kept up to date by every
//! request: whether each backend is up, its circuit, its requests in
//! flight, each pool's queue, and the requests the proxy holds.
//!
//! The state already exists (atomics and the circuit's lock, kept by the
//! request path for its own decisions); counting it a second time on the
//! hot path would cost every request for a number read every few seconds.
//! Backends a reload removed are gone from the next scrape.

use crate::lifecycle::drain::Requests;
use crate::state::SharedState;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, IntGaugeVec, Opts};
use std::sync::{Arc, Mutex, PoisonError};

/// Every state a circuit can be in (`CircuitState::as_str`), for one
/// series each.
const CIRCUIT_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// The collector; register it with the [`super::Metrics`] registry.
pub struct FleetCollector {
    state: Arc<SharedState>,
    requests: Arc<Requests>,
    /// The gauges are refilled from the snapshot at each scrape; the lock
    /// keeps two scrapes at once from mixing their fills.
    gauges: Mutex<Gauges>,
    descs: Vec<Desc>,
}

struct Gauges {
    up: IntGaugeVec,
    circuit: IntGaugeVec,
    in_flight: IntGaugeVec,
    queue_depth: IntGaugeVec,
    requests_in_flight: IntGauge,
}

impl FleetCollector {
    pub fn new(state: Arc<SharedState>, requests: Arc<Requests>) -> prometheus::Result<Self> {
        let backend = &["pool", "backend"];
        let gauges = Gauges {
            up: IntGaugeVec::new(
                Opts::new(
                    "switchyard_backend_up",
                    "Whether the backend passes its active health checks (1) or not (0).",
                ),
                backend,
            )?,
            circuit: IntGaugeVec::new(
                Opts::new(
                    "switchyard_backend_circuit_state",
                    "The backend's circuit breaker: 1 for the state it is in, 0 for the others.",
                ),
                &["pool", "backend", "state"],
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new(
                    "switchyard_backend_in_flight_requests",
                    "Requests holding a slot on the backend now.",
                ),
                backend,
            )?,
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "switchyard_queue_depth_requests",
                    "Requests waiting in the pool's queue for a backend below its max_in_flight.",
                ),
                &["pool"],
            )?,
            requests_in_flight: IntGauge::new(
                "switchyard_in_flight_requests",
                "Requests the proxy is serving now, queued ones included.",
            )?,
        };
        let descs = gauges
            .collectors()
            .iter()
            .flat_map(|c| c.desc())
            .cloned()
            .collect();
        Ok(FleetCollector {
            state,
            requests,
            gauges: Mutex::new(gauges),
            descs,
        })
    }
}

impl Gauges {
    fn collectors(&self) -> [&dyn Collector; 5] {
        [
            &self.up,
            &self.circuit,
            &self.in_flight,
            &self.queue_depth,
            &self.requests_in_flight,
        ]
    }

    /// Fills the gauges from the current snapshot.
    fn fill(&self, state: &SharedState, requests: &Requests) {
        self.up.reset();
        self.circuit.reset();
        self.in_flight.reset();
        self.queue_depth.reset();
        let snapshot = state.load();
        for pool in &snapshot.pools {
            let name = pool.spec.name.as_str();
            self.queue_depth
                .with_label_values(&[name])
                .set(gauge(pool.shared.queue.waiting()));
            for up in pool.upstreams() {
                let labels = [name, up.spec.name.as_str()];
                self.up
                    .with_label_values(&labels)
                    .set(i64::from(up.health.is_healthy()));
                self.in_flight
                    .with_label_values(&labels)
                    .set(gauge(up.in_flight.current()));
                let now = up.circuit.state().as_str();
                for state in CIRCUIT_STATES {
                    self.circuit
                        .with_label_values(&[labels[0], labels[1], state])
                        .set(i64::from(state == now));
                }
            }
        }
        self.requests_in_flight.set(gauge(requests.count()));
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for FleetCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let gauges = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        gauges.fill(&self.state, &self.requests);
        gauges
            .collectors()
            .iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A series: its labels and value.
    type Series = (Vec<(String, String)>, f64);

    fn families(c: &FleetCollector) -> Vec<(String, Vec<Series>)> {
        c.collect()
            .into_iter()
            .map(|f| {
                let series = f
                    .get_metric()
                    .iter()
                    .map(|m| {
                        let labels = m
                            .get_label()
                            .iter()
                            .map(|l| (l.name().to_string(), l.value().to_string()))
                            .collect();
                        (labels, m.get_gauge().get_value())
                    })
                    .collect();
                (f.name().to_string(), series)
            })
            .collect()
    }

    #[test]
    fn gauges_follow_the_snapshot() {
        let config = Config::from_yaml(
            "pools:\n  chat:\n    health_check: { type: none }\n    backends:\n\
             \x20     - { name: a, url: \"http://127.0.0.1:9001\" }\n\
             \x20     - { name: b, url: \"http://127.0.0.1:9002\" }\n",
        )
        .unwrap();
        let state = SharedState::new(config);
        let requests = Arc::new(Requests::default());
        let collector = FleetCollector::new(state.clone(), requests.clone()).unwrap();
        let snapshot = state.load_full();
        let a = snapshot.pools[0].upstreams()[0].clone();
        let _slot = a.in_flight.acquire();
        let _request = requests.enter();
        let all = families(&collector);
        let family = |name: &str| {
            all.iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        };
        let value = |name: &str, want: &[(&str, &str)]| {
            family(name)
                .into_iter()
                .find(|(labels, _)| {
                    want.iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
                })
                .map(|(_, v)| v)
        };
        assert_eq!(
            value("switchyard_backend_up", &[("backend", "a")]),
            Some(1.0)
        );
        assert_eq!(
            value("switchyard_backend_in_flight_requests", &[("backend", "a")]),
            Some(1.0)
        );
        assert_eq!(
            value("switchyard_backend_in_flight_requests", &[("backend", "b")]),
            Some(0.0)
        );
        assert_eq!(
            value(
                "switchyard_backend_circuit_state",
                &[("backend", "b"), ("state", "closed")]
            ),
            Some(1.0)
        );
        assert_eq!(family("switchyard_backend_circuit_state").len(), 6);
        assert_eq!(
            value("switchyard_queue_depth_requests", &[("pool", "chat")]),
            Some(0.0)
        );
        assert_eq!(value("switchyard_in_flight_requests", &[]), Some(1.0));
    }
}
