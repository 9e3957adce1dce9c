//! The things measured: the mock reached directly, and Switchyard, a bare
//! Pingora proxy, nginx and HAProxy in front of it, each started as an
//! unprivileged-style child process with its configuration in a temporary
//! directory.
//!
//! The proxies are configured alike on purpose: the same number of workers
//! (threads or processes, `--workers`), HTTP/1.1 keep-alive to the client
//! and to the backend, no response buffering, no access log, no active
//! health check, timeouts long enough for held streams. Where a proxy's
//! defaults would make it reconnect or refuse in a way the others do not
//! (nginx's 1,000-request keep-alive limit, HAProxy's default connection
//! cap), the configuration says so next to the setting.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::https;
use crate::process::{check, find_program, free_port, write, Server, Spawn};
use crate::procfs;
use crate::tls::TlsFiles;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Direct,
    Switchyard,
    /// Pingora alone: see `bare`.
    Pingora,
    Nginx,
    Haproxy,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Direct,
        Kind::Switchyard,
        Kind::Pingora,
        Kind::Nginx,
        Kind::Haproxy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Switchyard => "Switchyard",
            Kind::Pingora => "Pingora",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "HAProxy",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.label().eq_ignore_ascii_case(name.trim()))
    }
}

/// What every proxy is started with.
pub struct Launch<'a> {
    /// The mock backend, always on 127.0.0.1.
    pub backend: SocketAddr,
    /// Scratch directory for configurations, pid files and logs.
    pub dir: &'a Path,
    /// `taskset -c` list for the proxy, if pinning.
    pub cpus: Option<&'a str>,
    /// Where `switchyard` was built (`target/release`).
    pub bin_dir: &'a Path,
    /// Connections each proxy must accept at once (held streams + slack).
    pub max_conns: u64,
    /// Open-file limit the proxies inherit.
    pub nofile: u64,
    /// Workers of each proxy: threads or processes.
    pub workers: usize,
    /// Terminate TLS with this certificate (workloads 7 and 8).
    pub tls: Option<&'a TlsFiles>,
    /// Reach the backend over TLS, trusting this certificate (workload 9).
    pub upstream_tls: Option<&'a TlsFiles>,
    /// YAML appended to Switchyard's configuration: the `auth` and
    /// `limits` of workload 10.
    pub switchyard_extra: &'a str,
}

/// One measured target, running. Dropping it kills the proxy.
pub struct Target {
    pub kind: Kind,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The proxy's process; `None` for direct.
    server: Option<Server>,
    /// Resident memory once listening, before any load, KiB.
    pub rss_at_start: u64,
    /// Switchyard's admin listener, where its `/metrics` are (workload 9).
    pub admin: Option<SocketAddr>,
}

impl Target {
    pub fn direct(backend: SocketAddr) -> Target {
        Target {
            kind: Kind::Direct,
            addr: backend,
            server: None,
            rss_at_start: 0,
            admin: None,
        }
    }

    /// Starts a proxy of `kind`; `Err` says why it is skipped.
    pub fn start(kind: Kind, launch: &Launch) -> Result<Target, String> {
        let addr = free_port()?;
        let dir = launch.dir.join(kind.label().to_ascii_lowercase());
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let admin = match (kind, launch.upstream_tls) {
            (Kind::Switchyard, Some(_)) => Some(free_port()?),
            _ => None,
        };
        let spawn = match kind {
            Kind::Direct => return Ok(Target::direct(launch.backend)),
            Kind::Switchyard => switchyard(addr, admin, &dir, launch)?,
            Kind::Pingora => pingora(addr, &dir, launch)?,
            Kind::Nginx => nginx(addr, &dir, launch)?,
            Kind::Haproxy => haproxy(addr, &dir, launch)?,
        };
        let server = Server::start(addr, spawn, launch.cpus)?;
        let mut target = Target {
            kind,
            addr,
            server: Some(server),
            rss_at_start: 0,
            admin,
        };
        target.rss_at_start = target.rss_kib();
        Ok(target)
    }

