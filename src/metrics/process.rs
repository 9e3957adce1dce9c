//! The standard `process_*` metrics (resident memory, open descriptors,
//! CPU seconds, threads, start time) of the process that is scraped.
//!
//! The `prometheus` crate's collector reads `/proc/PID` for the pid it was
//! made with. The metrics are built before the server runs, and with `-d`
//! the server then forks into the daemon, whose pid differs: this wrapper
//! makes a new collector whenever the pid it is asked from is not the one
//! it watches.

use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::MetricFamily;
use std::sync::{Mutex, PoisonError};

/// The process collector of whichever process calls it.
pub struct SelfProcess {
    /// The same for every pid; kept apart from the collector behind the lock.
    descs: Vec<Desc>,
    watched: Mutex<(u32, ProcessCollector)>,
}

impl SelfProcess {
    pub fn new() -> Self {
        let pid = std::process::id();
        let collector = ProcessCollector::new(pid as libc::pid_t, "");
        SelfProcess {
            descs: collector.desc().into_iter().cloned().collect(),
            watched: Mutex::new((pid, collector)),
        }
    }
}

impl Default for SelfProcess {
    fn default() -> Self {
        SelfProcess::new()
    }
}

impl Collector for SelfProcess {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let pid = std::process::id();
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if watched.0 != pid {
            *watched = (pid, ProcessCollector::new(pid as libc::pid_t, ""));
        }
        watched.1.collect()
    }
}
