//! Every answer Switchyard gives itself, in one type.
//!
//! A [`Refusal`] says why a request was not (or could not be) served; its
//! one `impl` maps it to the HTTP status, OpenAI's `error.type`, a stable
//! `error.code`, `Retry-After`, `WWW-Authenticate`, and the body: OpenAI's
//! `{"error":{"message","type","code"}}`, or Ollama's `{"error":"..."}` for
//! requests to Ollama's API (`/api/*`), whose clients read only that. The
//! public contract of Switchyard's own errors can be read in this file.
//!
//! Every answer to a request carries the request's id, in the
//! `x-request-id` header and in the body, where each API's clients read on
//! past members they do not know: `error.request_id` in OpenAI's shape, a
//! top-level `request_id` in Ollama's and Anthropic's (where Anthropic's own
//! API puts it). Answers the connection layer writes before a request
//! exists have none.
//!
//! It is shared by the connection layer (`edge`), which answers before any
//! request exists, and the proxy, where a refusal travels to
//! `fail_to_proxy` as the cause of the Pingora error that ends the request.

use crate::forwarding::REQUEST_ID_HEADER;
use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    // What the client sent.
    #[error("the request is not valid HTTP")]
    BadRequest,
    #[error("{0:?} is not a method (methods are upper case)")]
    InvalidMethod(String),
    #[error("an HTTP/1.1 request needs exactly one Host header")]
    InvalidHost,
    #[error("the request line has control characters")]
    InvalidRequestLine,
    #[error("{0} is not allowed")]
    MethodNotAllowed(String),
    #[error("the request header is larger than {limit} bytes")]
    HeaderTooLarge { limit: usize },
    #[error("the request header did not arrive within {0:?}")]
    HeaderTimeout(std::time::Duration),
    #[error("the request body stopped arriving (server.timeouts.client_body)")]
    BodyTimeout,
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request body has no \"model\"")]
    ModelRequired,
    #[error("{0}")]
    InvalidModel(String),

    // Who sent it, and how much.
    #[error("no API key: send it as Authorization: Bearer KEY, or in x-api-key")]
    MissingApiKey,
    #[error("the API key is not valid")]
    InvalidApiKey,
    #[error("this key may not use {what}")]
    ModelNotAllowed { what: String },
    #[error("rate limit reached: {limit} per {scope}; retry in {retry_after}s")]
    RateLimited {
        scope: &'static str,
        limit: &'static str,
        retry_after: u64,
    },
    #[error("the rate limits cannot be checked now (limits.store is unreachable); retry shortly")]
    LimitStoreUnavailable,

    // Where it could go.
    #[error("no route matches {path}")]
    NoRoute { path: String },
    #[error("the model '{model}' does not exist or is not served here")]
    ModelNotFound { model: String },
    #[error(
        "{path} changes the models of one server, and Switchyard would pick one at random: \
         run it against each backend, or route it to a pool of one backend"
    )]
    PerBackendOperation { path: String },
    #[error("this request has already passed through this proxy: a backend leads back to it")]
    LoopDetected,
    #[error("the proxy has too many open connections; retry shortly")]
    TooManyConnections,

    // The backends.
    #[error("{detail} in pool '{pool}'")]
    NoHealthyBackend { pool: String, detail: String },
    #[error("all backends are busy and the queue is full in pool '{pool}'")]
    QueueFull { pool: String },
    #[error("no backend became free in time in pool '{pool}'")]
    QueueTimeout { pool: String },
    #[error("backend in pool '{pool}' failed: {what}")]
    BackendError { pool: String, what: String },
    #[error("backend in pool '{pool}' timed out")]
    BackendTimeout { pool: String },

    #[error("internal error")]
    Internal,
}

/// The body a client reads an error from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error":{"message","type","code"}}`.
    OpenAi,
    /// `{"error":"message"}`, for Ollama's API.
    Ollama,
    /// `{"type":"error","error":{"type","message"}}`, for Anthropic's
    /// Messages API (`/v1/messages`), which Ollama and vLLM serve.
    Anthropic,
}

