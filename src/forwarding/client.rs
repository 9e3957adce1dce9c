//! Who the client is: the connection's peer, or, when that peer is a proxy
//! listed in `server.trusted_proxies`, the address it says it forwarded for.
//!
//! Anyone can write `X-Forwarded-For`. Believed from everyone, it would let a
//! client pick its own `client_ip` hash bucket, its line in the logs and,
//! later, its rate limit. So the header is read only from trusted peers, and
//! from the right: each trusted proxy appends the address it received the
//! request from, so the entries right of the first untrusted one were
//! written by proxies that are trusted, and everything left of it by whoever
//! that untrusted address is. It is the client.

use ipnet::IpNet;
use std::net::IpAddr;

/// The networks of `server.trusted_proxies`: load balancers and CDNs whose
/// `X-Forwarded-*` headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    /// Whether `ip` is in one of the networks. An IPv4 address seen as IPv6
    /// (`::ffff:10.0.0.1`, from a dual-stack listener) is matched as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// The client's address, for a request from `peer` whose
/// `X-Forwarded-For` headers are `forwarded_for`, in the order received.
///
/// From an untrusted peer, the peer. From a trusted one, the entries are
/// read from the right, and the first that is not trusted is the client;
/// when all are trusted, the leftmost. An entry that is not an address
/// (`unknown`, garbage) stops the walk at the trusted proxy that passed it
/// on, since nothing left of it can be placed.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut client = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(client) {
        return client;
    }
    // Header lines, then the entries in each, both from the right.
    for line in forwarded_for.rev() {
        let Ok(line) = std::str::from_utf8(line) else {
            return client;
        };
        for entry in line.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !trusted.contains(ip) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), which some load balancers add.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let host = match entry.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0,
        None => entry.split_once(':')?.0,
    };
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn resolve(peer: &str, lines: &[&str], nets: &[&str]) -> String {
        let lines = lines.iter().map(|l| l.as_bytes());
        client_ip(peer.parse().unwrap(), lines, &trusted(nets)).to_string()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        assert_eq!(
            resolve("203.0.113.9", &["198.51.100.1"], &[]),
            "203.0.113.9"
        );
        let lb = ["10.0.0.0/8"];
        assert_eq!(resolve("127.0.0.1", &["198.51.100.1"], &lb), "127.0.0.1");
    }

    #[test]
    fn a_trusted_peer_is_read_from_the_right_to_the_first_untrusted_hop() {
        let nets = ["10.0.0.0/8", "2001:db8::/32"];
        assert_eq!(resolve("10.0.0.1", &[], &nets), "10.0.0.1");
        assert_eq!(
            resolve("10.0.0.1", &["198.51.100.1"], &nets),
            "198.51.100.1"
        );
        // The client wrote the leftmost entry itself: it is not believed.
        let spoofed = ["1.1.1.1, 198.51.100.1, 10.0.0.7"];
        assert_eq!(resolve("10.0.0.1", &spoofed, &nets), "198.51.100.1");
        // Several header lines are one list, in order.
        let lines = ["1.1.1.1", "198.51.100.1", "10.0.0.7"];
        assert_eq!(resolve("10.0.0.1", &lines, &nets), "198.51.100.1");
        assert_eq!(
            resolve("2001:db8::1", &["2001:db8::2, 2a00::5"], &nets),
            "2a00::5"
        );
    }

    #[test]
    fn all_trusted_is_the_leftmost() {
        let nets = ["10.0.0.0/8"];
        assert_eq!(
            resolve("10.0.0.1", &["10.1.1.1, 10.2.2.2"], &nets),
            "10.1.1.1"
        );
    }

    #[test]
    fn garbage_stops_at_the_proxy_that_passed_it_on() {
        let nets = ["10.0.0.0/8"];
        assert_eq!(resolve("10.0.0.1", &["unknown"], &nets), "10.0.0.1");
        assert_eq!(
            resolve("10.0.0.1", &["198.51.100.1, unknown, 10.0.0.2"], &nets),
            "10.0.0.2"
        );
        // Empty entries are skipped, as a trailing comma is.
        assert_eq!(
            resolve("10.0.0.1", &["198.51.100.1, ,"], &nets),
            "198.51.100.1"
        );
    }

    #[test]
    fn ports_and_mapped_addresses() {
        let nets = ["10.0.0.0/8"];
        assert_eq!(
            resolve("10.0.0.1", &["198.51.100.1:4711"], &nets),
            "198.51.100.1"
        );
        assert_eq!(resolve("10.0.0.1", &["[2a00::5]:4711"], &nets), "2a00::5");
        // A dual-stack listener sees IPv4 peers as mapped IPv6 addresses.
        assert_eq!(
            resolve("::ffff:10.0.0.1", &["198.51.100.1"], &nets),
            "198.51.100.1"
        );
        assert_eq!(resolve("::ffff:203.0.113.9", &[], &nets), "203.0.113.9");
    }
}
