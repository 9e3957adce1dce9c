//! `GET /status` (the fleet as JSON) and `GET /status/` (a page that shows
//! it live), on the admin listener.
//!
//! The JSON is behind the admin token like every other admin path. The
//! page is not: it is one constant, self-contained HTML document (inline
//! CSS and script, no external assets) that holds no data at all; its
//! script fetches `/status` with the token and redraws every second. A
//! browser cannot send a bearer token when it navigates, so the page takes
//! it from the address (`/status/#token=...`, or a form when `/status`
//! answers 401) and keeps it in the tab's `sessionStorage`. A fragment is
//! never sent to the server, so the token stays out of request lines and
//! any log of them; the script removes it from the address bar at once.
//!
//! # Layout
//! - [`report`]: the document, field by field, read from the state.
//! - `page.html`: the page.

pub mod report;

use super::router::{respond, Page};
use crate::lifecycle::drain::Requests;
use crate::lifecycle::history::ReloadHistory;
use crate::models::lists::ListCache;
use crate::state::SharedState;
use async_trait::async_trait;
use http::header::HeaderValue;
use http::{Response, StatusCode};
use pingora_http::RequestHeader;
use report::{Inputs, Status};
use std::sync::Arc;

/// Where the status document is read from; the same `Arc`s the proxy and
/// the reloader hold.
pub struct StatusSources {
    pub state: Arc<SharedState>,
    /// Requests in flight in the whole proxy.
    pub requests: Arc<Requests>,
    /// The model lists, and the last round of `/api/ps`.
    pub lists: Arc<ListCache>,
    pub history: Arc<ReloadHistory>,
}

/// `GET /status`.
pub struct StatusJson {
    sources: Arc<StatusSources>,
}

impl StatusJson {
    pub fn new(sources: Arc<StatusSources>) -> Self {
        StatusJson { sources }
    }

    /// The document as it is now.
    pub async fn read(&self) -> Status {
        let s = &self.sources;
        let snapshot = s.state.load_full();
        // At most one round of requests to the backends per second,
        // shared with the proxy's `/api/ps`.
        let loaded = s.lists.loaded(&snapshot).await;
        let history = s.history.get();
        let inputs = Inputs {
            history: &history,
            loaded: &loaded,
            requests_in_flight: s.requests.count(),
            now: std::time::Instant::now(),
            circuit_now: tokio::time::Instant::now(),
        };
        Status::read(&snapshot, &inputs)
    }
}

#[async_trait]
impl Page for StatusJson {
    async fn get(&self, _: &RequestHeader) -> Response<Vec<u8>> {
        // Serializing these plain structs cannot fail.
        let body = serde_json::to_vec(&self.read().await).unwrap_or_default();
        respond(StatusCode::OK, "application/json", body)
    }
}

/// The page, as served.
const PAGE: &str = include_str!("page.html");

/// What the page may do: run its own inline script and style, and fetch
/// from its own origin; nothing else, so that a model name or an error
/// text shown on it could not load or run anything even if it got past
/// the script's escaping (it only ever sets `textContent`).
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /status/`.
pub struct StatusPage;

#[async_trait]
impl Page for StatusPage {
    async fn get(&self, _: &RequestHeader) -> Response<Vec<u8>> {
        let mut r = respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            PAGE.as_bytes().to_vec(),
        );
        let headers = r.headers_mut();
        headers.insert(
            "content-security-policy",
            HeaderValue::from_static(PAGE_POLICY),
        );
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        r
    }

    /// The page holds no data; `/status`, which it reads, needs the token.
    fn public(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn the_json_and_the_page() {
        let config = Config::from_yaml(
            "pools:\n  a:\n    health_check: { type: none }\n    backends: [{ url: \"http://127.0.0.1:9001\" }]\n",
        )
        .unwrap();
        let sources = Arc::new(StatusSources {
            state: SharedState::new(config),
            requests: Arc::new(Requests::default()),
            lists: Arc::new(ListCache::default()),
            history: Arc::new(ReloadHistory::new(None)),
        });
        let request = RequestHeader::build("GET", b"/status", None).unwrap();
        let r = StatusJson::new(sources).get(&request).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["pools"][0]["backends"][0]["url"], "http://127.0.0.1:9001");
        assert_eq!(v["pools"][0]["health_check"], "none");

        let r = StatusPage.get(&request).await;
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let page = String::from_utf8(r.body().clone()).unwrap();
        // Self-contained: nothing is loaded from elsewhere.
        for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
            assert!(!page.contains(external), "{external}");
        }
        assert!(page.contains("fetch(\"../status\""));
        assert!(
            !page.contains("innerHTML"),
            "text from backends is only ever set as text"
        );
    }
}
