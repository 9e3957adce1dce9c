//! Shutdown that ends when the last request does.
//!
//! On SIGTERM (and after handing its listeners over in a binary upgrade)
//! Pingora stops accepting, then sleeps the whole `grace_period` before
//! stopping its runtimes, which cancels whatever is still running. A long
//! grace period is what lets a three-minute stream finish, but an idle proxy
//! should not take three minutes to stop. [`DrainService`] counts requests
//! in flight and ends the process as soon as none is left, so the grace
//! period is a limit, not a wait.
//!
//! It ends the process with `exit(0)` rather than through Pingora: Pingora
//! 0.9 waits out the grace period in a `thread::sleep` on its main thread
//! (`Server::run`), which no signal, watch or service can cut short. By
//! then nothing is in flight and the listeners are closed (or handed to
//! the new binary), so nothing is lost that Pingora's own ending would
//! have kept. The access log's last lines are written first.

use crate::access_log::AccessLog;
use async_trait::async_trait;
use log::info;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Requests being served right now.
#[derive(Debug, Default)]
pub struct Requests {
    count: AtomicUsize,
}

impl Requests {
    /// Counts one request until the guard is dropped, however it ends.
    pub fn enter(self: &Arc<Self>) -> RequestGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// Held in a request's context; releases the request's count on drop.
#[derive(Debug)]
pub struct RequestGuard(Arc<Requests>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long the count must stay at zero before the process exits: covers a
/// request whose connection was accepted just before the listeners closed
/// and whose header is still being read.
const SETTLE: Duration = Duration::from_millis(300);

/// Exits the process once shutdown has begun and no request is in flight.
pub struct DrainService {
    in_flight: Arc<Requests>,
    /// Written out before the exit, which runs no destructor.
    access_log: Arc<AccessLog>,
}

impl DrainService {
    pub fn new(in_flight: Arc<Requests>, access_log: Arc<AccessLog>) -> Self {
        DrainService {
            in_flight,
            access_log,
        }
    }
}

#[async_trait]
impl BackgroundService for DrainService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        info!("draining: {} requests in flight", self.in_flight.count());
        let mut idle_since = None;
        loop {
            let now = tokio::time::Instant::now();
            if self.in_flight.count() == 0 {
                let since = *idle_since.get_or_insert(now);
                if now - since >= SETTLE {
                    info!("drained: no request in flight, exiting");
                    self.access_log.close();
                    std::process::exit(0);
                }
            } else {
                idle_since = None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_requests() {
        let f = Arc::new(Requests::default());
        let a = f.enter();
        let b = f.enter();
        assert_eq!(f.count(), 2);
        drop(a);
        drop(b);
        assert_eq!(f.count(), 0);
    }
}
