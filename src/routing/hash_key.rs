//! What `consistent_hash` hashes: a request header, a cookie, the client's
//! address, the path or the model, as the pool's `hash_key` says.

use crate::config::{HashKey, Strategy};
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// The bytes a pool with `strategy` hashes for this request; empty for the
/// other strategies, and when the request lacks the key (such requests all
/// share one spot on the ring). `client` is the client's address behind any
/// trusted proxies (`crate::forwarding`), so that a client cannot choose its
/// own spot with an `X-Forwarded-For` of its making.
pub fn hash_key(
    strategy: &Strategy,
    req: &RequestHeader,
    client: Option<IpAddr>,
    model: Option<&str>,
) -> Vec<u8> {
    let Strategy::ConsistentHash(key) = strategy else {
        return Vec::new();
    };
    match key {
        HashKey::Header(name) => req
            .headers
            .get(name.as_str())
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        HashKey::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| cookie_value(v, name))
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        HashKey::ClientIp => client
            .map(|ip| ip.to_string().into_bytes())
            .unwrap_or_default(),
        HashKey::Path => req.uri.path().as_bytes().to_vec(),
        HashKey::Model => model.unwrap_or_default().as_bytes().to_vec(),
    }
}

/// The value of cookie `name` in one `Cookie` header.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/chat/completions?x=1", None).unwrap();
        r.insert_header("x-user", "alice").unwrap();
        r.append_header("cookie", "a=1; sid=xyz; b=2").unwrap();
        r
    }

    fn key(k: HashKey, client: Option<IpAddr>, model: Option<&str>) -> Vec<u8> {
        hash_key(&Strategy::ConsistentHash(k), &req(), client, model)
    }

    #[test]
    fn each_key_reads_its_part_of_the_request() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(key(HashKey::Header("x-user".into()), None, None), b"alice");
        assert_eq!(key(HashKey::Cookie("sid".into()), None, None), b"xyz");
        assert_eq!(key(HashKey::ClientIp, Some(ip), None), b"10.1.2.3");
        assert_eq!(key(HashKey::Path, None, None), b"/v1/chat/completions");
        assert_eq!(key(HashKey::Model, None, Some("llama3")), b"llama3");
    }

    #[test]
    fn a_missing_key_and_other_strategies_hash_nothing() {
        assert!(key(HashKey::Header("x-none".into()), None, None).is_empty());
        assert!(key(HashKey::Cookie("none".into()), None, None).is_empty());
        assert!(key(HashKey::ClientIp, None, None).is_empty());
        assert!(hash_key(&Strategy::RoundRobin, &req(), None, Some("m")).is_empty());
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie_value("a=1; sid=xyz; b=2", "sid"), Some("xyz"));
        assert_eq!(cookie_value("a=1", "sid"), None);
    }
}
