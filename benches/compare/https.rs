//! Workload 9: the proxies talk HTTPS to the static backend, and what is
//! read to tell whether they keep their upstream TLS connections.
//!
//! The static backend of workload 6 listens with TLS instead of plain HTTP,
//! with the certificate of workloads 7 and 8 (ECDSA P-256 for `localhost`,
//! self-signed) and TLS 1.3 with one suite and one group, so every proxy
//! runs the same handshake and the same record encryption upstream. Each
//! proxy verifies it against that certificate as its only CA and sends
//! `localhost` as SNI: Switchyard `url: https://localhost:PORT` with
//! `tls: { ca: FILE }`, nginx `proxy_pass https://` with
//! `proxy_ssl_verify on` and a keep-alive upstream, HAProxy `ssl verify
//! required ca-file`, the bare Pingora proxy an `HttpPeer` with that CA.
//! Clients talk plain HTTP to the proxies, as in workload 6; direct is the
//! static backend over TLS.
//!
//! Reuse is read twice over each measured window: from Switchyard's own
//! `switchyard_upstream_connections_total` (opened and reused), on an
//! admin listener the bench configuration gives it, and for every target
//! from the connections the backend accepted (nginx's `stub_status` on a
//! plain port of its own, which the proxies never use).

use std::net::SocketAddr;
use std::path::Path;

use crate::load::Client;
use crate::tls::TlsFiles;

/// The one name in the certificate, sent as SNI and verified.
pub const NAME: &str = "localhost";

/// What the report says workload 9 measured.
pub const SETUP: &str = "Proxies to the static backend over TLS 1.3 (TLS_AES_128_GCM_SHA256, X25519, \
                         an ECDSA P-256 certificate for `localhost` verified against it as the only CA, \
                         SNI `localhost`), kept-alive upstream connections; clients in plain HTTP";

/// The static backend's `listen` directive and TLS settings: TLS 1.3, and
/// the suite and group of workload 7, whatever each proxy's client offers
/// first. Session tickets stay on (nginx's default), as a backend has them.
pub fn backend_listen(addr: SocketAddr, tls: &TlsFiles) -> String {
    format!(
        "{addr} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};\n        \
         ssl_protocols TLSv1.3;\n        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;\n        \
         ssl_ecdh_curve X25519",
        tls.cert.display(),
        tls.key.display()
    )
}

/// A plain server on `status` with nginx's connection counters.
pub fn status_server(status: SocketAddr) -> String {
    format!(
        "    server {{\n        listen {status};\n        \
         location = /status {{ stub_status; }}\n    }}\n"
    )
}

/// Switchyard's backend entry for `backend` over TLS, trusting `ca`.
pub fn switchyard_backend(backend: SocketAddr, ca: &Path) -> String {
    format!(
        "{{ name: static, url: \"https://{NAME}:{}\", tls: {{ ca: \"{}\" }} }}",
        backend.port(),
        ca.display()
    )
}

/// nginx's `location` directives for an HTTPS upstream trusting `ca`:
/// verified, with SNI, and the TLS session kept for reconnections.
pub fn nginx_location(ca: &Path) -> String {
    format!(
        "proxy_ssl_trusted_certificate {};\n            \
         proxy_ssl_verify on;\n            \
         proxy_ssl_name {NAME};\n            \
         proxy_ssl_server_name on;\n            \
         proxy_ssl_session_reuse on;\n            \
         proxy_ssl_protocols TLSv1.3;",
        ca.display()
    )
}

/// HAProxy's `server` options for an HTTPS upstream trusting `ca`.
pub fn haproxy_server(ca: &Path) -> String {
    format!(
        " ssl verify required ca-file {} sni str({NAME}) verifyhost {NAME} ssl-min-ver TLSv1.3",
        ca.display()
    )
}

/// Switchyard's upstream connections so far, `(opened, reused)`, from its
/// `/metrics` on `admin`; `None` if they cannot be read.
pub async fn switchyard_connections(admin: SocketAddr) -> Option<(u64, u64)> {
    let body = Client::new(admin).get("/metrics").await.ok()?;
    let text = String::from_utf8_lossy(&body);
    let kind = |kind: &str| {
        let prefix = format!("switchyard_upstream_connections_total{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Some((kind("opened")?, kind("reused")?))
}

/// Connections the static backend has accepted so far, from its
/// `stub_status` on `status`, not counting the one that asks.
pub async fn backend_accepts(status: SocketAddr) -> Option<u64> {
    let body = Client::new(status).get("/status").await.ok()?;
    parse_accepts(&String::from_utf8_lossy(&body)).map(|n| n.saturating_sub(1))
}

/// The `accepts` figure of nginx's `stub_status` page: the first number on
/// the line after `server accepts handled requests`.
fn parse_accepts(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    lines.find(|l| l.trim_start().starts_with("server accepts"))?;
    lines.next()?.split_whitespace().next()?.parse().ok()
}
