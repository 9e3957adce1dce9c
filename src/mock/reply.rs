//! How an answer is shaped: JSON and text bodies, the error body each API
//! family expects, and the `x-mock-backend` header on every response.
//!
//! Real servers answer errors in their own API's shape, and clients parse
//! them: the ollama libraries read `{"error": "<message>"}` on `/api/*`,
//! the OpenAI SDKs `{"error": {"message", "type", "code"}}`, the Anthropic
//! SDK `{"type": "error", "error": {"type", "message"}}` on `/v1/messages`.
//! [`Dialect::of`] tells them apart by path, so every refusal the mock
//! makes, failure modes included, reaches a client in the shape its
//! library understands.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use serde_json::Value;

use super::body::{self, MockBody};
use super::routes::{Backend, BACKEND_HEADER};
use super::{anthropic, ollama, openai};

/// The API family of a path, which decides the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `/v1/*` but Anthropic's, and anything else (`/`, `/health`).
    OpenAi,
    /// `/api/*`.
    Ollama,
    /// `/v1/messages` and below it.
    Anthropic,
}

impl Dialect {
    pub(crate) fn of(path: &str) -> Dialect {
        if path == "/api" || path.starts_with("/api/") {
            Dialect::Ollama
        } else if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }
}

/// Why a request is refused.
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// The OpenAI error's `code` field, e.g. `model_not_found`.
    pub(crate) code: &'static str,
}

impl Rejection {
    /// A 400: the request is malformed.
    pub(crate) fn bad(message: impl Into<String>) -> Rejection {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            code: "invalid_request",
        }
    }
}

impl Backend {
    /// The error response for `r`, in the shape `dialect` expects.
    pub(crate) fn reject(&self, dialect: Dialect, r: Rejection) -> Response<MockBody> {
        let body = match dialect {
            Dialect::Ollama => ollama::error(&self.name, &r.message),
            Dialect::Anthropic => anthropic::error(&self.name, r.status, &r.message),
            Dialect::OpenAi => {
                let kind = match r.status.as_u16() {
                    429 => "rate_limit_error",
                    500.. => "server_error",
                    _ => "invalid_request_error",
                };
                openai::error(&self.name, &r.message, kind, r.code)
            }
        };
        self.json(r.status, &body)
    }

    /// The response of `Failure::Status(code)`.
    pub(crate) fn failure(&self, dialect: Dialect, code: u16) -> Response<MockBody> {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = format!("mock backend {} is failing with status {code}", self.name);
        let mut resp = self.reject(
            dialect,
            Rejection {
                status,
                message,
                code: "mock_failure",
            },
        );
        if matches!(code, 429 | 503) {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }

    pub(crate) fn json(&self, status: StatusCode, value: &Value) -> Response<MockBody> {
        self.respond(status, "application/json", Bytes::from(value.to_string()))
    }

    pub(crate) fn text(&self, status: StatusCode, text: &'static str) -> Response<MockBody> {
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

    /// Adds the header naming this backend.
    pub(crate) fn stamp(&self, mut resp: Response<MockBody>) -> Response<MockBody> {
        resp.headers_mut()
            .insert(HeaderName::from_static(BACKEND_HEADER), self.header.clone());
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_by_path() {
        assert_eq!(Dialect::of("/api/show"), Dialect::Ollama);
        assert_eq!(Dialect::of("/v1/messages"), Dialect::Anthropic);
        assert_eq!(Dialect::of("/v1/messages/count_tokens"), Dialect::Anthropic);
        assert_eq!(Dialect::of("/v1/messagesx"), Dialect::OpenAi);
        assert_eq!(Dialect::of("/apix"), Dialect::OpenAi);
        assert_eq!(Dialect::of("/v1/responses"), Dialect::OpenAi);
    }
}
