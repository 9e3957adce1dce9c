//! The static backend of workload 6: nginx answering every request with one
//! fixed completion, the very body the mock returns for the harness's
//! request, so the proxies forward the same bytes as behind the mock. Its
//! `/v1/models` is the mock's too, so Switchyard discovers the same model
//! list and routes as it does behind the mock.
//!
//! Why nginx's `return`: the point is a backend that costs far less CPU per
//! request than any proxy in front of it, so that the proxy is what runs out
//! of CPU. nginx answering from memory, with no upstream, costs about half
//! of what nginx costs as a proxy (its own request parsing and response
//! write, without the upstream side), where the in-process mock costs as
//! much as the cheaper proxies (routing, JSON, hyper). It is also already
//! needed for the nginx target, and it runs as a process of its own, so its
//! CPU is read from `/proc` like a proxy's. A static file would do as well
//! but nginx refuses `POST` to one (405).
//!
//! For workload 9 it listens with TLS instead (see `https`), and counts
//! the connections it accepts on a plain status port of its own.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use crate::process::{find_program, free_port, Server};
use crate::procfs;
use crate::targets::nginx_spawn;
use crate::tls::TlsFiles;

/// nginx serving one fixed completion on 127.0.0.1. Dropping it stops it.
pub struct StaticBackend {
    /// Where workload 6's proxies forward to, and its direct target.
    pub addr: SocketAddr,
    /// nginx's `stub_status`, when listening with TLS (workload 9): how
    /// many connections the proxies opened to it.
    pub status: Option<SocketAddr>,
    /// nginx's master process, whose tree's CPU is the backend's.
    server: Server,
}

impl StaticBackend {
    /// Starts nginx with `workers` worker processes on `cpus` (a `taskset`
    /// list, if pinning), answering `GET /v1/models` with `models` and every
    /// other request with `completion`, both JSON; over TLS with `tls`'s
    /// certificate when given. `Err` says why the workload is skipped.
    pub fn start(
        completion: &str,
        models: &str,
        dir: &Path,
        cpus: Option<&str>,
        workers: usize,
        tls: Option<&TlsFiles>,
    ) -> Result<StaticBackend, String> {
        let program = find_program("nginx")
            .ok_or("nginx is not installed (apt-get install -y nginx-light)")?;
        let addr = free_port()?;
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("nginx.conf");
        let d = dir.display();
        let (listen, status) = match tls {
            Some(tls) => (crate::https::backend_listen(addr, tls), Some(free_port()?)),
            None => (addr.to_string(), None),
        };
        let status_server = status.map(crate::https::status_server).unwrap_or_default();
        let text = format!(
            r#"worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    # Every proxy keeps its upstream connections for the whole run; the
    # default of 1,000 requests per connection would make them reconnect.
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen {listen};
        default_type application/json;
        location = /v1/models {{
            return 200 '{models}';
        }}
        location / {{
            return 200 '{completion}';
        }}
    }}
{status_server}}}
"#,
            completion = quote(completion)?,
            models = quote(models)?,
        );
        let spawn = nginx_spawn(program, dir, &conf, &text)?;
        let server = Server::start(addr, spawn, cpus)?;
        Ok(StaticBackend {
            addr,
            status,
            server,
        })
    }

    /// CPU ticks of nginx's master and workers.
    pub fn cpu_ticks(&self) -> u64 {
        procfs::tree_ticks(self.server.pid())
    }
}

/// `text` inside an nginx single-quoted string: backslashes and quotes
/// escaped. `return` expands `$name` as a variable and has no escape for a
/// literal `$`, so a body with one is refused rather than served altered.
fn quote(text: &str) -> Result<String, String> {
    if text.contains('$') {
        return Err(
            "the mock's answer contains '$', which nginx's `return` would read as a variable"
                .into(),
        );
    }
    Ok(text.replace('\\', "\\\\").replace('\'', "\\'"))
}
