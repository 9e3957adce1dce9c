//! Hop-by-hop headers of a backend's response: they describe one
//! connection, not the message, and so are not passed on.
//!
//! A request's are Pingora's: before `upstream_request_filter` runs, its
//! default upstream request policy has removed the standard ones and those
//! the client's `Connection` names (an upgrade keeping what its tunnel
//! needs). Nothing does the same for a response, so this module does.

use http::header::{self, HeaderName};
use pingora_http::ResponseHeader;

/// Headers that describe one connection, not the message (RFC 9110
/// §7.6.1), as names made once rather than parsed on each response.
/// `transfer-encoding` is left to Pingora, which re-frames bodies itself.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers of `resp`, including those its
/// `Connection` names. An upgrade keeps them all so Pingora can tunnel it.
///
/// The response's few names are compared with the list once, so only the
/// ones present are looked up to remove (nearly always `Connection`
/// alone); and nearly every `Connection` says only `keep-alive` or
/// `close`, so the usual response allocates nothing here.
pub(super) fn strip_hop_by_hop(resp: &mut ResponseHeader, upgrade: bool) {
    if upgrade {
        return;
    }
    // Made once here: each use of the constant would make it anew.
    let hop_by_hop = HOP_BY_HOP;
    let present = resp.headers.keys().fold(0u8, |bits, name| {
        hop_by_hop
            .iter()
            .position(|h| h == name)
            .map_or(bits, |i| bits | 1 << i)
    });
    if present == 0 {
        return;
    }
    // Read while `Connection` is still there.
    let named: Vec<HeaderName> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !["close", "keep-alive", "transfer-encoding"]
                    .iter()
                    .any(|kept| t.eq_ignore_ascii_case(kept))
        })
        // `from_bytes` lowers the case; a token that is no header name
        // names nothing to remove.
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    let listed = hop_by_hop
        .iter()
        .enumerate()
        .filter(|(i, _)| present & 1 << i != 0)
        .map(|(_, name)| name);
    for name in listed.chain(&named) {
        resp.remove_header(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (name, value) in headers {
            r.append_header(name.to_string(), *value).unwrap();
        }
        r
    }

    fn names(r: &ResponseHeader) -> Vec<String> {
        let mut names: Vec<_> = r.headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let all = [
            ("Connection", "close, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authenticate", "Basic"),
            ("TE", "trailers"),
            ("Trailer", "x-checksum"),
            ("Upgrade", "h2c"),
            ("Authorization", "Bearer x"),
            ("Content-Type", "application/json"),
        ];
        let mut r = response(&all);
        strip_hop_by_hop(&mut r, false);
        assert_eq!(names(&r), ["authorization", "content-type"]);
        // The written header has the same fields in their case: the case
        // map follows (a removal may reorder what is left).
        let mut wire = Vec::new();
        r.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        let mut lines: Vec<_> = wire.split_terminator("\r\n").collect();
        lines.sort();
        assert_eq!(
            lines,
            ["Authorization: Bearer x", "Content-Type: application/json"]
        );

        let mut upgraded = response(&all);
        strip_hop_by_hop(&mut upgraded, true);
        assert_eq!(upgraded.headers.len(), all.len());
    }

    #[test]
    fn a_response_without_any_is_left_as_it_is() {
        let mut r = response(&[("Content-Type", "text/plain"), ("X-Custom", "1")]);
        strip_hop_by_hop(&mut r, false);
        assert_eq!(names(&r), ["content-type", "x-custom"]);
    }

    #[test]
    fn what_connection_names_is_removed_whatever_its_case() {
        let mut r = response(&[
            ("Connection", "keep-alive , X-One,x-two, ,close"),
            ("x-one", "1"),
            ("X-Two", "2"),
            ("X-Three", "3"),
        ]);
        strip_hop_by_hop(&mut r, false);
        assert_eq!(names(&r), ["x-three"]);
    }

    #[test]
    fn a_connection_token_that_is_no_name_is_passed_over() {
        let mut r = response(&[("Connection", "bad token, \"quoted\""), ("X-Kept", "1")]);
        strip_hop_by_hop(&mut r, false);
        assert_eq!(names(&r), ["x-kept"]);
    }
}
