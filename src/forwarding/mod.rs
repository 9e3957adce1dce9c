//! Who a request is from and what the hops say about it: its id, its
//! client's address behind trusted proxies, and the headers that carry them
//! to the backend (`X-Forwarded-For`, `-Proto`, `-Host`, `x-request-id`)
//! and back to the client (`x-request-id`, and which backend answered).
//!
//! [`Origin`] is worked out once, as soon as a request's header has been
//! read, and kept in the request's context: `client_ip` hashing, the logs
//! and anything else that asks who the client is read it there, so there is
//! one answer per request.
//!
//! # Layout
//! - [`request_id`]: the client's id when sane, else a new one.
//! - [`client`]: the client's address, and the proxies trusted to say it.
//! - [`headers`]: what is written on the forwarded request and the response.

pub mod client;
pub mod headers;
pub mod request_id;

pub use client::TrustedProxies;
pub use request_id::REQUEST_ID_HEADER;

use http::HeaderValue;
use pingora_proxy::Session;
use std::net::IpAddr;

/// Where a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Sent to the backend, returned to the client on every response and in
    /// every error body Switchyard writes.
    pub request_id: HeaderValue,
    /// The connection's peer: the client, or the last proxy in front.
    /// `None` only for a connection that is not TCP.
    pub peer: Option<IpAddr>,
    /// The client: `peer`, or from a trusted peer the first untrusted hop
    /// of `X-Forwarded-For` counting from the right.
    pub client_ip: Option<IpAddr>,
    /// Whether `peer` is in `server.trusted_proxies`, so that the
    /// `X-Forwarded-*` headers it sent are passed on rather than replaced.
    pub peer_trusted: bool,
    /// The scheme the client's connection was accepted with.
    pub scheme: &'static str,
}

impl Origin {
    /// The request id as text: it is printable ASCII, whether the client's
    /// or a new one.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.to_str().ok()
    }

    /// Reads the origin of the request in `session`. The id chosen is
    /// written on the request sent to the backend ([`headers::to_backend`])
    /// and on every answer; the client's own request header is left as it
    /// came.
    pub fn read(session: &Session, trusted: &TrustedProxies) -> Origin {
        let header = session.req_header();
        let request_id = request_id::request_id(&header.headers);
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_canonical());
        let forwarded_for = header
            .headers
            .get_all(headers::FORWARDED_FOR)
            .iter()
            .map(|v| v.as_bytes());
        let client_ip = peer.map(|peer| client::client_ip(peer, forwarded_for, trusted));
        let peer_trusted = peer.is_some_and(|p| trusted.contains(p));
        Origin {
            request_id,
            peer,
            client_ip,
            peer_trusted,
            scheme: scheme(session),
        }
    }
}

/// `https` on a connection accepted with TLS, `http` otherwise: the
/// listener decides, whatever the client's headers say.
fn scheme(session: &Session) -> &'static str {
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    if tls {
        "https"
    } else {
        "http"
    }
}
