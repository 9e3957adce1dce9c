//! The files named under `server:`: their directories must exist.
//!
//! Kept apart from validation, which touches no file so that tests need
//! none and a reload does not depend on the disk. `switchyard -t` runs it,
//! so a typo in a directory is found by `systemctl reload` (whose
//! `ExecReload` runs `-t`) and not by the next start or upgrade.

use super::validate::server::RUNTIME_DIR;
use super::{Config, ConfigError};
use std::io::ErrorKind;
use std::path::Path;

impl Config {
    /// Checks that the directories of `server.pid_file`,
    /// `server.upgrade_sock` and `server.error_log` exist and are
    /// directories, and that none of those paths is itself a directory.
    /// Paths in [`RUNTIME_DIR`] are not checked while it does not exist:
    /// systemd's `RuntimeDirectory=` creates it when the service starts, and
    /// `-t` must pass before that.
    pub fn check_paths(&self) -> Vec<ConfigError> {
        let s = &self.server;
        check(
            [
                ("server.pid_file", Some(&s.pid_file)),
                ("server.upgrade_sock", Some(&s.upgrade_sock)),
                ("server.error_log", s.error_log.as_ref()),
            ],
            false,
        )
    }

    /// What a start with `-d` writes at once, the pid file and the error
    /// log, checked without exception: the daemon writes them as it
    /// detaches, after the starting process has already exited 0, so a
    /// missing directory would leave nothing running and nothing said.
    pub fn check_daemon_paths(&self) -> Vec<ConfigError> {
        let s = &self.server;
        check(
            [
                ("server.pid_file", Some(&s.pid_file)),
                ("server.error_log", s.error_log.as_ref()),
            ],
            true,
        )
    }
}

fn check<'a>(
    files: impl IntoIterator<Item = (&'static str, Option<&'a String>)>,
    strict: bool,
) -> Vec<ConfigError> {
    files
        .into_iter()
        .filter_map(|(key, file)| {
            let message = problem(file?, strict)?;
            Some(ConfigError {
                path: key.to_string(),
                message,
            })
        })
        .collect()
}

/// What is wrong with the place of `file`, if anything; unless `strict`,
/// a missing [`RUNTIME_DIR`] is not.
fn problem(file: &str, strict: bool) -> Option<String> {
    if file.is_empty() {
        return Some("is empty".into());
    }
    let path = Path::new(file);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Err(_) if !strict && dir == Path::new(RUNTIME_DIR) => return None,
        Ok(_) => return Some(format!("{file:?}: {} is not a directory", dir.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Some(format!(
                "{file:?}: directory {} does not exist",
                dir.display()
            ))
        }
        Err(e) => return Some(format!("{file:?}: cannot read {}: {e}", dir.display())),
    }
    path.is_dir()
        .then(|| format!("{file:?} is a directory, not a file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pid_file: &str, upgrade_sock: &str, error_log: Option<&str>) -> Config {
        let log = error_log.map_or(String::new(), |l| format!("  error_log: {l:?}\n"));
        let yaml = format!(
            "server:\n  pid_file: {pid_file:?}\n  upgrade_sock: {upgrade_sock:?}\n{log}\
             pools:\n  a:\n    backends: [{{ url: \"http://127.0.0.1:1\" }}]\n"
        );
        Config::from_yaml(&yaml).unwrap()
    }

    #[test]
    fn existing_directories_pass() {
        let dir = tempfile::tempdir().unwrap();
        let at = |f: &str| dir.path().join(f).display().to_string();
        let c = config(&at("s.pid"), &at("u.sock"), Some(&at("e.log")));
        assert_eq!(c.check_paths(), vec![]);
    }

    #[test]
    fn missing_directory_file_as_directory_and_directory_as_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let missing = dir.path().join("nope/s.pid").display().to_string();
        let under_file = file.join("u.sock").display().to_string();
        let a_dir = dir.path().display().to_string();
        let c = config(&missing, &under_file, Some(&a_dir));
        let all: Vec<String> = c.check_paths().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            all,
            vec![
                format!(
                    "server.pid_file: {missing:?}: directory {} does not exist",
                    dir.path().join("nope").display()
                ),
                format!(
                    "server.upgrade_sock: {under_file:?}: {} is not a directory",
                    file.display()
                ),
                format!("server.error_log: {a_dir:?} is a directory, not a file"),
            ]
        );
    }

    #[test]
    fn the_runtime_directory_may_not_exist_yet() {
        // Where it does exist (a machine running the service), its files
        // must still pass; where it does not, they are skipped.
        let c = config(
            "/run/switchyard/switchyard.pid",
            "/run/switchyard/upgrade.sock",
            None,
        );
        if !Path::new(RUNTIME_DIR).exists() {
            assert_eq!(c.check_paths(), vec![]);
        }
        let c = config("/run/switchyard-nope/s.pid", "/run/switchyard/u.sock", None);
        assert_eq!(c.check_paths().len(), 1, "{:?}", c.check_paths());
        assert_eq!(c.check_paths()[0].path, "server.pid_file");
    }
}
