//! The admin listener's bearer token: every request must carry
//! `Authorization: Bearer TOKEN` when a token is configured, and gets a 401
//! JSON error otherwise.
//!
//! The token is taken from the configuration in force at each request, so
//! a reload that changes `admin.token_env` or the token file applies it. A
//! reload that removes the `admin` section cannot close the listener (that
//! needs a restart): the token it started with stays in force. A listener
//! beyond loopback never answers without a token, whatever a reload left.

use super::router::error;
use crate::config::{AdminSettings, Secret};
use crate::state::SharedState;
use http::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use pingora_http::RequestHeader;
use std::net::SocketAddr;
use std::sync::Arc;

/// Decides whether a request may see the admin pages.
pub struct Auth {
    state: Arc<SharedState>,
    /// The address listened on, fixed at start.
    listen: SocketAddr,
    /// The token at start, in force while the configuration has no `admin`.
    started: Option<Secret>,
}

impl Auth {
    pub fn new(settings: &AdminSettings, state: Arc<SharedState>) -> Self {
        Auth {
            state,
            listen: settings.listen,
            started: settings.token.clone(),
        }
    }

    /// The 401 to send when `request` may not go on; `None` when it may.
    pub fn deny(&self, request: &RequestHeader) -> Option<Response<Vec<u8>>> {
        let snapshot = self.state.load();
        let token = match &snapshot.config.admin {
            Some(admin) => admin.token.as_ref(),
            None => self.started.as_ref(),
        };
        let Some(token) = token else {
            if self.listen.ip().is_loopback() {
                return None;
            }
            return Some(denied(
                "the admin listener is not on loopback and no token is configured: \
                 set admin.token_env or admin.token_file",
            ));
        };
        match presented(request) {
            Some(given) if token.matches(given) => None,
            Some(_) => Some(denied("the bearer token is not the admin token")),
            None => Some(denied(
                "this needs the admin token: send Authorization: Bearer TOKEN",
            )),
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any
/// case, as RFC 9110 has it).
fn presented(request: &RequestHeader) -> Option<&[u8]> {
    let value = request.headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(&rest[start..])
}

fn denied(message: &str) -> Response<Vec<u8>> {
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"switchyard admin\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const TOKEN: &str = "0123456789abcdef0123";

    fn auth(listen: &str, token: Option<&str>) -> Auth {
        let config =
            Config::from_yaml("pools:\n  a:\n    backends: [{ url: \"http://127.0.0.1:9001\" }]\n")
                .unwrap();
        let settings = AdminSettings {
            listen: listen.parse().unwrap(),
            token: token.map(|t| Secret::new(t.into())),
        };
        Auth::new(&settings, SharedState::new(config))
    }

    fn request(authorization: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/metrics", None).unwrap();
        if let Some(value) = authorization {
            r.insert_header("authorization", value).unwrap();
        }
        r
    }

    fn status(a: &Auth, authorization: Option<&str>) -> u16 {
        a.deny(&request(authorization))
            .map_or(200, |r| r.status().as_u16())
    }

    #[test]
    fn a_token_is_required_when_configured() {
        let a = auth("127.0.0.1:9100", Some(TOKEN));
        assert_eq!(status(&a, None), 401);
        assert_eq!(status(&a, Some("Bearer wrong-token-wrong-token")), 401);
        assert_eq!(status(&a, Some(&format!("Basic {TOKEN}"))), 401);
        assert_eq!(status(&a, Some(&format!("Bearer {TOKEN}x"))), 401);
        assert_eq!(status(&a, Some(&format!("Bearer {TOKEN}"))), 200);
        assert_eq!(status(&a, Some(&format!("bearer  {TOKEN}"))), 200);
        let r = a.deny(&request(None)).unwrap();
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"switchyard admin\""
        );
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
        assert!(!String::from_utf8_lossy(r.body()).contains(TOKEN));
    }

    #[test]
    fn without_a_token_only_loopback_is_open() {
        assert_eq!(status(&auth("127.0.0.1:9100", None), None), 200);
        assert_eq!(status(&auth("[::1]:9100", None), None), 200);
        assert_eq!(status(&auth("0.0.0.0:9100", None), None), 401);
    }
}
