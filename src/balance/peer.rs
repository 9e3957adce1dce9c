//! How a backend is reached: the Pingora peer of a backend, plain or TLS.
//!
//! An HTTPS backend's peer sends the URL's host as SNI and checks the
//! certificate against it, with the system's roots or the backend's
//! `tls.ca`, offers the client certificate of `tls.cert`, and checks
//! nothing only with `tls.verify: false`. Its `group_key` is the hash of
//! those settings, so that Pingora's connection pool (keyed by address,
//! SNI, client certificate and verify flags, but not the CA) never hands a
//! connection made under one CA to a backend configured with another after
//! a reload.

use crate::config::BackendSpec;
use pingora_core::upstreams::peer::HttpPeer;

/// The peer for one request (or health check) to `backend`.
pub fn http_peer(backend: &BackendSpec) -> HttpPeer {
    let Some(tls) = &backend.tls else {
        return HttpPeer::new(backend.addr, false, String::new());
    };
    let mut peer = HttpPeer::new(backend.addr, true, tls.sni.clone());
    peer.options.verify_cert = tls.verify;
    peer.options.verify_hostname = tls.verify;
    peer.options.ca = tls.ca.clone();
    peer.client_cert_key = tls.client.clone();
    peer.group_key = tls.fingerprint;
    peer
}
