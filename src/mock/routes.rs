//! Answering one request: the failure mode first, then the route.
//!
//! Every response passes through here, so this is where the `x-mock-backend`
//! header is stamped and where the request is counted in [`MockStats`].

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::body::{self, MockBody};
use super::config::{Failure, MockConfig};
use super::generation::{self, Api, Generation};
use super::pause;
use super::stats::{InFlight, MockStats};
use super::{ollama, openai};

/// The header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-mock-backend";

/// Request bodies above this are refused with 413, so a broken client cannot
/// make a test process allocate without bound. Far above any real prompt.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What request handlers share: one per [`MockServer`](super::MockServer).
#[derive(Debug)]
pub(crate) struct Backend {
    /// The name, fixed at start; stamped into bodies.
    pub(crate) name: Arc<str>,
    /// `name` as a header value, or `mock` if it is not a valid one.
    header: HeaderValue,
    /// The live configuration; each request takes one snapshot.
    pub(crate) config: ArcSwap<MockConfig>,
    pub(crate) stats: Arc<MockStats>,
    /// Source of response ids.
    next_id: AtomicU64,
}

impl Backend {
    pub(crate) fn new(cfg: MockConfig) -> Self {
        let header = HeaderValue::from_str(&cfg.name).unwrap_or(HeaderValue::from_static("mock"));
        Backend {
            name: Arc::from(cfg.name.as_str()),
            header,
            config: ArcSwap::from_pointee(cfg),
            stats: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }
}

/// A POST body parsed as JSON (`None` for other methods), kept unjudged until
/// the route knows whether it needs one.
type ParsedBody = Option<Result<Value, serde_json::Error>>;

/// Why a request body is refused; becomes an OpenAI-style error response.
struct Rejection {
    status: StatusCode,
    message: String,
    /// The error's `code` field, e.g. `model_not_found`.
    code: &'static str,
}

/// The hyper service. An `Err` makes hyper close the connection without a
/// response, which is what `Failure::DropMidStream` wants for a completion
/// that is not streamed.
pub(crate) async fn handle(
    backend: Arc<Backend>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, io::Error> {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let in_flight = backend.stats.request(&path);
    let cfg = backend.config.load_full();

    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let msg = format!("request body larger than {MAX_BODY} bytes");
            return Ok(backend.error(StatusCode::PAYLOAD_TOO_LARGE, &msg, "body_too_large"));
        }
        Err(e) => return Err(io::Error::other(e)),
    };
    let json: ParsedBody = (method == Method::POST).then(|| serde_json::from_slice(&body));
    if method == Method::POST {
        let model = json
            .as_ref()
            .and_then(|j| j.as_ref().ok())
            .and_then(|v| v.get("model"));
        backend
            .stats
            .record_post(body, model.and_then(Value::as_str));
    }

    match cfg.failure {
        Failure::Hang => {
            // Stays in flight until the connection is aborted.
            let _held = in_flight;
            return std::future::pending().await;
        }
        Failure::Status(code) => return Ok(backend.failure(code)),
        Failure::None | Failure::DropMidStream { .. } | Failure::SplitMidEvent { .. } => {}
    }

    backend
        .route(&cfg, &method, &path, json, started, in_flight)
        .await
}

impl Backend {
    /// Dispatches on method and path, for a request that is not failing.
    async fn route(
        &self,
        cfg: &MockConfig,
        method: &Method,
        path: &str,
        json: ParsedBody,
        started: Instant,
        in_flight: InFlight,
    ) -> Result<Response<MockBody>, io::Error> {
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        let api = match path {
            "/v1/chat/completions" if post => Api::ChatCompletions,
            "/v1/completions" if post => Api::Completions,
            "/api/chat" if post => Api::OllamaChat,
            "/api/generate" if post => Api::OllamaGenerate,
            "/v1/embeddings" if post => return Ok(self.embeddings(cfg, json)),
            "/" if get => return Ok(self.text(StatusCode::OK, "Ollama is running")),
            "/health" if get => {
                let health = json!({"status": "ok", "backend": &*self.name, "models": cfg.models});
                return Ok(self.json(StatusCode::OK, &health));
            }
            "/v1/models" if get => {
                let list = openai::models(&self.name, &cfg.models, generation::unix_now());
                return Ok(self.json(StatusCode::OK, &list));
            }
            "/api/tags" if get => {
                return Ok(self.json(StatusCode::OK, &ollama::tags(&self.name, &cfg.models)))
            }
            // What Ollama has loaded: here, the first model it serves.
            "/api/ps" if get => {
                let loaded = &cfg.models[..cfg.models.len().min(1)];
                return Ok(self.json(StatusCode::OK, &ollama::tags(&self.name, loaded)));
            }
            p if super::stats::KNOWN_PATHS.contains(&p) => {
                let msg = format!("method {method} not allowed on {p}");
                return Ok(self.error(StatusCode::METHOD_NOT_ALLOWED, &msg, "method_not_allowed"));
            }
            p => {
                let msg = format!("no route for {method} {p}");
                return Ok(self.error(StatusCode::NOT_FOUND, &msg, "not_found"));
            }
        };
        let body = match self.checked_body(cfg, json) {
            Ok(v) => v,
            Err(r) => return Ok(self.reject(r)),
        };
        self.generate(cfg, api, &body, started, in_flight).await
    }

