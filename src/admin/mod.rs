//! The admin listener: `/metrics` for Prometheus and `/status` for people,
//! on an address of its own, apart from the proxy's listeners so it can be
//! firewalled apart and is never reachable through the proxy's routes.
//!
//! It runs as its own Pingora service with one thread ([`service`]), an
//! HTTP application ([`AdminApp`]) that checks the bearer token
//! ([`auth`]) and then hands the request to the page registered for its
//! path ([`router`]). Pages are small: each implements [`Page`] and is
//! added to the router in [`AdminApp::new`], which is where a new one goes.
//! A page that holds no data may say it is [`Page::public`]; only the
//! status page's shell does.
//!
//! The listener's address is taken at start: a reload that changes
//! `admin.listen` logs that it needs a restart. Its token is read from the
//! current configuration on every request, so a reload applies a new one.
//!
//! # Layout
//! - [`router`]: pages by path, and the answers for the rest.
//! - [`auth`]: the bearer token.
//! - [`metrics`]: `GET /metrics`.
//! - [`status`]: `GET /status` (JSON) and `GET /status/` (the live page).
//!
//! [`Page`]: router::Page
//! [`Page::public`]: router::Page::public

pub mod auth;
pub mod metrics;
pub mod router;
pub mod status;

use router::Router;

use crate::config::AdminSettings;
use crate::metrics::Metrics;
use async_trait::async_trait;
use auth::Auth;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use status::StatusSources;
use std::sync::Arc;

/// The admin HTTP application: authentication, then the router.
pub struct AdminApp {
    auth: Auth,
    router: Router,
}

impl AdminApp {
    /// The pages of the admin listener. Add new pages here.
    pub fn new(
        settings: &AdminSettings,
        metrics: Arc<Metrics>,
        status: Arc<StatusSources>,
    ) -> Self {
        let auth = Auth::new(settings, status.state.clone());
        let router = Router::default()
            .page("/metrics", metrics::MetricsPage::new(metrics))
            .page("/status", status::StatusJson::new(status))
            .page("/status/", status::StatusPage);
        AdminApp { auth, router }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        if !self.router.is_public(request.uri.path()) {
            if let Some(denied) = self.auth.deny(request) {
                return denied;
            }
        }
        self.router.answer(request).await
    }
}

/// The admin listener as a Pingora service on `settings.listen`, with a
/// thread of its own: a scrape never waits behind proxied requests, nor
/// they behind it.
pub fn service(
    settings: &AdminSettings,
    metrics: Arc<Metrics>,
    status: Arc<StatusSources>,
) -> Service<AdminApp> {
    let mut service = Service::new(
        "switchyard admin".to_string(),
        AdminApp::new(settings, metrics, status),
    );
    service.add_tcp(&settings.listen.to_string());
    service.threads = Some(1);
    service
}
