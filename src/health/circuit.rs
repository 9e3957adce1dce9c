//! Passive health: a circuit breaker per backend, driven by the outcomes of
//! real requests rather than by probes.
//!
//! Active health checks ([`crate::health`]) run every few seconds and ask a
//! cheap endpoint; a backend can pass them while failing real requests (a
//! model that will not load, a GPU out of memory), and between two checks a
//! dead backend keeps drawing traffic. The [`Circuit`] watches what actually
//! happens: after [`CircuitSpec::consecutive_failures`] failed requests in a
//! row it *opens* and the backend is passed over for a cooldown. When the
//! cooldown has passed it is *half-open*: exactly one request, the probe, is
//! let through. The probe's success closes the circuit; its failure opens it
//! again for twice as long, up to [`CircuitSpec::max_cooldown`], so a backend
//! that stays down costs one request per cooldown rather than one per
//! retry. A backend that answers 429 or 503 with `Retry-After` can be opened
//! for exactly that long with [`Circuit::open_for`].
//!
//! Admission and reporting go through a [`CircuitPermit`], which the
//! request context holds. It knows whether it carries the probe, and which
//! opening of the circuit it was issued in, so that:
//! - a probe that ends without a report (the client left, the request was
//!   aborted) frees the half-open slot when it is dropped, and the next
//!   request becomes the probe instead of the backend staying out forever;
//! - outcomes of requests admitted before the circuit last opened are
//!   ignored: a burst of stragglers from the outage cannot re-open a circuit
//!   that a probe has just closed, nor a late success close one.
//!
//! Time is `tokio::time::Instant`, so tests pause the clock.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// When to open a backend's circuit and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitSpec {
    /// Failed requests in a row that open the circuit. Default 3: one
    /// failure can be bad luck (a connection reset mid-deploy), three in a
    /// row rarely is. 0 is read as 1.
    pub consecutive_failures: usize,
    /// How long the circuit first stays open. Default 10s: about the time an
    /// inference server takes to restart, and short enough that a recovered
    /// backend is soon used again. Capped at `max_cooldown`.
    pub cooldown: Duration,
    /// The ceiling of the doubling cooldown, and of `Retry-After`.
    /// Default 5m: a backend down for an hour is then still tried a dozen
    /// times an hour, and a wild `Retry-After` cannot bench it for a day.
    pub max_cooldown: Duration,
}

