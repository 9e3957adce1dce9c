//! What a request must look like to be proxied, and what the proxy marks
//! on it: the checks nginx makes before it forwards anything, so that a
//! request a backend could read differently from Switchyard, or one that
//! has looped back through this proxy, never reaches a backend.

use crate::errors::Refusal;
use pingora_http::RequestHeader;
use std::hash::{BuildHasher, Hasher};

/// The largest response header accepted from a backend, all lines
/// together. Inference servers send a few hundred bytes; anything near this
/// is a broken or hostile backend, and passing it on would make every
/// client buffer it.
pub(super) const MAX_UPSTREAM_HEADER: usize = 64 << 10;

/// This process's `Via` entry, `1.1 switchyard-<id>`. The id is random per
/// process, so one Switchyard in front of another is a chain, not a loop,
/// while a request that comes back to the same process (a backend URL that
/// leads to itself, directly or through other proxies) is recognised.
#[derive(Debug, Clone)]
pub struct Via {
    entry: String,
}

impl Via {
    pub fn new() -> Self {
        // `RandomState` is seeded from the operating system's randomness.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Via {
            entry: format!("1.1 switchyard-{:016x}", h.finish()),
        }
    }

    /// The entry to append to a forwarded request's `Via`.
    pub(super) fn entry(&self) -> &str {
        &self.entry
    }

    /// Whether `req` has already passed through this process.
    fn seen_in(&self, req: &RequestHeader) -> bool {
        let token = &self.entry[4..];
        req.headers
            .get_all(http::header::VIA)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains(token)))
    }
}

impl Default for Via {
    fn default() -> Self {
        Via::new()
    }
}

/// Checks a request before it is routed; `Err` is the answer to send.
pub(super) fn check(req: &RequestHeader, via: &Via, max_body: usize) -> Result<(), Refusal> {
    let method = req.method.as_str();
    // Methods are case-sensitive: `get` is not GET, and a backend that
    // reads it as GET would see another request than the one routed.
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Refusal::InvalidMethod(method.to_string()));
    }
    if req.method == http::Method::TRACE {
        return Err(Refusal::MethodNotAllowed("TRACE".into()));
    }
    let hosts = req.headers.get_all(http::header::HOST).iter().count();
    if req.version == http::Version::HTTP_11 && hosts != 1 {
        return Err(Refusal::InvalidHost);
    }
    if req.raw_path().iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(Refusal::InvalidRequestLine);
    }
    let declared = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(Refusal::BodyTooLarge { limit: max_body });
    }
    if via.seen_in(req) {
        return Err(Refusal::LoopDetected);
    }
    Ok(())
}

/// The size of a header's fields, as sent.
pub(super) fn header_size(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn code(r: &RequestHeader) -> Option<(u16, &'static str)> {
        check(r, &Via::new(), 1000)
            .err()
            .map(|e| (e.status(), e.code()))
    }

    #[test]
    fn a_plain_request_passes() {
        assert_eq!(code(&req("POST", "/v1/chat", &[("host", "a")])), None);
    }

    #[test]
    fn refuses_what_nginx_refuses() {
        assert_eq!(
            code(&req("get", "/", &[("host", "a")])),
            Some((400, "invalid_method"))
        );
        assert_eq!(
            code(&req("TRACE", "/", &[("host", "a")])),
            Some((405, "method_not_allowed"))
        );
        assert_eq!(code(&req("GET", "/", &[])), Some((400, "invalid_host")));
        assert_eq!(
            code(&req("GET", "/", &[("host", "a"), ("host", "b")])),
            Some((400, "invalid_host"))
        );
        assert_eq!(
            code(&req(
                "POST",
                "/",
                &[("host", "a"), ("content-length", "1001")]
            )),
            Some((413, "request_too_large"))
        );
    }

    #[test]
    fn a_request_that_came_back_is_a_loop() {
        let via = Via::new();
        let looped = req("GET", "/", &[("host", "a"), ("via", via.entry())]);
        assert_eq!(
            check(&looped, &via, 10).err().map(|e| e.code()),
            Some("loop_detected")
        );
        // Another Switchyard's entry is a chain, not a loop.
        let chained = req("GET", "/", &[("host", "a"), ("via", Via::new().entry())]);
        assert!(check(&chained, &via, 10).is_ok());
    }
}
