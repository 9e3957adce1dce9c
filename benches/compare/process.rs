//! Child processes that serve HTTP on 127.0.0.1: the proxies and the static
//! backend. Each is started pinned (`taskset`), counts as started once it
//! accepts a connection, and is killed with its worker processes when
//! dropped.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procfs;

/// How long a server may take to start listening before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What to run: the program, its arguments, and the file its errors go to
/// (its stderr, or the error log it is told to write).
pub type Spawn = (PathBuf, Vec<String>, PathBuf);

/// A server running as a child process. Dropping it kills it.
pub struct Server {
    child: Child,
    /// Its stderr or error log, shown when it fails.
    log: PathBuf,
}

impl Server {
    /// Runs `spawn` on `cpus` (a `taskset -c` list, if pinning) and waits
    /// until it accepts connections on `addr`.
    pub fn start(addr: SocketAddr, spawn: Spawn, cpus: Option<&str>) -> Result<Server, String> {
        let (program, args, log) = spawn;
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let stderr = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let mut server = Server { child, log };
        server.wait_listening(addr)?;
        Ok(server)
    }

    /// The server's pid (nginx: the master's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    fn wait_listening(&mut self, addr: SocketAddr) -> Result<(), String> {
        let until = Instant::now() + START_TIMEOUT;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited at start ({status}):\n{}", self.log_tail()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "not listening on {addr} after {START_TIMEOUT:?}:\n{}",
            self.log_tail()
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Workers first found, then the master killed, then the workers:
        // killing a worker first would only make nginx's master respawn it.
        let workers = procfs::children(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in workers {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A free port on 127.0.0.1. Another process could take it before the server
/// binds it; on a benchmark machine that race is not worth more code.
pub fn free_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

/// `program`, if it is on the PATH or given as a path that exists.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs a configuration check (`-t`/`-c`) and turns a failure into the skip
/// message, so a bad configuration is reported as such and not as a server
/// that never started listening.
pub fn check(program: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let mut msg = format!("configuration check failed ({}):", out.status);
    for stream in [&out.stdout, &out.stderr] {
        let _ = write!(msg, "\n{}", String::from_utf8_lossy(stream).trim());
    }
    Err(msg)
}
