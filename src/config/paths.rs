//! The files the server writes: the directories of those named under
//! `server:` must exist, and the access log's file must be writable.
//!
//! Kept apart from validation, which touches no file so that tests need
//! none and a reload does not depend on the disk. `switchyard -t` runs it,
//! so a typo in a directory is found by `systemctl reload` (whose
//! `ExecReload` runs `-t`) and not by the next start or upgrade.

use super::validate::server::RUNTIME_DIR;
use super::{Config, ConfigError, LogPath};
use std::io::ErrorKind;
use std::path::Path;

impl Config {
    /// Checks that the directories of `server.pid_file`,
    /// `server.upgrade_sock` and `server.error_log` exist and are
    /// directories, and that none of those paths is itself a directory.
    /// Paths in [`RUNTIME_DIR`] are not checked while it does not exist:
    /// systemd's `RuntimeDirectory=` creates it when the service starts, and
    /// `-t` must pass before that. The access log's file, if it exists, or
    /// else its directory, must be writable by this user.
    pub fn check_paths(&self) -> Vec<ConfigError> {
        let s = &self.server;
        let mut problems = check(
            [
                ("server.pid_file", Some(&s.pid_file)),
                ("server.upgrade_sock", Some(&s.upgrade_sock)),
                ("server.error_log", s.error_log.as_ref()),
            ],
            false,
        );
        if let Some(LogPath::File(file)) = self.access_log.as_ref().map(|a| &a.path) {
            if let Some(message) = unwritable(file) {
                problems.push(ConfigError {
                    path: "access_log.path".into(),
                    message,
                });
            }
        }
        problems
    }

    /// What a start with `-d` writes at once, the pid file and the error
    /// log, checked without exception: the daemon writes them as it
    /// detaches, after the starting process has already exited 0, so a
    /// missing directory would leave nothing running and nothing said.
    /// An access log on stdout is refused when `server.error_log` is set:
    /// the daemon's standard output is then `/dev/null`.
    pub fn check_daemon_paths(&self) -> Vec<ConfigError> {
        let s = &self.server;
        let mut problems = check(
            [
                ("server.pid_file", Some(&s.pid_file)),
                ("server.error_log", s.error_log.as_ref()),
            ],
            true,
        );
        let on_stdout = self.access_log.as_ref().map(|a| &a.path) == Some(&LogPath::Stdout);
        if on_stdout && s.error_log.is_some() {
            problems.push(ConfigError {
                path: "access_log.path".into(),
                message: "stdout is /dev/null for a daemon that has server.error_log; \
                          name a file"
                    .into(),
            });
        }
        problems
    }
}

/// What keeps Switchyard from appending to `file`, if anything: a missing
/// directory, a directory where the file should be, or no permission to
/// write the file (when it exists) or to create it (when it does not).
fn unwritable(file: &Path) -> Option<String> {
    let shown = file.display().to_string();
    if let Some(problem) = problem(&shown, true) {
        return Some(problem);
    }
    let dir = file.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(file) {
        Ok(_) if !may_write(file) => Some(format!("{shown:?} is not writable")),
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::NotFound && !may_write(dir) => Some(format!(
            "{shown:?}: directory {} is not writable, so the file cannot be created",
            dir.display()
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => Some(format!("{shown:?}: {e}")),
    }
}

/// Whether this process may write `path`, as the kernel would decide
/// (`access(2)`): permissions, and a read-only file system.
fn may_write(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
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

    fn with_access_log(path: &str) -> Config {
        let yaml = format!(
            "access_log: {{ path: {path:?} }}\n\
             pools:\n  a:\n    backends: [{{ url: \"http://127.0.0.1:1\" }}]\n"
        );
        Config::from_yaml(&yaml).unwrap()
    }

    /// The access log's problems only: the default pid file's directory
    /// may be missing on this machine.
    fn access_log_problems(path: &str) -> Vec<String> {
        with_access_log(path)
            .check_paths()
            .iter()
            .filter(|e| e.path == "access_log.path")
            .map(|e| e.message.clone())
            .collect()
    }

    #[test]
    fn the_access_log_must_be_writable() {
        let dir = tempfile::tempdir().unwrap();
        let at = |f: &str| dir.path().join(f).display().to_string();
        assert_eq!(access_log_problems(&at("new.log")), Vec::<String>::new());
        std::fs::write(at("old.log"), "").unwrap();
        assert_eq!(access_log_problems(&at("old.log")), Vec::<String>::new());
        // A device every write fails on is still a file one may open.
        assert_eq!(access_log_problems("/dev/full"), Vec::<String>::new());
        let missing = at("nope/a.log");
        assert_eq!(
            access_log_problems(&missing),
            vec![format!(
                "{missing:?}: directory {} does not exist",
                dir.path().join("nope").display()
            )]
        );
        std::fs::create_dir(at("d")).unwrap();
        assert_eq!(
            access_log_problems(&at("d")),
            vec![format!("{:?} is a directory, not a file", at("d"))]
        );
        // Permissions mean nothing to root, which may write anything.
        if unsafe { libc::geteuid() } != 0 {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.path().join("ro");
            std::fs::create_dir(&ro).unwrap();
            std::fs::write(ro.join("old.log"), "").unwrap();
            let read_only = std::fs::Permissions::from_mode(0o555);
            std::fs::set_permissions(ro.join("old.log"), read_only.clone()).unwrap();
            std::fs::set_permissions(&ro, read_only).unwrap();
            let new = ro.join("new.log").display().to_string();
            let old = ro.join("old.log").display().to_string();
            assert_eq!(
                access_log_problems(&new),
                vec![format!(
                    "{new:?}: directory {} is not writable, so the file cannot be created",
                    ro.display()
                )]
            );
            assert_eq!(
                access_log_problems(&old),
                vec![format!("{old:?} is not writable")]
            );
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn a_daemon_with_an_error_log_has_no_stdout() {
        let yaml = "server:\n  error_log: /tmp/e.log\naccess_log: { path: stdout }\n\
                    pools:\n  a:\n    backends: [{ url: \"http://127.0.0.1:1\" }]\n";
        let problems = Config::from_yaml(yaml).unwrap().check_daemon_paths();
        let keys: Vec<&str> = problems.iter().map(|e| e.path.as_str()).collect();
        assert!(keys.contains(&"access_log.path"), "{problems:?}");
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
