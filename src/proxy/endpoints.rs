//! What Switchyard does with each API path: the one table a reader checks
//! to know which requests are answered here, which are routed on their
//! model, and which are kept from a backend chosen at random.
//!
//! - Answered by Switchyard for the whole fleet: `GET /v1/models`,
//!   `GET /v1/models/{id}`, `GET /api/tags`, `GET /api/ps`.
//! - Routed on the body's `model`: OpenAI's completions, chat, embeddings
//!   and responses, Anthropic's messages (which Ollama and vLLM serve), and
//!   Ollama's chat, generate and embeddings; `/api/show` on `model` or
//!   `name`, as Ollama reads it.
//! - Model management (`/api/pull`, `/api/push`, `/api/delete`,
//!   `/api/copy`, `/api/create`, `/api/blobs/...`) changes one server's
//!   models. Through a balancer it would land on whichever backend comes
//!   next, so it is passed on only where a route sends it to a pool of one
//!   backend, and refused elsewhere.
//! - Anything else (`/api/version`, `/health`, ...) goes to the next
//!   backend of its route's pool.

use crate::models::lists::ListKind;
use http::Method;

/// How one request is handled, by its method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A model list answered from the fleet's lists.
    List(ListKind),
    /// The body names the model to route on, under these keys.
    Model(ModelKeys),
    /// Changes one backend's models.
    Management,
    /// Passed to the route's pool as it is.
    Pass,
}

/// Where a body names its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKeys {
    /// `model`.
    Model,
    /// `model`, or `name` when `model` is empty or absent.
    ModelOrName,
}

/// POST paths whose body names a model under `model`.
const MODEL_PATHS: [&str; 10] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
];

/// Ollama's paths that change the models a server holds.
const MANAGEMENT_PATHS: [&str; 5] = [
    "/api/pull",
    "/api/push",
    "/api/delete",
    "/api/copy",
    "/api/create",
];

impl Endpoint {
    pub fn of(method: &Method, path: &str) -> Endpoint {
        if let Some(kind) = ListKind::of(method, path) {
            return Endpoint::List(kind);
        }
        let path = path.trim_end_matches('/');
        if MANAGEMENT_PATHS.contains(&path) || path.starts_with("/api/blobs/") {
            return Endpoint::Management;
        }
        if method != Method::POST {
            return Endpoint::Pass;
        }
        if MODEL_PATHS.contains(&path) {
            Endpoint::Model(ModelKeys::Model)
        } else if path == "/api/show" {
            Endpoint::Model(ModelKeys::ModelOrName)
        } else {
            Endpoint::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let of = |m: &str, p: &str| Endpoint::of(&m.parse().unwrap(), p);
        assert_eq!(of("GET", "/v1/models/"), Endpoint::List(ListKind::OpenAi));
        assert_eq!(of("GET", "/api/ps"), Endpoint::List(ListKind::OllamaPs));
        assert_eq!(
            of("POST", "/v1/messages"),
            Endpoint::Model(ModelKeys::Model)
        );
        assert_eq!(
            of("POST", "/v1/messages/count_tokens"),
            Endpoint::Model(ModelKeys::Model)
        );
        assert_eq!(
            of("POST", "/api/show"),
            Endpoint::Model(ModelKeys::ModelOrName)
        );
        assert_eq!(of("GET", "/v1/chat/completions"), Endpoint::Pass);
        assert_eq!(of("DELETE", "/api/delete"), Endpoint::Management);
        assert_eq!(of("POST", "/api/pull/"), Endpoint::Management);
        assert_eq!(of("HEAD", "/api/blobs/sha256:ab"), Endpoint::Management);
        assert_eq!(of("GET", "/api/version"), Endpoint::Pass);
        assert_eq!(of("POST", "/api/pullx"), Endpoint::Pass);
    }
}
