//! The `Pingora` target: the smallest proxy Pingora's own quick start
//! builds, one `ProxyHttp` whose `upstream_peer` returns the mock, with no
//! routing, no body read, no health or circuit state.
//!
//! It is measured to tell apart what Pingora costs from what Switchyard adds
//! on top of it. It runs with Pingora's defaults except those Switchyard
//! also sets for the run: the worker count and `work_stealing: false`. The
//! harness starts it as a child process by running itself again with
//! `--serve-pingora`, so that it is pinned and measured like the other
//! proxies.
//!
//! For workload 9 it reaches the backend over TLS: `--backend-ca FILE`
//! gives the peer that certificate as its CA and `localhost` as SNI.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use pingora_proxy::{ProxyHttp, Session};

/// Every request to one backend.
struct Bare {
    backend: SocketAddr,
    /// The backend's CA, when it is reached over TLS.
    ca: Option<Arc<[WrappedX509]>>,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        let Some(ca) = &self.ca else {
            return Ok(Box::new(HttpPeer::new(self.backend, false, String::new())));
        };
        let mut peer = HttpPeer::new(self.backend, true, crate::https::NAME.to_string());
        peer.options.ca = Some(ca.clone());
        Ok(Box::new(peer))
    }
}

/// The certificates of a PEM file, as a peer's CA.
fn load_ca(path: &Path) -> Result<Arc<[WrappedX509]>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.map(|der| WrappedX509::new(der.to_vec(), parse_x509)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(certs.into())
}

/// Serves on `listen` until killed, reaching `backend` over TLS if `ca`.
pub fn serve(listen: SocketAddr, backend: SocketAddr, workers: usize, ca: Option<&Path>) {
    let ca = match ca.map(load_ca).transpose() {
        Ok(ca) => ca,
        Err(e) => {
            eprintln!("compare: {e}");
            std::process::exit(1);
        }
    };
    let conf = ServerConf {
        threads: workers,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare { backend, ca });
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);
    server.run_forever();
}