impl Shape {
    /// Ollama's for requests to Ollama's API, Anthropic's for its Messages
    /// API, OpenAI's for the rest.
    pub fn for_path(path: &str) -> Shape {
        if path == "/api" || path.starts_with("/api/") {
            Shape::Ollama
        } else if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Shape::Anthropic
        } else {
            Shape::OpenAi
        }
    }
}

impl Refusal {
    pub fn status(&self) -> u16 {
        use Refusal::*;
        match self {
            BadRequest | InvalidMethod(_) | InvalidHost | InvalidRequestLine | InvalidJson(_)
            | ModelRequired | InvalidModel(_) => 400,
            MissingApiKey | InvalidApiKey => 401,
            PerBackendOperation { .. } | ModelNotAllowed { .. } => 403,
            NoRoute { .. } | ModelNotFound { .. } => 404,
            MethodNotAllowed(_) => 405,
            HeaderTimeout(_) | BodyTimeout => 408,
            BodyTooLarge { .. } => 413,
            QueueFull { .. } | RateLimited { .. } => 429,
            HeaderTooLarge { .. } => 431,
            Internal => 500,
            BackendError { .. } => 502,
            NoHealthyBackend { .. }
            | QueueTimeout { .. }
            | TooManyConnections
            | LimitStoreUnavailable => 503,
            BackendTimeout { .. } => 504,
            LoopDetected => 508,
        }
    }

    /// OpenAI's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self.status() {
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// Anthropic's `error.type`, which its SDKs map to exception classes.
    fn anthropic_kind(&self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            s if s >= 500 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// A stable, machine-readable reason.
    pub fn code(&self) -> &'static str {
        use Refusal::*;
        match self {
            BadRequest => "bad_request",
            InvalidMethod(_) => "invalid_method",
            InvalidHost => "invalid_host",
            InvalidRequestLine => "invalid_request_line",
            MethodNotAllowed(_) => "method_not_allowed",
            HeaderTooLarge { .. } => "header_too_large",
            HeaderTimeout(_) | BodyTimeout => "request_timeout",
            BodyTooLarge { .. } => "request_too_large",
            InvalidJson(_) => "invalid_json",
            ModelRequired => "model_required",
            InvalidModel(_) => "invalid_model",
            MissingApiKey | InvalidApiKey => "invalid_api_key",
            ModelNotAllowed { .. } => "model_not_allowed",
            RateLimited { .. } => "rate_limit_exceeded",
            LimitStoreUnavailable => "limit_store_unavailable",
            NoRoute { .. } => "no_route",
            ModelNotFound { .. } => "model_not_found",
            PerBackendOperation { .. } => "per_backend_operation",
            LoopDetected => "loop_detected",
            TooManyConnections => "too_many_connections",
            NoHealthyBackend { .. } => "no_healthy_backend",
            QueueFull { .. } => "queue_full",
            QueueTimeout { .. } => "queue_timeout",
            BackendError { .. } => "backend_error",
            BackendTimeout { .. } => "backend_timeout",
            Internal => "internal_error",
        }
    }

    /// Seconds for `Retry-After`, where waiting helps: the fleet or the
    /// proxy is busy or down for now.
    pub fn retry_after(&self) -> Option<u64> {
        use Refusal::*;
        if let RateLimited { retry_after, .. } = self {
            return Some(*retry_after);
        }
        matches!(
            self,
            NoHealthyBackend { .. }
                | QueueFull { .. }
                | QueueTimeout { .. }
                | TooManyConnections
                | LimitStoreUnavailable
        )
        .then_some(1)
    }

