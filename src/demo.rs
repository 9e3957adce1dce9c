//! `switchyard --demo`: a mock fleet of three backends and the proxy in
//! front of them, in one process, to try Switchyard with nothing installed.

use crate::config::Config;
use crate::mock::{MockConfig, MockServer};
use async_trait::async_trait;
use log::error;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// The models each demo backend serves: one on all three, so repeated
/// requests show round-robin over the fleet, and one of each backend's own,
/// so the fleet's model list and routing by model have something to show.
/// Tests that drive the demo read them from here.
pub const MODELS: [&[&str]; 3] = [
    &["llama3.1:8b", "qwen2.5-coder:7b"],
    &["llama3.1:8b", "mistral:7b"],
    &["llama3.1:8b", "phi3:mini"],
];

/// The three mock backends, bound before the server starts so that their
/// addresses can go into the proxy's configuration.
pub struct DemoFleet {
    /// Taken by the service when it starts; the listeners must be turned into
    /// tokio listeners inside the runtime that serves them.
    backends: Mutex<Vec<(std::net::TcpListener, MockConfig)>>,
}

impl DemoFleet {
    /// Binds three mock backends on loopback ports chosen by the system.
    pub fn bind() -> std::io::Result<(DemoFleet, Vec<(String, SocketAddr)>)> {
        let mut backends = Vec::new();
        let mut addrs = Vec::new();
        for (i, models) in MODELS.into_iter().enumerate() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            let name = format!("gpu-{}", i + 1);
            addrs.push((name.clone(), listener.local_addr()?));
            let cfg = MockConfig::new(name)
                .models(models.iter().copied())
                .ttft(Duration::from_millis(200))
                .token_gap(Duration::from_millis(80))
                .tokens(24);
            backends.push((listener, cfg));
        }
        Ok((
            DemoFleet {
                backends: Mutex::new(backends),
            },
            addrs,
        ))
    }
}

/// Where the demo's admin listener (`/status/`, `/metrics`) goes: the port
/// after the proxy's, on a loopback proxy address and if that port is free.
/// Beyond loopback the admin listener would need a token, which a demo does
/// not have; a busy port leaves the demo without it rather than failing.
pub fn admin_addr(listen: SocketAddr) -> Option<SocketAddr> {
    if !listen.ip().is_loopback() {
        return None;
    }
    let addr = SocketAddr::new(listen.ip(), listen.port().checked_add(1)?);
    std::net::TcpListener::bind(addr).ok().map(|_| addr)
}

/// The demo's configuration: one round-robin pool over the fleet, and the
/// admin listener at `admin` if there is one.
pub fn config(
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    fleet: &[(String, SocketAddr)],
) -> Config {
    let backends: String = fleet
        .iter()
        .map(|(name, addr)| format!("      - {{ name: {name}, url: \"http://{addr}\" }}\n"))
        .collect();
    let yaml = format!(
        "server:\n  listen: [\"{listen}\"]\n  threads: 2\n\
         pools:\n  demo:\n    strategy: round_robin\n    retries: 2\n\
         \x20   health_check: {{ type: http, path: /health, interval: 2s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 2 }}\n\
         \x20   backends:\n{backends}\
         routes:\n  - {{ pool: demo }}\n"
    );
    let yaml = match admin {
        Some(admin) => format!("{yaml}admin:\n  listen: \"{admin}\"\n"),
        None => yaml,
    };
    // Built from known-good parts; a failure here is a bug worth a clear message.
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("demo configuration is invalid: {e}"))
}

/// Lines printed at start so a newcomer can try the demo at once.
pub fn banner(
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    fleet: &[(String, SocketAddr)],
) -> String {
    let mut out = String::from("Switchyard demo: three mock backends behind the proxy\n");
    for (name, addr) in fleet {
        out.push_str(&format!("  backend {name} on http://{addr}\n"));
    }
    out.push_str(&format!("  proxy on http://{listen}\n"));
    if let Some(admin) = admin {
        out.push_str(&format!(
            "  status page on http://{admin}/status/ (and /metrics for Prometheus)\n"
        ));
    }
    out.push_str("\nTry:\n");
    out.push_str(&format!(
        "  curl -N http://{listen}/v1/chat/completions -H 'content-type: application/json' \\\n    \
         -d '{{\"model\":\"llama3.1:8b\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n"
    ));
    out.push_str(&format!(
        "  curl -N http://{listen}/api/chat -d '{{\"model\":\"llama3.1:8b\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n"
    ));
    out.push_str(&format!("  curl -s http://{listen}/v1/models\n"));
    out.push_str(
        "  (run the first one a few times: each answer names the backend that served it)\n",
    );
    out
}

#[async_trait]
impl BackgroundService for DemoFleet {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let backends =
            std::mem::take(&mut *self.backends.lock().unwrap_or_else(|p| p.into_inner()));
        let mut running = Vec::new();
        for (listener, cfg) in backends {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => running.push(MockServer::start(l, cfg)),
                Err(e) => error!("demo backend cannot listen: {e}"),
            }
        }
        let _ = shutdown.changed().await;
        for server in running {
            server.shutdown().await;
        }
    }
}
