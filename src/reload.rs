//! SIGHUP: re-read the configuration file and swap the routing state in,
//! without dropping a request.
//!
//! Pingora does not handle SIGHUP, and its default action would kill the
//! process, so [`ReloadService`] installs a handler from inside Pingora's
//! runtime (a background service survives the daemon fork, a thread started
//! before `run_forever` would not). A file that fails to parse or validate
//! changes nothing.

use crate::config::{Config, ServerSettings};
use crate::state::{SharedState, Snapshot};
use async_trait::async_trait;
use log::{error, info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts of reload outcomes, for logs now and metrics later.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
}

/// Applies configuration files to a running [`SharedState`].
pub struct Reloader {
    state: Arc<SharedState>,
    path: PathBuf,
    /// The server settings in force since start; a reload cannot change them.
    running: ServerSettings,
    pub stats: ReloadStats,
}

impl Reloader {
    pub fn new(state: Arc<SharedState>, path: PathBuf, running: ServerSettings) -> Self {
        Reloader {
            state,
            path,
            running,
            stats: ReloadStats::default(),
        }
    }

    /// Reads the file again and applies it if valid. Returns whether it did.
    pub fn reload(&self) -> bool {
        let config = match Config::load(&self.path) {
            Ok(c) => c,
            Err(errors) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let all: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
                error!("reload failed: {}", all.join("; "));
                return false;
            }
        };
        let fixed = restart_only_changes(&self.running, &config.server);
        if !fixed.is_empty() {
            warn!(
                "reload: {} changed but need a restart or binary upgrade to apply; applying everything else",
                fixed.join(", ")
            );
        }
        let old = self.state.replace(config);
        let new = self.state.load_full();
        self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
        info!("reload {}: {}", new.generation, summary(&old, &new));
        true
    }
}

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

/// One line: pools and backends added, removed and changed.
pub fn summary(old: &Snapshot, new: &Snapshot) -> String {
    let mut parts = Vec::new();
    for pool in &new.pools {
        let name = &pool.spec.name;
        let Some(before) = old.pool(name) else {
            parts.push(format!(
                "+pool {name} ({} backends)",
                pool.spec.backends.len()
            ));
            continue;
        };
        for b in &pool.spec.backends {
            match before.spec.backends.iter().find(|x| x.addr == b.addr) {
                None => parts.push(format!("+{name}/{}", b.name)),
                Some(x) if x != b => parts.push(format!("~{name}/{}", b.name)),
                Some(_) => {}
            }
        }
        for b in &before.spec.backends {
            if !pool.spec.backends.iter().any(|x| x.addr == b.addr) {
                parts.push(format!("-{name}/{}", b.name));
            }
        }
        let (a, b) = (&before.spec, &pool.spec);
        if a.strategy != b.strategy
            || a.retries != b.retries
            || a.timeouts != b.timeouts
            || a.health != b.health
        {
            parts.push(format!("~pool {name} settings"));
        }
    }
    for pool in &old.pools {
        if new.pool(&pool.spec.name).is_none() {
            parts.push(format!("-pool {}", pool.spec.name));
        }
    }
    let routes = |s: &Snapshot| {
        format!(
            "{:?}",
            s.config
                .routes
                .iter()
                .map(|r| (
                    &r.path_prefix,
                    r.header.as_ref().map(|h| (&h.name, h.regex.as_str())),
                    &r.pool
                ))
                .collect::<Vec<_>>()
        )
    };
    if routes(old) != routes(new) {
        parts.push(format!("routes: {}", new.config.routes.len()));
    }
    if parts.is_empty() {
        "no changes".into()
    } else {
        parts.join(", ")
    }
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
                    let reloader = self.reloader.clone();
                    // Reading and resolving the file may block.
                    let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
