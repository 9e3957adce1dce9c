//! Where a request carries its key, and taking it off before the request
//! goes to a backend.
//!
//! `Authorization: Bearer KEY` is what OpenAI's SDKs (and most others)
//! send; `x-api-key: KEY` is Anthropic's. Ollama's own clients set neither
//! and cannot be made to: they can only reach a Switchyard with keys
//! through a network that `server.allow` admits instead.

use http::HeaderMap;
use pingora_http::RequestHeader;

/// Anthropic's header.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The key in `headers`: a bearer token, else `x-api-key`. An empty one is
/// none.
pub fn key(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| {
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        });
    bearer
        .or_else(|| headers.get(API_KEY_HEADER).map(|v| v.as_bytes()))
        .map(|k| k.trim_ascii())
        .filter(|k| !k.is_empty())
}

/// Takes the client's key off a request to a backend.
pub fn strip(upstream: &mut RequestHeader) {
    upstream.remove_header(&http::header::AUTHORIZATION);
    upstream.remove_header(API_KEY_HEADER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_first_then_x_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(key(&h), None);
        h.insert("x-api-key", " sk-1 ".parse().unwrap());
        assert_eq!(key(&h), Some(&b"sk-1"[..]));
        h.insert("authorization", "bearer sk-2".parse().unwrap());
        assert_eq!(key(&h), Some(&b"sk-2"[..]));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(key(&h), Some(&b"sk-1"[..]), "not a bearer token");
        h.insert("authorization", "Bearer ".parse().unwrap());
        h.remove("x-api-key");
        assert_eq!(key(&h), None);
    }
}