    /// `WWW-Authenticate` of a `401`, as RFC 6750 has it for bearer
    /// tokens: the scheme and realm when no key came, and `invalid_token`
    /// when the key that came is not one. (`x-api-key` clients read the
    /// body; the challenge is for HTTP clients and tools that look for it.)
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            Refusal::MissingApiKey => Some(r#"Bearer realm="switchyard""#),
            Refusal::InvalidApiKey => Some(
                r#"Bearer realm="switchyard", error="invalid_token", error_description="the API key is not valid""#,
            ),
            _ => None,
        }
    }

    /// The body, in `shape`, naming the request by `request_id` when there
    /// is one.
    pub fn body(&self, shape: Shape, request_id: Option<&str>) -> Bytes {
        let mut body = match shape {
            Shape::OpenAi => serde_json::json!({
                "error": {
                    "message": self.to_string(),
                    "type": self.kind(),
                    "code": self.code(),
                }
            }),
            Shape::Ollama => serde_json::json!({ "error": self.to_string() }),
            Shape::Anthropic => serde_json::json!({
                "type": "error",
                "error": { "type": self.anthropic_kind(), "message": self.to_string() }
            }),
        };
        if let Some(id) = request_id {
            let at = match shape {
                Shape::OpenAi => &mut body["error"],
                Shape::Ollama | Shape::Anthropic => &mut body,
            };
            at["request_id"] = id.into();
        }
        Bytes::from(body.to_string())
    }

    /// The whole response as HTTP/1.1 bytes, for answers written straight
    /// to a client connection outside Pingora's HTTP layer (a refused
    /// connection, a header too large or too slow). No request has an id
    /// yet, so the answer is given `request_id` of its own, in its body and
    /// its `x-request-id`, as every answer Switchyard writes carries one.
    /// The connection closes after it.
    pub fn raw_response(&self, shape: Shape, request_id: &str) -> Bytes {
        let body = self.body(shape, Some(request_id));
        let status = self.status();
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        if let Some(secs) = self.retry_after() {
            head.push_str(&format!("retry-after: {secs}\r\n"));
        }
        if let Some(challenge) = self.challenge() {
            head.push_str(&format!("www-authenticate: {challenge}\r\n"));
        }
        head.push_str(&format!("x-request-id: {request_id}\r\n\r\n"));
        let mut out = head.into_bytes();
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    /// Answers the request in `session`, whose id is `request_id`, with
    /// this refusal, in the shape its path calls for, and closes the
    /// connection afterwards, since a request refused early may have left
    /// its body unread.
    pub async fn send(
        &self,
        session: &mut Session,
        request_id: Option<&str>,
    ) -> pingora_error::Result<()> {
        self.send_with(session, request_id, |_| Ok(())).await
    }

    /// As [`Refusal::send`], with headers of the caller's added (a rate
    /// limit's `x-ratelimit-*`).
    pub async fn send_with(
        &self,
        session: &mut Session,
        request_id: Option<&str>,
        extra: impl FnOnce(&mut ResponseHeader) -> pingora_error::Result<()>,
    ) -> pingora_error::Result<()> {
        session.set_keepalive(None);
        let shape = Shape::for_path(session.req_header().uri.path());
        let body = self.body(shape, request_id);
        let status = self.status();
        let mut header = json_header(status, body.len(), self.retry_after(), request_id)?;
        if let Some(challenge) = self.challenge() {
            header.insert_header(http::header::WWW_AUTHENTICATE, challenge)?;
        }
        extra(&mut header)?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await
    }

    /// A Pingora error that ends the request, carrying this refusal as its
    /// cause for `fail_to_proxy` to answer.
    pub fn into_error(self) -> Box<pingora_error::Error> {
        let status = self.status();
        pingora_error::Error::because(
            pingora_error::ErrorType::HTTPStatus(status),
            "refused",
            self,
        )
    }

    /// The refusal an error carries, if it was made by [`Refusal::into_error`].
    pub fn of(e: &pingora_error::Error) -> Option<&Refusal> {
        e.root_cause().downcast_ref::<Refusal>()
    }
}

