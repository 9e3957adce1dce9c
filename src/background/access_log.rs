//! The access log's writer: takes the buffered lines in batches and writes
//! them, and reopens the file on SIGUSR1 (logrotate's `postrotate`).
//!
//! It runs on a thread of its own (Pingora gives each background service
//! its runtime), so a write that blocks on a slow disk holds up nothing
//! else, and the requests, which only append to the buffer, least of all.
//! A batch goes out every [`FLUSH_EVERY`] while lines come, at once when
//! the buffer is half full, and at once for the first line after a quiet
//! spell, so an idle proxy's lines are not held back and a busy proxy
//! makes one `write` per tenth of a second.
//!
//! The service does not stop with the server's shutdown: requests that
//! finish during the grace period still log. The drain writes what is left
//! just before the process exits, and if Pingora stops this runtime first,
//! dropping the task writes it.

use crate::access_log::AccessLog;
use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How long a line may wait for its batch while lines keep coming: a
/// `tail -f` sees it at once to the eye, and at the highest request rates
/// a batch is still a few hundred KiB, one system call.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Writes the access log.
pub struct AccessLogService {
    log: Arc<AccessLog>,
}

impl AccessLogService {
    pub fn new(log: Arc<AccessLog>) -> Self {
        AccessLogService { log }
    }
}

/// Writes what is left when the writer's task is dropped: Pingora stopping
/// its runtimes (a fast shutdown, or the end of the grace period).
struct FlushOnDrop<'a>(&'a AccessLog);

impl Drop for FlushOnDrop<'_> {
    fn drop(&mut self) {
        self.0.flush_within(crate::access_log::CLOSE_WAIT);
    }
}

#[async_trait]
impl BackgroundService for AccessLogService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let _flush = FlushOnDrop(&self.log);
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => Some(s),
            Err(e) => {
                error!("cannot handle SIGUSR1, the access log cannot be reopened: {e}");
                None
            }
        };
        self.log.reopen();
        loop {
            let wrote = self.log.flush();
            tokio::select! {
                () = self.log.woken() => {}
                () = tokio::time::sleep(FLUSH_EVERY), if wrote => {}
                () = next(&mut usr1) => {
                    info!("SIGUSR1 received, reopening the access log");
                    self.log.reopen();
                }
            }
        }
    }
}

/// Waits for a signal that may not be handled at all.
async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
