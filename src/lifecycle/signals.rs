//! Process signals that end or replace the process: Pingora's own
//! (QUIT upgrade, TERM graceful stop, INT fast stop) plus USR2, which starts
//! the binary on disk as the upgrade of this process.
//!
//! Pingora's binary upgrade needs the new process started with `-u` next to
//! the old one, then SIGQUIT to the old. Under a service manager the new
//! process must also be started *by the service* (same cgroup, user and
//! sandbox), which an operator's shell cannot do. SIGUSR2 does both steps
//! from inside: it checks the configuration with the new binary, starts it
//! with `-u`, and hands the listening sockets over as SIGQUIT would. If the
//! new binary cannot start, this process keeps serving.
//!
//! SIGHUP (reload) is handled by [`crate::lifecycle::reload`], and SIGUSR1
//! (reopen the access log, for logrotate) by the access log's writer
//! (`background::access_log`), not here, since they do not end the process.

use async_trait::async_trait;
use log::{error, info, warn};
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How to start this program again as its own upgrade.
#[derive(Debug, Clone)]
pub struct UpgradeCommand {
    /// The binary's path as it was at start; after a package manager
    /// replaced the file, the same path names the new binary.
    pub exe: PathBuf,
    /// Arguments besides `-u`: the configuration file and `-d` if daemonized.
    pub args: Vec<OsString>,
    /// Where the new process waits for the listeners.
    pub upgrade_sock: PathBuf,
}

/// How long the new binary gets to start listening on the upgrade socket.
const NEW_BINARY_START: Duration = Duration::from_secs(15);

impl UpgradeCommand {
    /// Validates the configuration with the new binary, then starts it with
    /// `-u` and waits until it listens for the sockets.
    async fn start(&self) -> Result<(), String> {
        // Awaited, not blocked on: this runs on the server's main runtime.
        let check = tokio::process::Command::new(&self.exe)
            .arg("-t")
            .args(&self.args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.exe.display()))?;
        if !check.status.success() {
            return Err(format!(
                "{} -t failed: {}",
                self.exe.display(),
                String::from_utf8_lossy(&check.stderr).trim()
            ));
        }
        // A socket file left by an earlier upgrade would look ready.
        let _ = std::fs::remove_file(&self.upgrade_sock);
        let mut child = Command::new(&self.exe)
            .arg("-u")
            .args(&self.args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let end = tokio::time::Instant::now() + NEW_BINARY_START;
        loop {
            if self.upgrade_sock.exists() {
                // Reap the foreground half of a daemonizing child later,
                // without blocking this runtime.
                std::thread::spawn(move || child.wait());
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                if !status.success() {
                    return Err(format!("the new binary exited with {status}"));
                }
            }
            if tokio::time::Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the new binary did not open {} within {NEW_BINARY_START:?}",
                    self.upgrade_sock.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The server's shutdown signals, plus USR2 when an upgrade command is known.
pub struct SignalWatch {
    upgrade: Option<UpgradeCommand>,
}

impl SignalWatch {
    pub fn new(upgrade: Option<UpgradeCommand>) -> Self {
        SignalWatch { upgrade }
    }
}

fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            error!("cannot handle {name}: {e}");
            None
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

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = listen(SignalKind::quit(), "SIGQUIT");
        let mut term = listen(SignalKind::terminate(), "SIGTERM");
        let mut int = listen(SignalKind::interrupt(), "SIGINT");
        let mut usr2 = listen(SignalKind::user_defined2(), "SIGUSR2");
        loop {
            tokio::select! {
                _ = next(&mut quit) => return ShutdownSignal::GracefulUpgrade,
                _ = next(&mut term) => return ShutdownSignal::GracefulTerminate,
                _ = next(&mut int) => return ShutdownSignal::FastShutdown,
                _ = next(&mut usr2) => {
                    let Some(upgrade) = &self.upgrade else {
                        warn!("SIGUSR2 ignored: no configuration file to upgrade with");
                        continue;
                    };
                    info!("SIGUSR2 received, starting {} as the upgrade", upgrade.exe.display());
                    match upgrade.start().await {
                        Ok(()) => {
                            info!("new binary is waiting for the listeners, handing them over");
                            return ShutdownSignal::GracefulUpgrade;
                        }
                        Err(e) => error!("upgrade aborted, still serving: {e}"),
                    }
                }
            }
        }
    }
}
