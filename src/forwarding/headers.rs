//! The headers that say where a request came from, on the request sent to
//! the backend, and those that say who served it, on the client's response.
//!
//! To the backend: `X-Forwarded-For` (the peer appended to what a trusted
//! peer sent, or the peer alone), `X-Forwarded-Proto` and
//! `X-Forwarded-Host` (a trusted peer's, else the listener's scheme and the
//! client's `Host`), so that a backend reading them is never told what an
//! untrusted client made up; and the request id, written here, after the
//! hop-by-hop headers are gone, so that a client's `Connection:
//! x-request-id` cannot remove it.
//!
//! To the client: `x-request-id` on every response, and on proxied ones
//! `x-switchyard-backend` and `x-switchyard-attempts` unless
//! `server.expose_backend` is off.

use super::Origin;
use http::header::HeaderValue;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;

pub const FORWARDED_FOR: &str = "x-forwarded-for";
pub const FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const FORWARDED_HOST: &str = "x-forwarded-host";

/// Names the backend that served a proxied response.
pub const BACKEND_HEADER: &str = "x-switchyard-backend";

/// How many backends were tried for a proxied response, the one that
/// served it included: more than 1 after a retry.
pub const ATTEMPTS_HEADER: &str = "x-switchyard-attempts";

/// Writes the request id and the `X-Forwarded-*` headers of the request
/// sent to the backend. `req` starts as a copy of the client's request,
/// with its headers, less the hop-by-hop ones.
pub fn to_backend(origin: &Origin, req: &mut RequestHeader) -> Result<()> {
    req.insert_header(super::REQUEST_ID_HEADER, origin.request_id.clone())?;
    let believed = origin.peer_trusted;
    match forwarded_for(origin, req) {
        Some(value) => req.insert_header(FORWARDED_FOR, value)?,
        None => {
            req.remove_header(FORWARDED_FOR);
        }
    }
    if !(believed && req.headers.contains_key(FORWARDED_PROTO)) {
        req.insert_header(FORWARDED_PROTO, HeaderValue::from_static(origin.scheme))?;
    }
    if !(believed && req.headers.contains_key(FORWARDED_HOST)) {
        match client_host(req) {
            Some(host) => req.insert_header(FORWARDED_HOST, host)?,
            None => {
                req.remove_header(FORWARDED_HOST);
            }
        }
    }
    Ok(())
}

/// `X-Forwarded-For` for the backend: what a trusted peer sent, then the
/// peer; `None` when there is neither (a connection that is not TCP, from
/// an untrusted peer or one that said nothing).
fn forwarded_for(origin: &Origin, req: &RequestHeader) -> Option<HeaderValue> {
    let mut peer = [0u8; MAX_IP_TEXT];
    let peer = origin.peer.map(|ip| ip_text(ip, &mut peer));
    let sent = origin
        .peer_trusted
        .then(|| req.headers.get_all(FORWARDED_FOR).iter())
        .into_iter()
        .flatten();
    let mut chain: Vec<u8> = Vec::new();
    for part in sent.map(|v| v.as_bytes()).chain(peer) {
        if !chain.is_empty() {
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(part);
    }
    (!chain.is_empty())
        .then(|| HeaderValue::from_maybe_shared(bytes::Bytes::from(chain)).ok())
        .flatten()
}

/// Room for the longest address text, an IPv6 address with an IPv4 tail.
const MAX_IP_TEXT: usize = 45;

/// `ip` as text in `buf`: IPv4 by hand, since it is written for nearly
/// every request and the formatting machinery costs more than the digits.
fn ip_text(ip: IpAddr, buf: &mut [u8; MAX_IP_TEXT]) -> &[u8] {
    let mut len = 0;
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                for d in &digits[skip..] {
                    buf[len] = b'0' + d;
                    len += 1;
                }
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // 45 bytes hold any IPv6 text, so this cannot run out of room.
            let _ = write!(cursor, "{v6}");
            len = cursor.position() as usize;
        }
    }
    &buf[..len]
}

/// The host the client asked for: its `Host` header, or the authority of a
/// request line in absolute form.
fn client_host(req: &RequestHeader) -> Option<HeaderValue> {
    if let Some(host) = req.headers.get(http::header::HOST) {
        return Some(host.clone());
    }
    let authority = req.uri.authority()?;
    HeaderValue::from_str(authority.as_str()).ok()
}

