//! Which pool serves a request: the `routes` list, first match wins.

use crate::config::{PoolSpec, RouteSpec};
use crate::models::glob_match;
use pingora_http::RequestHeader;

/// The compiled route table of one snapshot.
pub struct Router {
    /// Each route with the index of its pool in the snapshot.
    routes: Vec<(RouteSpec, usize)>,
}

impl Router {
    /// Resolves pool names to indexes into `pools`. Validation has already
    /// checked that every named pool exists; a route whose pool is missing
    /// anyway is dropped rather than trusted.
    pub fn new(routes: &[RouteSpec], pools: &[PoolSpec]) -> Self {
        let routes = routes
            .iter()
            .filter_map(|r| {
                let index = pools.iter().position(|p| p.name == r.pool)?;
                Some((r.clone(), index))
            })
            .collect();
        Router { routes }
    }

    /// The index of the pool for this request, if any route matches.
    /// `model` is the request's model, when it has one.
    pub fn route(&self, req: &RequestHeader, model: Option<&str>) -> Option<usize> {
        self.routes
            .iter()
            .find(|(r, _)| matches(r, req, model))
            .map(|(_, index)| *index)
    }
}

fn matches(route: &RouteSpec, req: &RequestHeader, model: Option<&str>) -> bool {
    if let Some(glob) = &route.model {
        if !model.is_some_and(|m| glob_match(glob, m)) {
            return false;
        }
    }
    if let Some(prefix) = &route.path_prefix {
        if !path_has_prefix(req.uri.path(), prefix) {
            return false;
        }
    }
    if let Some(h) = &route.header {
        let hit = req
            .headers
            .get_all(h.name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| h.regex.is_match(v));
        if !hit {
            return false;
        }
    }
    true
}

/// Prefix match on whole segments: `/api` matches `/api` and `/api/chat`,
/// not `/apix`. A prefix ending in `/` matches as written.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn router() -> Router {
        let c = Config::from_yaml(
            r#"
pools:
  ollama: { health_check: { type: none }, backends: [{ url: "http://127.0.0.1:1" }] }
  code: { health_check: { type: none }, backends: [{ url: "http://127.0.0.1:2" }] }
  chat: { health_check: { type: none }, backends: [{ url: "http://127.0.0.1:3" }] }
routes:
  - { path_prefix: /api, pool: ollama }
  - { header: { name: X-Model, regex: "^deepseek" }, pool: code }
  - { pool: chat }
"#,
        )
        .unwrap();
        Router::new(&c.routes, &c.pools)
    }

    fn req(path: &str, header: Option<(&str, &str)>) -> RequestHeader {
        let mut r = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        if let Some((k, v)) = header {
            r.insert_header(k.to_string(), v).unwrap();
        }
        r
    }

    #[test]
    fn first_match_wins() {
        let r = router();
        let route = |path: &str, header| r.route(&req(path, header), None);
        // pools are sorted by name: chat=0, code=1, ollama=2
        assert_eq!(route("/api/chat", None), Some(2));
        assert_eq!(route("/api", None), Some(2));
        assert_eq!(route("/apix", None), Some(0));
        let deepseek = Some(("x-model", "deepseek-r1"));
        assert_eq!(route("/v1/chat/completions", deepseek), Some(1));
        assert_eq!(
            route("/v1/chat/completions", Some(("x-model", "llama"))),
            Some(0)
        );
    }

    #[test]
    fn no_catch_all_means_no_route() {
        let c = Config::from_yaml(
            "pools:\n  a: { health_check: { type: none }, backends: [{ url: \"http://127.0.0.1:1\" }] }\nroutes:\n  - { path_prefix: /v1, pool: a }\n",
        )
        .unwrap();
        let r = Router::new(&c.routes, &c.pools);
        assert_eq!(r.route(&req("/other", None), None), None);
    }

    #[test]
    fn routes_on_the_model_glob() {
        let c = Config::from_yaml(
            "pools:\n  a: { health_check: { type: none }, backends: [{ url: \"http://127.0.0.1:1\" }] }\n  b: { health_check: { type: none }, backends: [{ url: \"http://127.0.0.1:2\" }] }\nroutes:\n  - { model: \"qwen*\", pool: b }\n  - { pool: a }\n",
        )
        .unwrap();
        let r = Router::new(&c.routes, &c.pools);
        assert_eq!(
            r.route(&req("/v1/chat/completions", None), Some("qwen2.5-coder")),
            Some(1)
        );
        assert_eq!(
            r.route(&req("/v1/chat/completions", None), Some("llama3")),
            Some(0)
        );
        assert_eq!(r.route(&req("/v1/chat/completions", None), None), Some(0));
    }
}
