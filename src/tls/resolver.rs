//! Which certificate a handshake gets: chosen by the name the client asks
//! for (SNI), from a set that a reload replaces whole.
//!
//! A handshake reads the current set once; a reload builds the next set
//! off to the side and publishes it with one atomic store, so new
//! handshakes get the new certificates and connections already made keep
//! the one they were given.

use super::certificate::Certificate;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// The certificates of one listener, by name.
#[derive(Debug)]
pub struct CertSet {
    /// Served when the client sends no SNI (an IP address in the URL) or a
    /// name no certificate has: the listener's first certificate, as nginx
    /// serves its default server's.
    default: Arc<CertifiedKey>,
    /// Exact names and wildcards (`*.example.com`), lower-cased. Where two
    /// certificates list a name, the first in the file has it.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    /// The set of `certs`, the first being the default; `None` for none.
    pub fn new(certs: &[Certificate]) -> Option<CertSet> {
        let default = certs.first()?.key.clone();
        let mut by_name = HashMap::new();
        for cert in certs {
            for name in &cert.names {
                by_name
                    .entry(name.clone())
                    .or_insert_with(|| cert.key.clone());
            }
        }
        Some(CertSet { default, by_name })
    }

    /// The certificate for a client asking for `sni`: the one with that
    /// exact name, else one with a wildcard covering it (one label deep,
    /// as clients match them), else the default.
    pub fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(sni) = sni else {
            return &self.default;
        };
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(exact) = self.by_name.get(&name) {
            return exact;
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(wild) = self.by_name.get(&format!("*.{parent}")) {
                return wild;
            }
        }
        &self.default
    }
}

/// A listener's certificate resolver, for Pingora's rustls `TlsSettings`.
#[derive(Debug)]
pub struct SniResolver {
    current: ArcSwap<CertSet>,
}

impl SniResolver {
    pub fn new(set: CertSet) -> Self {
        SniResolver {
            current: ArcSwap::from_pointee(set),
        }
    }

    /// New handshakes get `set` from now on.
    pub fn replace(&self, set: CertSet) {
        self.current.store(Arc::new(set));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().pick(hello.server_name()).clone())
    }
}