/// Writes a complete JSON response answered by Switchyard itself, with the
/// request's id (the one [`crate::forwarding::Origin`] chose).
pub async fn send_json(
    session: &mut Session,
    status: u16,
    body: Bytes,
    retry_after: Option<u64>,
    request_id: Option<&str>,
) -> pingora_error::Result<()> {
    let header = json_header(status, body.len(), retry_after, request_id)?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// The header of a JSON answer of `len` bytes to the request whose id is
/// `request_id`.
fn json_header(
    status: u16,
    len: usize,
    retry_after: Option<u64>,
    request_id: Option<&str>,
) -> pingora_error::Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    if let Some(secs) = retry_after {
        header.insert_header(http::header::RETRY_AFTER, secs.to_string())?;
    }
    if let Some(id) = request_id {
        header.insert_header(REQUEST_ID_HEADER, id)?;
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_and_ollama_shapes() {
        let r = Refusal::NoRoute { path: "/x".into() };
        let v: serde_json::Value = serde_json::from_slice(&r.body(Shape::OpenAi, None)).unwrap();
        assert_eq!(v["error"]["message"], "no route matches /x");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "no_route");
        let v: serde_json::Value = serde_json::from_slice(&r.body(Shape::Ollama, None)).unwrap();
        assert_eq!(v["error"], "no route matches /x");
        assert_eq!(Shape::for_path("/api/chat"), Shape::Ollama);
        assert_eq!(Shape::for_path("/apix"), Shape::OpenAi);
        assert_eq!(Shape::for_path("/v1/models"), Shape::OpenAi);
        assert_eq!(Shape::for_path("/v1/messages"), Shape::Anthropic);
        assert_eq!(
            Shape::for_path("/v1/messages/count_tokens"),
            Shape::Anthropic
        );
        let r = Refusal::ModelNotFound { model: "x".into() };
        let v: serde_json::Value = serde_json::from_slice(&r.body(Shape::Anthropic, None)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("'x'"));
    }

    #[test]
    fn bodies_name_the_request_where_each_api_reads_on() {
        let r = Refusal::ModelRequired;
        let body = |shape| {
            serde_json::from_slice::<serde_json::Value>(&r.body(shape, Some("req-7"))).unwrap()
        };
        let v = body(Shape::OpenAi);
        assert_eq!(v["error"]["request_id"], "req-7");
        assert_eq!(v["error"]["code"], "model_required");
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
        let v = body(Shape::Ollama);
        assert_eq!(v["request_id"], "req-7");
        assert_eq!(v["error"], "the request body has no \"model\"");
        let v = body(Shape::Anthropic);
        assert_eq!(v["request_id"], "req-7");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let v: serde_json::Value = serde_json::from_slice(&r.body(Shape::Ollama, None)).unwrap();
        assert!(v.get("request_id").is_none(), "{v}");
    }

    #[test]
    fn statuses_types_and_retry_after() {
        let busy = Refusal::QueueFull { pool: "p".into() };
        assert_eq!(
            (busy.status(), busy.kind(), busy.retry_after()),
            (429, "rate_limit_error", Some(1))
        );
        let down = Refusal::NoHealthyBackend {
            pool: "p".into(),
            detail: "no healthy backend".into(),
        };
        assert_eq!((down.status(), down.kind()), (503, "server_error"));
        assert_eq!(down.to_string(), "no healthy backend in pool 'p'");
        assert_eq!(Refusal::ModelRequired.retry_after(), None);
        assert_eq!(Refusal::LoopDetected.status(), 508);
        assert_eq!(
            (
                Refusal::MissingApiKey.status(),
                Refusal::InvalidApiKey.code()
            ),
            (401, "invalid_api_key")
        );
        // RFC 6750: no error code when no credentials came.
        assert_eq!(
            Refusal::MissingApiKey.challenge(),
            Some(r#"Bearer realm="switchyard""#)
        );
        assert!(Refusal::InvalidApiKey
            .challenge()
            .is_some_and(|c| c.starts_with("Bearer ") && c.contains(r#"error="invalid_token""#)));
        assert_eq!(Refusal::ModelRequired.challenge(), None);
    }

    #[test]
    fn raw_response_is_complete_http() {
        let raw = Refusal::TooManyConnections.raw_response(Shape::OpenAi, "c0ffee");
        let text = std::str::from_utf8(&raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("\r\nx-request-id: c0ffee"), "{head}");
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("retry-after: 1"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
        assert_eq!(v["error"]["request_id"], "c0ffee");
    }

    #[test]
    fn travels_as_the_cause_of_a_pingora_error() {
        let e = Refusal::ModelRequired.into_error();
        assert_eq!(*e.etype(), pingora_error::ErrorType::HTTPStatus(400));
        assert_eq!(Refusal::of(&e), Some(&Refusal::ModelRequired));
        let plain = pingora_error::Error::new(pingora_error::ErrorType::ConnectRefused);
        assert_eq!(Refusal::of(&plain), None);
    }
}
