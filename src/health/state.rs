//! What the active checks know of each backend: up or down, with the
//! thresholds applied.
//!
//! Each backend has a [`BackendHealth`], shared by `Arc` between routing
//! snapshots so that a reload keeps what is known about a backend that
//! stays. The thresholds (how many checks in a row flip the state) are
//! applied here, not by Pingora, because the state must outlive the
//! selector it was measured for.
//!
//! Beside the state, each backend keeps what its last checks found (when,
//! how long they took, and the error of the last one that failed), for
//! the admin listener's `/status`: written once per check, never by
//! requests.

use crate::config::HealthSpec;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// The longest error text kept from a check: a probe's error is a line
/// (Pingora's error with its context), and whatever a backend answers
/// must not grow the status document without bound.
const MAX_ERROR_TEXT: usize = 300;

/// One finished check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRecord {
    /// When it ended, as wall-clock time for people to read.
    pub at: SystemTime,
    /// How long it took.
    pub took: Duration,
    /// Why it failed; `None` when it passed.
    pub error: Option<String>,
}

/// What the checks of one backend last found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckHistory {
    /// The last check, passed or failed.
    pub last: Option<CheckRecord>,
    /// The last check that failed, kept after later ones pass: why a
    /// backend was down a minute ago.
    pub last_failure: Option<CheckRecord>,
}

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
    /// The last checks' times and errors; locked once per check and per
    /// `/status` read, never by requests.
    history: Mutex<CheckHistory>,
}

/// The one check of a backend that may run now; ends when dropped.
#[derive(Debug)]
pub struct CheckTurn<'a>(&'a BackendHealth);

impl CheckTurn<'_> {
    /// Records the check's result. Returns `Some(new state)` when it flipped.
    pub fn observe(self, passed: bool, spec: &HealthSpec) -> Option<bool> {
        self.0.observe(passed, spec)
    }

    /// Notes when the check ended, how long it took and how it failed,
    /// for `/status`; then records its result as [`CheckTurn::observe`] does.
    pub fn finish(
        self,
        result: &Result<(), String>,
        took: Duration,
        spec: &HealthSpec,
    ) -> Option<bool> {
        let record = CheckRecord {
            at: SystemTime::now(),
            took,
            error: result.as_ref().err().map(|e| bounded(e)),
        };
        {
            let mut history = self
                .0
                .history
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if record.error.is_some() {
                history.last_failure = Some(record.clone());
            }
            history.last = Some(record);
        }
        self.observe(result.is_ok(), spec)
    }
}

/// `text`, cut at [`MAX_ERROR_TEXT`] bytes on a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_string();
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
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
            history: Mutex::new(CheckHistory::default()),
        }
    }

    /// What the last checks found; empty before the first.
    pub fn history(&self) -> CheckHistory {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthKind;
    use std::time::Duration;

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
    fn the_last_check_and_the_last_failure_are_kept() {
        let h = BackendHealth::new(true);
        assert_eq!(h.history(), CheckHistory::default());
        let took = Duration::from_millis(3);
        let refused = Err("Connection refused".to_string());
        h.begin_check().unwrap().finish(&refused, took, &spec());
        h.begin_check().unwrap().finish(&Ok(()), took, &spec());
        let seen = h.history();
        let last = seen.last.unwrap();
        assert_eq!((last.error, last.took), (None, took));
        let failed = seen.last_failure.unwrap();
        assert_eq!(failed.error.as_deref(), Some("Connection refused"));
        assert!(failed.at <= last.at);

        let long = "\u{e9}".repeat(400);
        h.begin_check().unwrap().finish(&Err(long), took, &spec());
        let kept = h.history().last.unwrap().error.unwrap();
        assert!(kept.len() <= MAX_ERROR_TEXT + 3 && kept.ends_with("..."));
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
