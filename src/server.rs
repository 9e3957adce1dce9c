//! Assembles the Pingora server: the proxy service on its listeners (plain
//! or TLS), the admin listener, the health checker, the access log's writer
//! and the SIGHUP reloader.

use crate::access_log::AccessLog;
use crate::admin;
use crate::admin::status::StatusSources;
use crate::background::access_log::AccessLogService;
use crate::background::discovery::DiscoveryService;
use crate::background::health::HealthService;
use crate::config::Config;
use crate::edge::{AddressFilter, EdgeApp};
use crate::lifecycle::drain::{DrainService, Requests};
use crate::lifecycle::history::ReloadHistory;
use crate::lifecycle::reload::{ReloadService, Reloader};
use crate::metrics::Metrics;
use crate::models::lists::ListCache;
use crate::proxy::Switchyard;
use crate::state::SharedState;
use crate::tls::TlsListeners;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Read buffer of each client connection: none. Pingora's default is a
/// 64 KiB buffer in front of the socket, sized for TLS records; without it,
/// Pingora reads a request's header straight into its header buffer and the
/// body into its body buffer, which saves a copy per read, and at thousands
/// of open streams the buffer was the largest part of a connection's memory
/// (see the README's Performance section).
const CLIENT_READ_BUFFER: usize = 0;

/// How the process was started, beyond the configuration file.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// `-d`: detach and write `server.pid_file`.
    pub daemon: bool,
    /// `-u`: take the listening sockets over from a running old process.
    pub upgrade: bool,
    /// The file SIGHUP re-reads; `None` (the demo) disables reload.
    pub config_path: Option<PathBuf>,
}

/// Checks that every address in `listen` can be listened on now, so that a
/// start that cannot serve fails at once with one clear line instead of a
/// panic in a listener thread and a process that runs with no listener.
/// (The check binds and releases each address; Pingora binds it again
/// right after.) Not for `-u`, which takes its sockets from the old
/// process.
pub fn check_listen(listen: &[SocketAddr]) -> Result<(), String> {
    for addr in listen {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            let why = match e.kind() {
                std::io::ErrorKind::AddrInUse => "address already in use".to_string(),
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string()
                }
                _ => e.to_string(),
            };
            return Err(format!("listen {addr}: {why}"));
        }
    }
    Ok(())
}

/// Pingora's settings from ours.
fn server_conf(config: &Config, options: &RunOptions) -> ServerConf {
    let s = &config.server;
    // Pingora counts whole seconds; round up so a configured grace is never cut.
    let secs = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
    ServerConf {
        daemon: options.daemon,
        threads: s.threads,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        error_log: s.error_log.clone(),
        grace_period_seconds: Some(secs(s.grace_period)),
        graceful_shutdown_timeout_seconds: Some(secs(s.graceful_shutdown_timeout)),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        work_stealing: s.work_stealing,
        ..ServerConf::default()
    }
}

/// HTTP/2 clients' limits, which Pingora reads from the proxy for each
/// connection: the keep-alive idle time closes an idle h2 connection, and
/// the header size bounds a request's decoded header list, as
/// `max_header_size` bounds an HTTP/1.1 header. Both are taken at start;
/// HTTP/1.1 connections read theirs from each reload.
fn h2_limits<A>(proxy: &mut pingora_proxy::HttpProxy<A>, server: &crate::config::ServerSettings) {
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout =
        Some(server.timeouts.keepalive).filter(|keepalive| !keepalive.is_zero());
    proxy.server_options = Some(options);
    let mut h2 = pingora_core::protocols::http::v2::server::default_h2_options();
    h2.max_header_list_size(u32::try_from(server.max_header_size).unwrap_or(u32::MAX));
    proxy.h2_options = Some(h2);
}

/// Builds the server with all of Switchyard's services. The caller may add
/// more (the demo adds its mock fleet) before running it.
pub fn build(config: Config, options: &RunOptions) -> (Server, Arc<SharedState>) {
    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config, options));
    server.bootstrap();

    let listen = config.server.listen.clone();
    let settings = config.server.clone();
    let admin = config.admin.clone();
    let state = SharedState::new(config);
    let in_flight = Arc::new(Requests::default());
    let metrics = Arc::new(Metrics::default());
    metrics.watch_fleet(state.clone(), in_flight.clone());
    let access_log = Arc::new(AccessLog::new(
        state.load().config.access_log.as_ref(),
        metrics.clone(),
    ));
    let lists = Arc::new(ListCache::default());
    let history = Arc::new(ReloadHistory::new(options.config_path.clone()));

    let mut proxy = pingora_proxy::http_proxy(
        &server.configuration,
        Switchyard::new(
            state.clone(),
            in_flight.clone(),
            metrics.clone(),
            access_log.clone(),
            lists.clone(),
        ),
    );
    h2_limits(&mut proxy, &settings);
    let mut proxy = Service::new(
        "switchyard proxy".to_string(),
        EdgeApp::new(proxy, state.clone(), metrics.clone()),
    );
    proxy.set_connection_filter(Arc::new(AddressFilter::new(state.clone(), metrics.clone())));
    let tls = Arc::new(TlsListeners::new(&settings.tls));
    for listener in &settings.tls {
        crate::tls::log_certificates(listener);
    }
    for addr in &listen {
        let buffers = L4BufferSettings::default().read(CLIENT_READ_BUFFER);
        let mut listener = ListenerConfig::tcp(addr.to_string()).l4_buffer(buffers);
        if let Some(tls) = tls.settings(*addr) {
            listener = listener.tls(tls);
        }
        proxy.add_listener(listener);
    }
    server.add_service(proxy);
    if let Some(admin) = &admin {
        let status = Arc::new(StatusSources {
            state: state.clone(),
            requests: in_flight.clone(),
            lists,
            history: history.clone(),
        });
        server.add_service(admin::service(admin, metrics.clone(), status));
    }
    server.add_service(background_service(
        "drain",
        DrainService::new(in_flight, access_log.clone()),
    ));
    server.add_service(background_service(
        "access log",
        AccessLogService::new(access_log.clone()),
    ));
    server.add_service(background_service(
        "model discovery",
        DiscoveryService::new(state.clone(), metrics.clone()),
    ));
    server.add_service(background_service(
        "health checks",
        HealthService::new(state.clone()),
    ));
    if let Some(path) = &options.config_path {
        let reloader = Arc::new(Reloader::new(
            state.clone(),
            path.clone(),
            settings,
            metrics.clone(),
            access_log,
            history,
            tls,
        ));
        server.add_service(background_service("reload", ReloadService::new(reloader)));
    }
    (server, state)
}
