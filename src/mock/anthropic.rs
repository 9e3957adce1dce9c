//! Anthropic's Messages API (`POST /v1/messages` and
//! `/v1/messages/count_tokens`), which Ollama serves so that Anthropic
//! clients such as Claude Code can use local models.
//!
//! A stream is `message_start`, `content_block_start`, `ping`, one
//! `content_block_delta` per token, then `content_block_stop`,
//! `message_delta` (the stop reason and usage) and `message_stop`; each
//! event's `type` is also its SSE event name. Errors are Anthropic's
//! `{"type":"error","error":{"type","message"}}`. Every object also carries
//! `"backend": <name>`, as every mock object does.

use http::StatusCode;
use serde_json::{json, Value};

use super::generation::Generation;

fn with_backend(g: &Generation, mut v: Value) -> Value {
    v["backend"] = json!(&*g.backend);
    v
}

/// The message object: empty as `message_start` carries it, or whole.
fn message(g: &Generation, done: bool) -> Value {
    let (content, stop_reason, output_tokens) = if done {
        (
            json!([{"type": "text", "text": g.text()}]),
            json!("end_turn"),
            g.tokens,
        )
    } else {
        (json!([]), Value::Null, 0)
    };
    json!({
        "id": g.id,
        "type": "message",
        "role": "assistant",
        "model": g.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": g.prompt_tokens, "output_tokens": output_tokens},
    })
}

/// The events that open the stream.
pub(crate) fn head(g: &Generation) -> Vec<Value> {
    [
        json!({"type": "message_start", "message": message(g, false)}),
        json!({
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }),
        json!({"type": "ping"}),
    ]
    .into_iter()
    .map(|v| with_backend(g, v))
    .collect()
}

/// The event carrying token `i`.
pub(crate) fn delta(g: &Generation, i: usize) -> Value {
    with_backend(
        g,
        json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": Generation::token(i)},
        }),
    )
}

/// The events that close the stream, `message_stop` last.
pub(crate) fn tail(g: &Generation) -> Vec<Value> {
    [
        json!({"type": "content_block_stop", "index": 0}),
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"input_tokens": g.prompt_tokens, "output_tokens": g.tokens},
        }),
        json!({"type": "message_stop"}),
    ]
    .into_iter()
    .map(|v| with_backend(g, v))
    .collect()
}

/// The `"stream": false` response.
pub(crate) fn full(g: &Generation) -> Value {
    with_backend(g, message(g, true))
}

/// `POST /v1/messages/count_tokens`.
pub(crate) fn count_tokens(backend: &str, input_tokens: usize) -> Value {
    json!({"input_tokens": input_tokens, "backend": backend})
}

/// An Anthropic error object; its `type` follows the status as Anthropic's
/// (and Ollama's translation of it) does.
pub(crate) fn error(backend: &str, status: StatusCode, message: &str) -> Value {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "backend": backend,
    })
}
