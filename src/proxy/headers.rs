//! Hop-by-hop headers: they describe one connection, not the message.

/// Headers that describe one connection, not the message, and so are not
/// forwarded (RFC 9110 §7.6.1). `transfer-encoding` is left to Pingora,
/// which re-frames bodies itself.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
];

/// The hop-by-hop headers present, including those named by `Connection`.
/// An upgrade keeps `Connection`/`Upgrade` so Pingora can tunnel it.
pub(super) fn hop_by_hop(headers: &http::HeaderMap, upgrade: bool) -> Vec<String> {
    if upgrade {
        return Vec::new();
    }
    let named = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive" && t != "transfer-encoding");
    HOP_BY_HOP
        .iter()
        .chain(&["upgrade"])
        .map(|s| s.to_string())
        .chain(named)
        .filter(|name| headers.contains_key(name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = http::HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("upgrade", "h2c".parse().unwrap());
        h.insert("authorization", "Bearer x".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let mut removed = hop_by_hop(&h, false);
        removed.sort();
        assert_eq!(
            removed,
            ["connection", "keep-alive", "te", "upgrade", "x-secret"]
        );
        assert!(hop_by_hop(&h, true).is_empty());
    }
}
