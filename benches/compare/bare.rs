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

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

/// Every request to one backend.
struct Bare {
    backend: SocketAddr,
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
        Ok(Box::new(HttpPeer::new(self.backend, false, String::new())))
    }
}

/// Serves on `listen` until killed.
pub fn serve(listen: SocketAddr, backend: SocketAddr, workers: usize) {
    let conf = ServerConf {
        threads: workers,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare { backend });
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);
    server.run_forever();
}