impl Default for CircuitSpec {
    fn default() -> Self {
        CircuitSpec {
            consecutive_failures: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// What a circuit is doing, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests pass.
    Closed,
    /// Requests are refused until `until`; the first one after it is the probe.
    Open { until: Instant },
    /// The cooldown is over; one probe at a time is let through.
    HalfOpen,
}

impl CircuitState {
    /// A label: `closed`, `open` or `half_open`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open { .. } => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// The state machine, under the circuit's lock.
#[derive(Debug)]
enum Phase {
    Closed { failures: usize },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// How long the next failure-driven opening lasts: the base cooldown
    /// while closed, doubled by each failed probe.
    next_cooldown: Duration,
    /// Incremented each time the circuit opens or is closed from outside.
    /// A permit remembers the epoch it was issued in; reports from an older
    /// one are stale.
    epoch: u64,
    /// The current opening is the backend's own request (`Retry-After`),
    /// not a verdict on failures: a passing health check does not end it.
    asked: bool,
}

/// Far enough to mean "until further notice" if a deadline would overflow.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

impl Inner {
    fn open(&mut self, now: Instant, cooldown: Duration) {
        let until = now.checked_add(cooldown).or_else(|| now.checked_add(FAR));
        self.phase = Phase::Open {
            until: until.unwrap_or(now),
        };
        self.epoch += 1;
        self.asked = false;
    }
}

/// The circuit breaker of one backend, shared by `Arc` between requests
/// (and between routing snapshots, like its health). See the module docs.
#[derive(Debug)]
pub struct Circuit {
    spec: CircuitSpec,
    /// A plain mutex: every critical section is a few comparisons, never
    /// held across an await or a call out, and taken once or twice per
    /// request.
    inner: Mutex<Inner>,
}

impl Circuit {
    pub fn new(spec: CircuitSpec) -> Self {
        let base = spec.cooldown.min(spec.max_cooldown);
        Circuit {
            spec,
            inner: Mutex::new(Inner {
                phase: Phase::Closed { failures: 0 },
                next_cooldown: base,
                epoch: 0,
                asked: false,
            }),
        }
    }

    pub fn spec(&self) -> &CircuitSpec {
        &self.spec
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves `Inner` consistent before anything can panic,
        // so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn base_cooldown(&self) -> Duration {
        self.spec.cooldown.min(self.spec.max_cooldown)
    }

    /// Whether [`Circuit::try_acquire`] would admit a request now, without
    /// taking anything: for filters that must not claim the probe, such as
    /// "is any backend left to try?".
    pub fn would_admit(&self) -> bool {
        match self.lock().phase {
            Phase::Closed { .. } => true,
            Phase::Open { until } => Instant::now() >= until,
            Phase::HalfOpen { probing } => !probing,
        }
    }

    /// Admits a request to this backend, or refuses it while the circuit is
    /// open or its one probe is out. Once an open circuit's cooldown has
    /// passed, the first caller gets the probe permit and the circuit turns
    /// half-open; later callers are refused until the probe reports or is
    /// dropped.
    pub fn try_acquire(self: &Arc<Self>) -> Option<CircuitPermit> {
        let mut inner = self.lock();
        let probe = match inner.phase {
            Phase::Closed { .. } => false,
            Phase::Open { until } if Instant::now() >= until => true,
            Phase::HalfOpen { probing: false } => true,
            Phase::Open { .. } | Phase::HalfOpen { probing: true } => return None,
        };
        if probe {
            inner.phase = Phase::HalfOpen { probing: true };
        }
        Some(CircuitPermit {
            circuit: self.clone(),
            epoch: inner.epoch,
            probe,
            reported: false,
        })
    }

    /// Opens the circuit for `duration` (capped at `max_cooldown`), whatever
    /// its state: a 429 or 503 with `Retry-After`. An opening that already
    /// lasts longer is kept. The doubling cooldown is left as it is.
    pub fn open_for(&self, duration: Duration) {
        let now = Instant::now();
        let duration = duration.min(self.spec.max_cooldown);
        let mut inner = self.lock();
        if let Phase::Open { until } = inner.phase {
            if now.checked_add(duration).is_some_and(|t| until >= t) {
                return;
            }
        }
        inner.open(now, duration);
        inner.asked = true;
    }

    /// An active health check of the backend passed. A circuit opened by
    /// failures closes at once, as Envoy's
    /// `successful_active_health_check_uneject_host` does: the backend has
    /// shown it is back, and waiting out a cooldown that doubled while it
    /// was down would keep a recovered backend (or a whole priority tier)
    /// out for minutes. An opening the backend asked for with `Retry-After`
    /// stands. Returns whether the circuit closed.
    pub fn check_passed(&self) -> bool {
        let mut inner = self.lock();
        if inner.asked || matches!(inner.phase, Phase::Closed { .. }) {
            return false;
        }
        inner.phase = Phase::Closed { failures: 0 };
        inner.next_cooldown = self.base_cooldown();
        // Requests admitted while it was open report into the past.
        inner.epoch += 1;
        true
    }

    /// The current state. An open circuit whose cooldown has passed still
    /// reads `Open` until a request takes the probe.
    pub fn state(&self) -> CircuitState {
        match self.lock().phase {
            Phase::Closed { .. } => CircuitState::Closed,
            Phase::Open { until } => CircuitState::Open { until },
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn report(&self, epoch: u64, probe: bool, success: bool) {
        let now = Instant::now();
        let threshold = self.spec.consecutive_failures.max(1);
        let mut inner = self.lock();
        if epoch != inner.epoch {
            return;
        }
        match (&mut inner.phase, probe, success) {
            (Phase::Closed { failures }, false, true) => *failures = 0,
            (Phase::Closed { failures }, false, false) => {
                *failures += 1;
                if *failures >= threshold {
                    let cooldown = inner.next_cooldown;
                    inner.open(now, cooldown);
                }
            }
            (Phase::HalfOpen { probing: true }, true, true) => {
                inner.phase = Phase::Closed { failures: 0 };
                inner.next_cooldown = self.base_cooldown();
            }
            (Phase::HalfOpen { probing: true }, true, false) => {
                let doubled = inner.next_cooldown.checked_mul(2);
                let cooldown =
                    doubled.map_or(self.spec.max_cooldown, |d| d.min(self.spec.max_cooldown));
                inner.next_cooldown = cooldown;
                inner.open(now, cooldown);
            }
            // Same epoch but not a transition this permit can cause.
            _ => {}
        }
    }

    /// A probe permit dropped without a report: let the next request probe.
    fn abandon_probe(&self, epoch: u64) {
        let mut inner = self.lock();
        if epoch == inner.epoch {
            if let Phase::HalfOpen { probing } = &mut inner.phase {
                *probing = false;
            }
        }
    }
}

/// A request's admission through a [`Circuit`], and how it reports back.
///
/// Report the outcome with [`CircuitPermit::success`] or
/// [`CircuitPermit::failure`]. Dropping it unreported means "no verdict":
/// nothing is counted, and a probe's half-open slot is freed.
#[must_use = "dropping the permit unreported gives up a probe's verdict"]
#[derive(Debug)]
pub struct CircuitPermit {
    circuit: Arc<Circuit>,
    epoch: u64,
    probe: bool,
    reported: bool,
}

impl CircuitPermit {
    /// Whether this request is the half-open probe, e.g. to log it.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The backend served the request: resets the failure count, and closes
    /// the circuit if this was the probe.
    pub fn success(mut self) {
        self.reported = true;
        self.circuit.report(self.epoch, self.probe, true);
    }

    /// The backend failed the request: counts towards opening, and re-opens
    /// the circuit for a doubled cooldown if this was the probe.
    pub fn failure(mut self) {
        self.reported = true;
        self.circuit.report(self.epoch, self.probe, false);
    }
}

impl Drop for CircuitPermit {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.circuit.abandon_probe(self.epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_passing_check_closes_a_circuit_opened_by_failures() {
        let c = Arc::new(Circuit::new(CircuitSpec {
            consecutive_failures: 1,
            cooldown: Duration::from_secs(60),
            max_cooldown: Duration::from_secs(300),
        }));
        let stale = c.try_acquire().unwrap();
        c.try_acquire().unwrap().failure();
        assert!(!c.would_admit());
        assert!(c.check_passed());
        assert_eq!(c.state(), CircuitState::Closed);
        // A straggler admitted before the opening cannot reopen it.
        stale.failure();
        assert_eq!(c.state(), CircuitState::Closed);
        assert!(!c.check_passed(), "already closed");
        // An opening the backend asked for stands.
        c.open_for(Duration::from_secs(30));
        assert!(!c.check_passed());
        assert!(!c.would_admit());
    }
    use tokio::time::advance;

    fn circuit(cooldown: u64, max: u64) -> Arc<Circuit> {
        Arc::new(Circuit::new(CircuitSpec {
            consecutive_failures: 3,
            cooldown: Duration::from_secs(cooldown),
            max_cooldown: Duration::from_secs(max),
        }))
    }

    fn fail(c: &Arc<Circuit>, times: usize) {
        for _ in 0..times {
            if let Some(p) = c.try_acquire() {
                p.failure();
            }
        }
    }

    /// How long the open circuit has left, in whole seconds.
    fn open_secs(c: &Circuit) -> Option<u64> {
        match c.state() {
            CircuitState::Open { until } => Some((until - Instant::now()).as_secs()),
            _ => None,
        }
    }

    fn probe(c: &Arc<Circuit>) -> CircuitPermit {
        let p = c.try_acquire().expect("the circuit admits a probe");
        assert!(p.is_probe());
        p
    }

    #[test]
    fn defaults() {
        let spec = CircuitSpec::default();
        assert_eq!(spec.consecutive_failures, 3);
        assert_eq!(spec.cooldown, Duration::from_secs(10));
        assert_eq!(spec.max_cooldown, Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_opens() {
        let c = circuit(10, 300);
        fail(&c, 2);
        assert_eq!(c.state(), CircuitState::Closed);
        // A success in between resets the count.
        c.try_acquire().expect("closed").success();
        fail(&c, 2);
        assert_eq!(c.state(), CircuitState::Closed);
        fail(&c, 1);
        assert_eq!(open_secs(&c), Some(10));
        assert!(c.try_acquire().is_none());
        assert!(!c.would_admit());
        assert_eq!(c.state().as_str(), "open");
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_lets_one_probe_through() {
        let c = circuit(10, 300);
        fail(&c, 3);
        advance(Duration::from_secs(9)).await;
        assert!(c.try_acquire().is_none());
        advance(Duration::from_secs(1)).await;
        assert!(c.would_admit());
        let p = probe(&c);
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert!(c.try_acquire().is_none());
        assert!(!c.would_admit());
        // The probe succeeds: closed, and everyone passes again.
        p.success();
        assert_eq!(c.state(), CircuitState::Closed);
        assert!(c.try_acquire().is_some_and(|p| !p.is_probe()));
        // The cooldown is back at its base.
        fail(&c, 3);
        assert_eq!(open_secs(&c), Some(10));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_double_the_cooldown_up_to_the_max() {
        let c = circuit(10, 35);
        fail(&c, 3);
        let mut seen = Vec::new();
        for _ in 0..3 {
            advance(Duration::from_secs(60)).await;
            probe(&c).failure();
            seen.push(open_secs(&c));
        }
        assert_eq!(seen, vec![Some(20), Some(35), Some(35)]);
        advance(Duration::from_secs(35)).await;
        probe(&c).success();
        fail(&c, 3);
        assert_eq!(open_secs(&c), Some(10));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_opens_for_that_long() {
        let c = circuit(10, 300);
        c.open_for(Duration::from_secs(42));
        assert_eq!(open_secs(&c), Some(42));
        // A shorter one does not cut it short; a wild one is capped.
        c.open_for(Duration::from_secs(5));
        assert_eq!(open_secs(&c), Some(42));
        c.open_for(Duration::from_secs(86_400));
        assert_eq!(open_secs(&c), Some(300));
        advance(Duration::from_secs(300)).await;
        probe(&c).success();
        assert_eq!(c.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_probe_frees_the_slot() {
        let c = circuit(10, 300);
        fail(&c, 3);
        advance(Duration::from_secs(10)).await;
        let p = probe(&c);
        assert!(c.try_acquire().is_none());
        drop(p);
        assert_eq!(c.state(), CircuitState::HalfOpen);
        probe(&c).success();
        assert_eq!(c.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_reports_are_ignored() {
        let c = circuit(10, 300);
        let stragglers: Vec<_> = (0..5).filter_map(|_| c.try_acquire()).collect();
        fail(&c, 3);
        advance(Duration::from_secs(10)).await;
        let p = probe(&c);
        // Requests from before the opening neither close nor re-open it.
        let mut stragglers = stragglers.into_iter();
        stragglers.next().expect("five stragglers").success();
        assert_eq!(c.state(), CircuitState::HalfOpen);
        p.success();
        stragglers.for_each(CircuitPermit::failure);
        assert_eq!(c.state(), CircuitState::Closed);
        // A probe overtaken by Retry-After neither closes nor frees anything.
        fail(&c, 3);
        advance(Duration::from_secs(10)).await;
        let p = probe(&c);
        c.open_for(Duration::from_secs(30));
        p.success();
        assert_eq!(open_secs(&c), Some(30));
    }

    #[test]
    fn zero_threshold_reads_as_one() {
        let c = Arc::new(Circuit::new(CircuitSpec {
            consecutive_failures: 0,
            ..CircuitSpec::default()
        }));
        // Outside a runtime, tokio's clock is the real one; nothing waits.
        assert_eq!(c.state(), CircuitState::Closed);
        fail(&c, 1);
        assert_eq!(c.state().as_str(), "open");
    }
}