    /// The proxy's pid (nginx: the master's).
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Server::pid)
    }

    /// CPU ticks of the proxy and its workers; 0 for direct.
    pub fn cpu_ticks(&self) -> u64 {
        self.pid().map_or(0, procfs::tree_ticks)
    }

    /// Open descriptors of the proxy and its workers; 0 for direct.
    pub fn fds(&self) -> usize {
        self.pid().map_or(0, procfs::tree_fds)
    }

    /// Resident memory of the proxy and its workers, KiB; 0 for direct.
    pub fn rss_kib(&self) -> u64 {
        self.pid().map_or(0, procfs::tree_rss_kib)
    }

    /// The last lines of the proxy's log, for error messages.
    pub fn log_tail(&self) -> String {
        self.server
            .as_ref()
            .map(Server::log_tail)
            .unwrap_or_default()
    }
}

fn switchyard(
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    dir: &Path,
    launch: &Launch,
) -> Result<Spawn, String> {
    let program = launch.bin_dir.join("switchyard");
    if !program.is_file() {
        return Err(format!(
            "{} not found: run through `benches/run.sh` or `cargo bench --bench compare`",
            program.display()
        ));
    }
    let conf = dir.join("switchyard.yaml");
    // Health checks off: nginx and HAProxy get none either, and a TCP check
    // would show up as backend connections in the reuse figure.
    let listen = match launch.tls {
        Some(tls) => format!(
            "[{{ addr: \"{addr}\", tls: {{ cert: \"{}\", key: \"{}\" }} }}]",
            tls.cert.display(),
            tls.key.display()
        ),
        None => format!("[\"{addr}\"]"),
    };
    let backend = match launch.upstream_tls {
        Some(tls) => https::switchyard_backend(launch.backend, &tls.cert),
        None => format!("{{ name: mock, url: \"http://{}\" }}", launch.backend),
    };
    // The admin listener only where its metrics are read (workload 9).
    let admin = admin
        .map(|a| format!("admin: {{ listen: \"{a}\" }}\n"))
        .unwrap_or_default();
    let text = format!(
        r#"server:
  listen: {listen}
  threads: {workers}
  pid_file: "{dir}/switchyard.pid"
  upgrade_sock: "{dir}/upgrade.sock"
pools:
  chat:
    strategy: round_robin
    retries: 2
    timeouts: {{ connect: 2s, first_byte: 300s, idle: 60s }}
    health_check: {{ type: none }}
    backends:
      - {backend}
routes:
  - {{ pool: chat }}
{admin}{extra}"#,
        extra = launch.switchyard_extra,
        dir = dir.display(),
        workers = launch.workers,
    );
    write(&conf, &text)?;
    let conf_s = conf.display().to_string();
    check(&program, &["-t", "-c", &conf_s])?;
    Ok((program, vec!["-c".into(), conf_s], dir.join("stderr.log")))
}

/// The harness itself, run again as the bare Pingora proxy (`bare`).
fn pingora(addr: SocketAddr, dir: &Path, launch: &Launch) -> Result<Spawn, String> {
    let program =
        std::env::current_exe().map_err(|e| format!("cannot find the harness binary: {e}"))?;
    let mut args = vec![
        "--serve-pingora".into(),
        addr.to_string(),
        "--backend".into(),
        launch.backend.to_string(),
        "--workers".into(),
        launch.workers.to_string(),
    ];
    if let Some(tls) = launch.upstream_tls {
        args.extend(["--backend-ca".into(), tls.cert.display().to_string()]);
    }
    Ok((program, args, dir.join("stderr.log")))
}