    /// Runs one completion: waits the time to first token, then streams or
    /// waits out the remaining tokens and answers whole.
    async fn generate(
        &self,
        cfg: &MockConfig,
        api: Api,
        body: &Value,
        started: Instant,
        in_flight: InFlight,
    ) -> Result<Response<MockBody>, io::Error> {
        let stream = body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(api.streams_by_default());
        let gen = Generation {
            api,
            backend: Arc::clone(&self.name),
            model: self.model_for(cfg, body),
            id: format!(
                "chatcmpl-{}-{}",
                self.name,
                self.next_id.fetch_add(1, Ordering::Relaxed)
            ),
            created: generation::unix_now(),
            prompt_tokens: generation::prompt_tokens(body),
            tokens: cfg.tokens,
            started,
        };
        let cut_after = match cfg.failure {
            Failure::DropMidStream { after_tokens } => Some(body::Cut::Between(after_tokens)),
            Failure::SplitMidEvent { after_tokens } => Some(body::Cut::Within(after_tokens)),
            _ => None,
        };
        pause(cfg.ttft).await;

        if stream {
            let mut resp = Response::new(body::token_stream(
                gen,
                cfg.token_gap,
                cut_after,
                Arc::clone(&self.stats),
                in_flight,
            ));
            let headers = resp.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(api.stream_content_type()),
            );
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return Ok(self.stamp(resp));
        }
        // A whole answer takes as long as the stream would have.
        let rest = cfg.tokens.saturating_sub(1);
        pause(
            cfg.token_gap
                .saturating_mul(u32::try_from(rest).unwrap_or(u32::MAX)),
        )
        .await;
        if cut_after.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock dropped the request",
            ));
        }
        Ok(self.json(StatusCode::OK, &gen.full()))
    }

    /// The parsed POST body, or why a real server would refuse it (400 or
    /// 404): malformed JSON, a non-object, a non-string `model`, or a model
    /// this backend does not serve. A body without `model` is accepted.
    fn checked_body(&self, cfg: &MockConfig, json: ParsedBody) -> Result<Value, Rejection> {
        let bad = |message: String| Rejection {
            status: StatusCode::BAD_REQUEST,
            message,
            code: "invalid_request",
        };
        let body = match json {
            Some(Ok(v @ Value::Object(_))) => v,
            Some(Ok(_)) => return Err(bad("request body must be a JSON object".into())),
            Some(Err(e)) => return Err(bad(format!("malformed JSON body: {e}"))),
            None => return Err(bad("expected a POST with a JSON body".into())),
        };
        match body.get("model") {
            None | Some(Value::Null) => Ok(body),
            Some(Value::String(m)) if cfg.serves(m) => Ok(body),
            Some(Value::String(m)) => Err(Rejection {
                status: StatusCode::NOT_FOUND,
                message: format!("The model `{m}` does not exist on backend {}", self.name),
                code: "model_not_found",
            }),
            Some(_) => Err(bad("`model` must be a string".into())),
        }
    }

    fn embeddings(&self, cfg: &MockConfig, json: ParsedBody) -> Response<MockBody> {
        match self.checked_body(cfg, json) {
            Ok(body) => {
                let model = self.model_for(cfg, &body);
                self.json(
                    StatusCode::OK,
                    &openai::embeddings(&self.name, &model, &body),
                )
            }
            Err(r) => self.reject(r),
        }
    }

    /// The model to report: the one asked for, else the first one served.
    fn model_for(&self, cfg: &MockConfig, body: &Value) -> String {
        body.get("model")
            .and_then(Value::as_str)
            .or(cfg.models.first().map(String::as_str))
            .unwrap_or("mock")
            .to_string()
    }

    fn reject(&self, r: Rejection) -> Response<MockBody> {
        self.error(r.status, &r.message, r.code)
    }

    /// The response of `Failure::Status(code)`.
    fn failure(&self, code: u16) -> Response<MockBody> {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let msg = format!("mock backend {} is failing with status {code}", self.name);
        let mut resp = self.error(status, &msg, "mock_failure");
        if matches!(code, 429 | 503) {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }

    fn error(&self, status: StatusCode, message: &str, code: &str) -> Response<MockBody> {
        let kind = match status.as_u16() {
            429 => "rate_limit_error",
            500.. => "server_error",
            _ => "invalid_request_error",
        };
        self.json(status, &openai::error(&self.name, message, kind, code))
    }

    fn json(&self, status: StatusCode, value: &Value) -> Response<MockBody> {
        self.respond(status, "application/json", Bytes::from(value.to_string()))
    }

    fn text(&self, status: StatusCode, text: &'static str) -> Response<MockBody> {
        self.respond(
            status,
            "text/plain; charset=utf-8",
            Bytes::from_static(text.as_bytes()),
        )
    }

    fn respond(
        &self,
        status: StatusCode,
        content_type: &'static str,
        bytes: Bytes,
    ) -> Response<MockBody> {
        let mut resp = Response::new(body::full(bytes));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        self.stamp(resp)
    }

    fn stamp(&self, mut resp: Response<MockBody>) -> Response<MockBody> {
        resp.headers_mut()
            .insert(HeaderName::from_static(BACKEND_HEADER), self.header.clone());
        resp
    }
}
