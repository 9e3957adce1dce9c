//! TLS termination: the certificates of each TLS listener, chosen by SNI,
//! and replaced by a reload.
//!
//! Listeners run Pingora's rustls acceptor (TLS 1.2 and 1.3 only, ALPN
//! `h2` then `http/1.1`) with a certificate resolver of ours instead of a
//! fixed certificate: rustls asks the resolver for a certificate in each
//! handshake, which is what choosing by SNI and swapping certificates
//! without a restart need. rustls also means no system OpenSSL to install
//! and patch.
//!
//! Certificates are read and checked by validation
//! ([`crate::config::validate`]), so `-t`, start and a reload all refuse a
//! missing file, a file that is not PEM or a key that is not the
//! certificate's, naming the path; a reload whose certificates fail is
//! refused whole and the old ones keep serving.
//!
//! # Layout
//! - [`certificate`]: one certificate and key, loaded and checked.
//! - [`resolver`]: the per-listener set, and the pick by SNI.

pub mod certificate;
pub mod resolver;

pub use certificate::Certificate;

use log::info;
use pingora_core::listeners::tls::TlsSettings;
use resolver::{CertSet, SniResolver};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// A listener of `server.listen` that terminates TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    pub addr: SocketAddr,
    /// At least one; the first is served to clients whose SNI names none
    /// of them.
    pub certs: Vec<Certificate>,
}

impl TlsListener {
    /// Warnings for certificates that expire soon or have expired.
    pub fn expiry_warnings(&self, now: SystemTime) -> Vec<String> {
        self.certs
            .iter()
            .filter_map(|c| c.expiry_warning(now))
            .collect()
    }
}

/// The resolvers of the running TLS listeners, shared by the server that
/// built them and the reloader that replaces their certificates.
#[derive(Debug, Default)]
pub struct TlsListeners {
    resolvers: Vec<(SocketAddr, Arc<SniResolver>)>,
}

impl TlsListeners {
    /// Resolvers for `listeners`, as configured at start.
    pub fn new(listeners: &[TlsListener]) -> Self {
        let resolvers = listeners
            .iter()
            .filter_map(|l| {
                let set = CertSet::new(&l.certs)?;
                Some((l.addr, Arc::new(SniResolver::new(set))))
            })
            .collect();
        TlsListeners { resolvers }
    }

    /// Pingora's TLS settings for the listener at `addr`; `None` for a
    /// plain one.
    pub fn settings(&self, addr: SocketAddr) -> Option<TlsSettings> {
        let (_, resolver) = self.resolvers.iter().find(|(a, _)| *a == addr)?;
        // No certificate paths: the resolver supplies every certificate,
        // and Pingora reads no file when one is set.
        let mut settings = TlsSettings::intermediate("", "").ok()?;
        settings.set_cert_resolver(resolver.clone());
        settings.enable_h2();
        Some(settings)
    }

    /// Gives each running TLS listener the certificates `next` has for its
    /// address; new handshakes get them. A listener `next` no longer has
    /// as TLS keeps its certificates: turning TLS on or off needs a
    /// restart. Returns whether the TLS listeners differ from the running
    /// ones.
    pub fn reload(&self, next: &[TlsListener]) -> bool {
        for (addr, resolver) in &self.resolvers {
            let Some(listener) = next.iter().find(|l| l.addr == *addr) else {
                continue;
            };
            if let Some(set) = CertSet::new(&listener.certs) {
                resolver.replace(set);
                log_certificates(listener);
            }
        }
        let mut running: Vec<SocketAddr> = self.resolvers.iter().map(|(a, _)| *a).collect();
        let mut wanted: Vec<SocketAddr> = next.iter().map(|l| l.addr).collect();
        running.sort();
        wanted.sort();
        running != wanted
    }
}

/// One line per certificate: what a listener serves, and until when.
pub fn log_certificates(listener: &TlsListener) {
    for cert in &listener.certs {
        info!(
            "TLS on {}: {} ({}, serial {}, valid until {})",
            listener.addr,
            cert.cert_path.display(),
            cert.names.join(" "),
            cert.serial,
            humantime::format_rfc3339_seconds(cert.not_after)
        );
    }
}

#[cfg(test)]
mod tests;
