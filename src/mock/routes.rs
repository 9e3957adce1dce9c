//! Answering one request: the failure mode first, then the route.
//!
//! Every response passes through here, so this is where the request is
//! counted in [`MockStats`]; [`reply`](super::reply) shapes and stamps it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::body::{self, MockBody};
use super::config::{Failure, MockConfig};
use super::generation::{self, Api, Generation};
use super::pause;
use super::reply::{Dialect, Rejection};
use super::stats::{InFlight, MockStats, KNOWN_PATHS};
use super::{anthropic, ollama, openai};

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
    pub(super) header: HeaderValue,
    /// When the server started: the time its models say they were pulled
    /// (`modified_at`, `created`), so lists stay the same from one request
    /// to the next, as a real server's do.
    started: SystemTime,
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
            started: SystemTime::now(),
            config: ArcSwap::from_pointee(cfg),
            stats: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }
}

/// A POST body parsed as JSON (`None` for other methods), kept unjudged until
/// the route knows whether it needs one.
type ParsedBody = Option<Result<Value, serde_json::Error>>;

/// The hyper service. An `Err` makes hyper close the connection without a
/// response, which is what `Failure::DropMidStream` wants for a completion
/// that is not streamed.
pub(crate) async fn handle(
    backend: Arc<Backend>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, io::Error> {
    let started = Instant::now();
    let cfg = backend.config.load_full();
    let (method, full) = (req.method().clone(), req.uri().path().to_string());
    backend.stats.record_request(&full, req.headers());
    let path = match full.strip_prefix(cfg.base_path.as_str()) {
        Some(rest) if rest.starts_with('/') || cfg.base_path.is_empty() => rest.to_string(),
        // Outside the base path, as a reverse proxy in front would answer.
        _ => "/not-under-the-base-path".to_string(),
    };
    let dialect = Dialect::of(&path);
    let in_flight = backend.stats.request(&path);

    let (head, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let too_large = Rejection {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("request body larger than {MAX_BODY} bytes"),
                code: "body_too_large",
            };
            return Ok(backend.reject(dialect, too_large));
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
            .record_post(body, model.and_then(Value::as_str), head.headers);
    }

    match cfg.failure {
        Failure::Hang => {
            // Stays in flight until the connection is aborted.
            let _held = in_flight;
            return std::future::pending().await;
        }
        Failure::Status(code) => return Ok(backend.failure(dialect, code)),
        Failure::None | Failure::DropMidStream { .. } | Failure::SplitMidEvent { .. } => {}
    }

    let api = match path.as_str() {
        "/v1/chat/completions" => Api::ChatCompletions,
        "/v1/completions" => Api::Completions,
        "/v1/responses" => Api::Responses,
        "/v1/messages" => Api::Messages,
        "/api/chat" => Api::OllamaChat,
        "/api/generate" => Api::OllamaGenerate,
        _ => return Ok(backend.answer(&cfg, &method, &path, json)),
    };
    if method != Method::POST {
        return Ok(backend.reject(dialect, not_allowed(&method, &path)));
    }
    match backend.checked_body(&cfg, dialect, json) {
        Ok(body) => backend.generate(&cfg, api, &body, started, in_flight).await,
        Err(r) => Ok(backend.reject(dialect, r)),
    }
}

impl Backend {
    /// Answers a request that generates nothing: lists, model details,
    /// embeddings, token counts, version and health.
    fn answer(
        &self,
        cfg: &MockConfig,
        method: &Method,
        path: &str,
        json: ParsedBody,
    ) -> Response<MockBody> {
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        let dialect = Dialect::of(path);
        let name = &*self.name;
        let answer = match path {
            "/" if get => return self.text(StatusCode::OK, "Ollama is running"),
            "/health" if get => Ok(json!({"status": "ok", "backend": name, "models": cfg.models})),
            "/v1/models" if get => Ok(openai::models(name, &cfg.models, self.created())),
            "/api/tags" if get => Ok(ollama::tags(name, &cfg.models, self.started)),
            // What Ollama has loaded: here, the first model it serves.
            "/api/ps" if get => Ok(ollama::ps(name, &cfg.models[..cfg.models.len().min(1)])),
            "/api/version" if get => Ok(ollama::version(name)),
            p if get && p.starts_with("/v1/models/") => self.model_entry(cfg, p),
            "/api/show" if post => self.show(cfg, json),
            "/v1/embeddings" if post => self
                .checked_body(cfg, dialect, json)
                .map(|b| openai::embeddings(name, &self.model_for(cfg, &b), &b)),
            "/api/embed" if post => self
                .checked_body(cfg, dialect, json)
                .map(|b| ollama::embed(name, &self.model_for(cfg, &b), &b)),
            "/api/embeddings" if post => self
                .checked_body(cfg, dialect, json)
                .map(|_| ollama::embeddings(name)),
            "/v1/messages/count_tokens" if post => self
                .checked_body(cfg, dialect, json)
                .map(|b| anthropic::count_tokens(name, generation::prompt_tokens(&b))),
            p if KNOWN_PATHS.contains(&p) => Err(not_allowed(method, p)),
            p => Err(Rejection {
                status: StatusCode::NOT_FOUND,
                message: format!("no route for {method} {p}"),
                code: "not_found",
            }),
        };
        match answer {
            Ok(v) => self.json(StatusCode::OK, &v),
            Err(r) => self.reject(dialect, r),
        }
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
                "{}{}-{}",
                api.id_prefix(),
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
    fn checked_body(
        &self,
        cfg: &MockConfig,
        dialect: Dialect,
        json: ParsedBody,
    ) -> Result<Value, Rejection> {
        let body = object(json)?;
        match body.get("model") {
            None | Some(Value::Null) => Ok(body),
            Some(Value::String(m)) => self.served(cfg, dialect, m).map(|()| body),
            Some(_) => Err(Rejection::bad("`model` must be a string")),
        }
    }

    /// Whether `model` is served, or the 404 that says it is not.
    fn served(&self, cfg: &MockConfig, dialect: Dialect, model: &str) -> Result<(), Rejection> {
        if cfg.serves(model) {
            Ok(())
        } else {
            Err(self.not_found(dialect, model))
        }
    }

    /// The 404 for a model not served, worded as the API family words it.
    fn not_found(&self, dialect: Dialect, model: &str) -> Rejection {
        let message = match dialect {
            Dialect::OpenAi => format!(
                "The model `{model}` does not exist on backend {}",
                self.name
            ),
            // Ollama's words; its Anthropic endpoint passes them on.
            Dialect::Ollama | Dialect::Anthropic => format!("model '{model}' not found"),
        };
        Rejection {
            status: StatusCode::NOT_FOUND,
            message,
            code: "model_not_found",
        }
    }

    /// `POST /api/show`. Ollama takes the model under `model`, or under
    /// `name` as its older clients send it, and requires one.
    fn show(&self, cfg: &MockConfig, json: ParsedBody) -> Result<Value, Rejection> {
        let body = object(json)?;
        let model = ["model", "name"]
            .iter()
            .filter_map(|k| body.get(*k)?.as_str())
            .find(|m| !m.is_empty())
            .ok_or_else(|| Rejection::bad("model is required"))?;
        self.served(cfg, Dialect::Ollama, model)?;
        Ok(ollama::show(&self.name, model, self.started))
    }

    /// `GET /v1/models/{id}`: the model's entry, or 404.
    fn model_entry(&self, cfg: &MockConfig, path: &str) -> Result<Value, Rejection> {
        let id = percent_decoded(path.trim_start_matches("/v1/models/"));
        if id.is_empty() {
            return Err(self.not_found(Dialect::OpenAi, &id));
        }
        self.served(cfg, Dialect::OpenAi, &id)?;
        let mut entry = openai::model(&id, self.created());
        entry["backend"] = json!(&*self.name);
        Ok(entry)
    }

    /// The model to report: the one asked for, else the first one served.
    fn model_for(&self, cfg: &MockConfig, body: &Value) -> String {
        body.get("model")
            .and_then(Value::as_str)
            .or(cfg.models.first().map(String::as_str))
            .unwrap_or("mock")
            .to_string()
    }

    /// [`Backend::started`] in Unix seconds, as OpenAI's `created`.
    fn created(&self) -> u64 {
        generation::unix_secs(self.started)
    }
}

/// The body as a JSON object, or the 400 a real server would answer.
fn object(json: ParsedBody) -> Result<Value, Rejection> {
    match json {
        Some(Ok(v @ Value::Object(_))) => Ok(v),
        Some(Ok(_)) => Err(Rejection::bad("request body must be a JSON object")),
        Some(Err(e)) => Err(Rejection::bad(format!("malformed JSON body: {e}"))),
        None => Err(Rejection::bad("expected a POST with a JSON body")),
    }
}

fn not_allowed(method: &Method, path: &str) -> Rejection {
    Rejection {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("method {method} not allowed on {path}"),
        code: "method_not_allowed",
    }
}

/// `%XX` escapes decoded, as clients escape `:` and `/` in model ids
/// (`llama3.1%3A8b`); anything that is not a valid escape is kept.
fn percent_decoded(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| {
            bytes
                .get(j)
                .and_then(|b| char::from(*b).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
