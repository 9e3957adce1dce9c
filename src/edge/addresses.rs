//! `server.allow` and `server.deny`: which peers may connect at all,
//! decided when a connection is accepted, before a byte of it is read
//! (Pingora's connection filter), so an edge facing the internet can admit
//! only the networks it serves.
//!
//! The peer is the connection's own address: behind a load balancer that
//! is the balancer, not the client (`server.trusted_proxies` applies to
//! requests, which have not been read yet).

use crate::metrics::Metrics;
use crate::state::SharedState;
use async_trait::async_trait;
use ipnet::IpNet;
use pingora_core::listeners::ConnectionFilter;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The checked lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressRules {
    /// Empty admits every address not denied.
    allow: Vec<IpNet>,
    /// Wins over `allow`.
    deny: Vec<IpNet>,
}

impl AddressRules {
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        AddressRules { allow, deny }
    }

    /// Whether a peer at `ip` may connect. An IPv4 address mapped into
    /// IPv6 (a dual-stack listener's) is compared as IPv4.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// The filter on the proxy's listeners, reading the lists of the current
/// snapshot, so a reload applies new ones to the next connection.
pub struct AddressFilter {
    state: Arc<SharedState>,
    metrics: Arc<Metrics>,
}

impl AddressFilter {
    pub fn new(state: Arc<SharedState>, metrics: Arc<Metrics>) -> Self {
        AddressFilter { state, metrics }
    }
}

impl std::fmt::Debug for AddressFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AddressFilter")
    }
}

#[async_trait]
impl ConnectionFilter for AddressFilter {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        let Some(addr) = addr else { return true };
        let admitted = self.state.load().config.server.addresses.admits(addr.ip());
        if !admitted {
            self.metrics.connections_denied.inc();
            log::debug!("connection from {addr} closed: server.allow / server.deny");
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_and_an_empty_allow_admits_all() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let open = AddressRules::default();
        assert!(open.admits(ip("203.0.113.9")));
        let office = AddressRules::new(vec![net("10.0.0.0/8")], vec![net("10.9.0.0/16")]);
        assert!(office.admits(ip("10.1.2.3")));
        assert!(!office.admits(ip("10.9.2.3")));
        assert!(!office.admits(ip("192.0.2.1")));
        assert!(office.admits(ip("::ffff:10.1.2.3")));
    }
}
