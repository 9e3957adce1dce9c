//! SIGHUP: re-read the configuration file and swap the routing state in,
//! without dropping a request.
//!
//! Pingora does not handle SIGHUP, and its default action would kill the
//! process, so [`ReloadService`] installs a handler from inside Pingora's
//! runtime (a background service survives the daemon fork, a thread started
//! before `run_forever` would not). A file that fails to parse or validate
//! changes nothing. A reload also reopens the access log, at its new path
//! if `access_log.path` changed, and gives the TLS listeners the
//! certificates it read: validation has loaded and checked every one, so
//! a certificate that fails refuses the reload whole and the old ones
//! keep serving.

use super::history::ReloadHistory;
use crate::access_log::AccessLog;
use crate::background;
use crate::config::{AccessLogSpec, Config, ConfigErrors, ServerSettings};
use crate::metrics::Metrics;
use crate::state::SharedState;
use crate::tls::TlsListeners;
use async_trait::async_trait;
use log::{error, info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Applies configuration files to a running [`SharedState`].
pub struct Reloader {
    state: Arc<SharedState>,
    path: PathBuf,
    /// The server settings in force since start; a reload cannot change them.
    running: ServerSettings,
    /// The admin listener's address since start, which a reload cannot
    /// move either (its token, read per request, it can change).
    running_admin: Option<SocketAddr>,
    /// Counts reloads applied and refused.
    metrics: Arc<Metrics>,
    /// Given the reloaded `access_log:`.
    access_log: Arc<AccessLog>,
    /// Keeps the last of each, with its summary or errors, for `/status`.
    history: Arc<ReloadHistory>,
    /// The running TLS listeners' certificates, replaced by each reload.
    tls: Arc<TlsListeners>,
}

impl Reloader {
    pub fn new(
        state: Arc<SharedState>,
        path: PathBuf,
        running: ServerSettings,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
        history: Arc<ReloadHistory>,
        tls: Arc<TlsListeners>,
    ) -> Self {
        let running_admin = state.load().config.admin.as_ref().map(|a| a.listen);
        Reloader {
            state,
            path,
            running,
            running_admin,
            metrics,
            access_log,
            history,
            tls,
        }
    }

    /// Reads the file again and applies it if valid. Returns whether it did.
    pub async fn reload(&self) -> bool {
        // Reading the file and resolving host names may block.
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let loaded = loaded.unwrap_or_else(|e| {
            Err(ConfigErrors::one(
                "",
                format!("reading the configuration failed: {e}"),
            ))
        });
        let config = match loaded {
            Ok(c) => c,
            Err(errors) => {
                self.metrics.reloaded(false);
                let all: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
                error!("reload failed: {}", all.join("; "));
                self.history.failed(all);
                return false;
            }
        };
        let mut fixed = restart_only_changes(&self.running, &config.server);
        if config.admin.as_ref().map(|a| a.listen) != self.running_admin {
            fixed.push("admin.listen");
        }
        for warning in config.warnings(std::time::SystemTime::now()) {
            warn!("reload: {warning}");
        }
        // New handshakes get the new certificates from here on.
        if self.tls.reload(&config.server.tls) {
            fixed.push("server.listen (TLS added or removed)");
        }
        if !fixed.is_empty() {
            warn!(
                "reload: {} changed but need a restart or binary upgrade to apply; applying everything else",
                fixed.join(", ")
            );
        }
        let access_log = config.access_log.clone();
        let (next, diff) = self.state.prepare(config);
        let (generation, summary) = (next.generation, diff.summary(&next.config));
        let line = format!("reload {generation}: {summary}");
        // Backends the reload adds are checked before they are published:
        // a pool whose backends were all replaced serves from the first
        // request after the reload, not after the next round of checks.
        background::health::check_new(&next).await;
        // Recorded first, so that whoever sees the new generation (the
        // status page) also sees its reload.
        self.history.applied(generation, summary, &fixed);
        self.state.publish(next);
        self.configure_access_log(access_log).await;
        self.metrics.reloaded(true);
        info!("{line}");
        true
    }
}

impl Reloader {
    /// Applies `access_log:` and reopens the file. Opening a file and
    /// writing the lines so far may block on the disk, so it runs off this
    /// runtime, and a disk that does not answer holds up the reload for
    /// [`ACCESS_LOG_WAIT`] at most: the change then applies when the disk
    /// returns.
    async fn configure_access_log(&self, spec: Option<AccessLogSpec>) {
        let log = self.access_log.clone();
        let configure = tokio::task::spawn_blocking(move || log.configure(spec.as_ref()));
        match tokio::time::timeout(ACCESS_LOG_WAIT, configure).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!("reload: applying access_log failed: {e}"),
            Err(_) => warn!(
                "reload: the access log's file has not answered for {ACCESS_LOG_WAIT:?}; \
                 access_log applies when it does"
            ),
        }
    }
}

/// How long a reload waits for the access log's file: see
/// [`Reloader::configure_access_log`].
const ACCESS_LOG_WAIT: Duration = Duration::from_secs(5);

/// The `server.*` keys that differ: only a restart or upgrade applies them.
fn restart_only_changes(running: &ServerSettings, new: &ServerSettings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |differs: bool, key: &'static str| {
        if differs {
            changed.push(key);
        }
    };
    check(running.listen != new.listen, "server.listen");
    check(running.threads != new.threads, "server.threads");
    check(running.pid_file != new.pid_file, "server.pid_file");
    check(
        running.upgrade_sock != new.upgrade_sock,
        "server.upgrade_sock",
    );
    check(running.error_log != new.error_log, "server.error_log");
    check(
        running.grace_period != new.grace_period,
        "server.grace_period",
    );
    check(
        running.graceful_shutdown_timeout != new.graceful_shutdown_timeout,
        "server.graceful_shutdown_timeout",
    );
    check(
        running.upstream_keepalive_pool_size != new.upstream_keepalive_pool_size,
        "server.upstream_keepalive_pool_size",
    );
    check(
        running.work_stealing != new.work_stealing,
        "server.work_stealing",
    );
    changed
}

/// The background service that waits for SIGHUP.
pub struct ReloadService {
    reloader: Arc<Reloader>,
}

impl ReloadService {
    pub fn new(reloader: Arc<Reloader>) -> Self {
        ReloadService { reloader }
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot handle SIGHUP, reload is unavailable: {e}");
                return;
            }
        };
        info!("SIGHUP reloads {}", self.reloader.path.display());
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP received, reloading {}", self.reloader.path.display());
                    self.reloader.reload().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