fn nginx(addr: SocketAddr, dir: &Path, launch: &Launch) -> Result<Spawn, String> {
    let program =
        find_program("nginx").ok_or("nginx is not installed (apt-get install -y nginx-light)")?;
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    // Either worker may end up with every held stream, and each stream is
    // two connections (client and upstream), so each worker gets room for
    // all of them.
    let worker_conns = launch.max_conns * 2 + 64;
    // TLS as Switchyard's: 1.3 only, the certificate alone (no OCSP, no
    // session cache or tickets, so a new connection is a full handshake
    // on both sides).
    let listen = match launch.tls {
        Some(tls) => format!(
            "{addr} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};\n        \
             ssl_protocols TLSv1.3;\n        ssl_session_cache off;\n        ssl_session_tickets off",
            tls.cert.display(),
            tls.key.display()
        ),
        None => addr.to_string(),
    };
    let (scheme, upstream_tls) = match launch.upstream_tls {
        Some(tls) => ("https", https::nginx_location(&tls.cert)),
        None => ("http", String::new()),
    };
    let text = format!(
        r#"worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {worker_conns}; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    # The default of 1,000 requests per client connection would make the
    # load generator reconnect, which the other proxies do not ask of it.
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream mock {{
        server {backend};
        keepalive 128;
        # Likewise upstream: recycle no connection during the run.
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass {scheme}://mock;
            {upstream_tls}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"#,
        nofile = launch.nofile,
        backend = launch.backend,
        workers = launch.workers,
    );
    nginx_spawn(program, dir, &conf, &text)
}

/// Writes an nginx configuration to `conf`, has nginx check it, and returns
/// how to run it with `dir` as its prefix and error log: for the nginx
/// proxy target and the static backend alike.
pub fn nginx_spawn(program: PathBuf, dir: &Path, conf: &Path, text: &str) -> Result<Spawn, String> {
    write(conf, text)?;
    let prefix = format!("{}/", dir.display());
    let conf_s = conf.display().to_string();
    let err_log = dir.join("error.log");
    let err_s = err_log.display().to_string();
    check(
        &program,
        &["-t", "-q", "-p", &prefix, "-c", &conf_s, "-e", &err_s],
    )?;
    let args = vec!["-p".into(), prefix, "-c".into(), conf_s, "-e".into(), err_s];
    Ok((program, args, err_log))
}

fn haproxy(addr: SocketAddr, dir: &Path, launch: &Launch) -> Result<Spawn, String> {
    let program =
        find_program("haproxy").ok_or("haproxy is not installed (apt-get install -y haproxy)")?;
    let conf = dir.join("haproxy.cfg");
    // HAProxy's connection cap would otherwise come from the open-file
    // limit and its frontend default of a few thousand; held streams need
    // more. It refuses to start if the cap needs more descriptors than the
    // hard limit allows (two per connection, plus a few), hence the bound.
    //
    // `option http-no-delay`: without it HAProxy sends a response it knows
    // continues with MSG_MORE, so the kernel holds an SSE stream's first
    // token back for about 200 ms (measured: 260 ms time to first token
    // against 52 ms direct). Anyone proxying token streams sets it.
    let maxconn = (launch.max_conns + 64).min(launch.nofile.saturating_sub(100) / 2);
    let text = format!(
        r#"global
    nbthread {workers}
    maxconn {maxconn}

defaults
    mode http
    maxconn {maxconn}
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    http-reuse always
    option http-no-delay

frontend fe
    bind {addr}
    default_backend be

backend be
    server mock {backend}{upstream_tls}
"#,
        upstream_tls = launch
            .upstream_tls
            .map(|tls| https::haproxy_server(&tls.cert))
            .unwrap_or_default(),
        backend = launch.backend,
        workers = launch.workers,
    );
    write(&conf, &text)?;
    let conf_s = conf.display().to_string();
    check(&program, &["-c", "-q", "-f", &conf_s])?;
    Ok((
        program,
        vec!["-f".into(), conf_s, "-db".into()],
        dir.join("stderr.log"),
    ))
}
