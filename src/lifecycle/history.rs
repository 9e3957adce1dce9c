//! What the configuration in force came from: the file, when it was
//! loaded, and what the last reloads did, for the admin listener's
//! `/status`.
//!
//! The [`Reloader`](super::reload::Reloader) writes it after each reload,
//! applied or refused; the status page reads it. One small struct behind a
//! lock, passed by `Arc` to both: reloads are rare and a read copies a few
//! strings.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// The most errors of a refused reload kept; a file broken everywhere
/// lists one per key, and the log has them all.
const MAX_ERRORS: usize = 50;

/// A reload that was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub at: SystemTime,
    /// The generation of the snapshot it published.
    pub generation: u64,
    /// What changed, as logged: `+chat/gpu-4, -chat/gpu-2, ~pool code settings`.
    pub summary: String,
    /// Keys it changed that need a restart (`server.listen`), left as they were.
    pub needs_restart: Vec<String>,
}

/// A reload refused for an invalid file.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub at: SystemTime,
    /// Every error, as `-t` prints them (at most [`MAX_ERRORS`]).
    pub errors: Vec<String>,
}

/// What `/status` says of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigHistory {
    /// The file SIGHUP re-reads; `None` when there is none (the demo).
    pub path: Option<PathBuf>,
    /// When the process loaded its first configuration.
    pub started: SystemTime,
    pub last_applied: Option<Applied>,
    pub last_failed: Option<Failed>,
}

/// The shared record; see the module docs.
#[derive(Debug)]
pub struct ReloadHistory {
    inner: Mutex<ConfigHistory>,
}

impl ReloadHistory {
    pub fn new(path: Option<PathBuf>) -> Self {
        ReloadHistory {
            inner: Mutex::new(ConfigHistory {
                path,
                started: SystemTime::now(),
                last_applied: None,
                last_failed: None,
            }),
        }
    }

    fn with(&self, f: impl FnOnce(&mut ConfigHistory)) {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn applied(&self, generation: u64, summary: String, needs_restart: &[&str]) {
        let applied = Applied {
            at: SystemTime::now(),
            generation,
            summary,
            needs_restart: needs_restart.iter().map(|k| k.to_string()).collect(),
        };
        self.with(|h| h.last_applied = Some(applied));
    }

    pub fn failed(&self, mut errors: Vec<String>) {
        if errors.len() > MAX_ERRORS {
            let more = errors.len() - MAX_ERRORS;
            errors.truncate(MAX_ERRORS);
            errors.push(format!("... and {more} more (see the log)"));
        }
        let failed = Failed {
            at: SystemTime::now(),
            errors,
        };
        self.with(|h| h.last_failed = Some(failed));
    }

    /// A copy of what is known now.
    pub fn get(&self) -> ConfigHistory {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_of_each_and_bounds_the_errors() {
        let h = ReloadHistory::new(Some("/etc/switchyard/switchyard.yaml".into()));
        assert_eq!(h.get().last_applied, None);
        h.applied(2, "+chat/b".into(), &[]);
        h.applied(3, "-chat/b".into(), &["server.listen"]);
        h.failed((0..60).map(|i| format!("error {i}")).collect());
        let now = h.get();
        let applied = now.last_applied.unwrap();
        assert_eq!(
            (applied.generation, applied.summary.as_str()),
            (3, "-chat/b")
        );
        assert_eq!(applied.needs_restart, ["server.listen"]);
        let failed = now.last_failed.unwrap();
        assert_eq!(failed.errors.len(), MAX_ERRORS + 1);
        assert_eq!(failed.errors[MAX_ERRORS], "... and 10 more (see the log)");
    }
}