/// What a response to the client says about the request: its id, and for a
/// proxied response, when `backend` is given, the backend's name (as its
/// header value, made when the backend was loaded; `None` for a name no
/// header can carry) and the number of backends tried.
pub fn to_client(
    resp: &mut ResponseHeader,
    request_id: Option<&HeaderValue>,
    backend: Option<(Option<&HeaderValue>, usize)>,
) -> Result<()> {
    if let Some(id) = request_id {
        // Replaces an id the backend may have sent of its own.
        resp.insert_header(super::REQUEST_ID_HEADER, id.clone())?;
    }
    if let Some((name, attempts)) = backend {
        if let Some(name) = name {
            resp.insert_header(BACKEND_HEADER, name.clone())?;
        }
        resp.insert_header(ATTEMPTS_HEADER, count_value(attempts))?;
    }
    Ok(())
}

/// A small count as a header value without formatting it: attempts are
/// bounded by `retries`, which is far below ten in any sane file.
fn count_value(n: usize) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n) {
        Some(digit) => HeaderValue::from_static(digit),
        None => HeaderValue::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(peer: &str, trusted: bool) -> Origin {
        let peer: IpAddr = peer.parse().unwrap();
        Origin {
            request_id: HeaderValue::from_static("id-1"),
            peer: Some(peer),
            client_ip: Some(peer),
            peer_trusted: trusted,
            scheme: "http",
        }
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get<'a>(r: &'a RequestHeader, name: &str) -> Vec<&'a str> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    const CLAIMS: [(&str, &str); 5] = [
        ("host", "llm.example.com"),
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-for", "203.0.113.5"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example.com"),
    ];

    #[test]
    fn a_trusted_peer_is_appended_to_what_it_said() {
        let mut r = req(&CLAIMS);
        to_backend(&origin("10.0.0.1", true), &mut r).unwrap();
        assert_eq!(
            get(&r, FORWARDED_FOR),
            ["198.51.100.1, 203.0.113.5, 10.0.0.1"]
        );
        assert_eq!(get(&r, FORWARDED_PROTO), ["https"]);
        assert_eq!(get(&r, FORWARDED_HOST), ["public.example.com"]);
    }

    #[test]
    fn the_request_id_goes_whatever_the_client_asked_to_remove() {
        let mut r = req(&[("x-request-id", "client-made")]);
        r.remove_header("x-request-id");
        to_backend(&origin("10.0.0.1", false), &mut r).unwrap();
        assert_eq!(get(&r, "x-request-id"), ["id-1"]);
    }

    #[test]
    fn an_untrusted_peer_is_not_believed() {
        let mut r = req(&CLAIMS);
        to_backend(&origin("2001:db8::7", false), &mut r).unwrap();
        assert_eq!(get(&r, FORWARDED_FOR), ["2001:db8::7"]);
        assert_eq!(get(&r, FORWARDED_PROTO), ["http"]);
        assert_eq!(get(&r, FORWARDED_HOST), ["llm.example.com"]);
    }

    #[test]
    fn a_trusted_peer_that_says_nothing_gets_the_defaults() {
        let mut r = req(&[("host", "llm.example.com")]);
        to_backend(&origin("10.0.0.1", true), &mut r).unwrap();
        assert_eq!(get(&r, FORWARDED_FOR), ["10.0.0.1"]);
        assert_eq!(get(&r, FORWARDED_PROTO), ["http"]);
        assert_eq!(get(&r, FORWARDED_HOST), ["llm.example.com"]);
        // Without a Host (HTTP/1.0), a claimed host is dropped, not kept.
        let mut r = req(&[("x-forwarded-host", "evil.example.com")]);
        to_backend(&origin("192.0.2.1", false), &mut r).unwrap();
        assert!(get(&r, FORWARDED_HOST).is_empty());
    }

    #[test]
    fn the_response_names_the_request_and_its_backend() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("x-request-id", "the-backends-own")
            .unwrap();
        let id = HeaderValue::from_static("id-1");
        let name = HeaderValue::from_static("gpu-1");
        to_client(&mut resp, Some(&id), Some((Some(&name), 2))).unwrap();
        let h = &resp.headers;
        assert_eq!(h.get("x-request-id").unwrap(), "id-1");
        assert_eq!(h.get(BACKEND_HEADER).unwrap(), "gpu-1");
        assert_eq!(h.get(ATTEMPTS_HEADER).unwrap(), "2");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        to_client(&mut resp, Some(&id), None).unwrap();
        assert!(resp.headers.get(BACKEND_HEADER).is_none());
        assert!(resp.headers.get(ATTEMPTS_HEADER).is_none());
        let mut resp = ResponseHeader::build(200, None).unwrap();
        to_client(&mut resp, Some(&id), Some((None, 12))).unwrap();
        assert!(resp.headers.get(BACKEND_HEADER).is_none());
        assert_eq!(resp.headers.get(ATTEMPTS_HEADER).unwrap(), "12");
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        let mut buf = [0u8; MAX_IP_TEXT];
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "203.0.113.45",
            "::1",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "1111:2222:3333:4444:5555:6666:7777:8888",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes(), "{ip}");
        }
    }
}
