//! One completion being generated: which API asked for it, for which model,
//! and the fake tokens it produces.
//!
//! The dialects ([`openai`](super::openai), [`ollama`](super::ollama),
//! [`responses`](super::responses), [`anthropic`](super::anthropic)) only
//! encode; this module decides what the text is, so a streamed and a
//! non-streamed answer to the same request carry the same tokens.
//!
//! A stream is a head (events that open it: Responses' `response.created`,
//! Anthropic's `message_start`; empty for the others), one event per token,
//! and a tail (the events that close it). [`body`](super::body) paces and
//! cuts it; this module only makes its pieces.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use super::{anthropic, ollama, openai, responses};

/// The generation endpoints, each with its own wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/responses`: OpenAI's Responses API.
    Responses,
    /// `POST /v1/messages`: Anthropic's Messages API, as Ollama serves it.
    Messages,
    /// `POST /api/chat`
    OllamaChat,
    /// `POST /api/generate`
    OllamaGenerate,
}

impl Api {
    /// Ollama streams unless told not to; OpenAI and Anthropic only when
    /// asked.
    pub(crate) fn streams_by_default(self) -> bool {
        matches!(self, Api::OllamaChat | Api::OllamaGenerate)
    }

    /// The streaming media type: NDJSON for Ollama, SSE for the others.
    pub(crate) fn stream_content_type(self) -> &'static str {
        match self {
            Api::OllamaChat | Api::OllamaGenerate => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }

    /// How the API's response ids begin.
    pub(crate) fn id_prefix(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chatcmpl-",
            Api::Completions => "cmpl-",
            Api::Responses => "resp_",
            Api::Messages => "msg_",
            // Ollama's answers carry no id; this one is never sent.
            Api::OllamaChat | Api::OllamaGenerate => "",
        }
    }
}

/// Everything needed to encode one completion, streamed or not.
#[derive(Debug, Clone)]
pub(crate) struct Generation {
    pub(crate) api: Api,
    /// The backend's name, stamped into every body.
    pub(crate) backend: Arc<str>,
    /// The model asked for, or the backend's first model if none was named.
    pub(crate) model: String,
    /// Response id, unique per backend: the API's prefix, the backend's
    /// name and a counter (`chatcmpl-gpu-1-7`, `resp_gpu-1-8`).
    pub(crate) id: String,
    /// Unix seconds, as OpenAI's `created`.
    pub(crate) created: u64,
    /// Rough prompt size: whitespace-separated words of the prompt text.
    pub(crate) prompt_tokens: usize,
    /// Tokens to generate.
    pub(crate) tokens: usize,
    /// When the request arrived, for Ollama's duration fields.
    pub(crate) started: Instant,
}

impl Generation {
    /// The text of token `i`. Tokens carry their trailing space, so the
    /// concatenation of streamed pieces equals the non-streamed text.
    pub(crate) fn token(i: usize) -> String {
        format!("tok{i} ")
    }

    /// The whole generated text.
    pub(crate) fn text(&self) -> String {
        (0..self.tokens).map(Self::token).collect()
    }

    /// The wire bytes that open a stream, before the first token.
    pub(crate) fn head(&self) -> Vec<Bytes> {
        let events = match self.api {
            Api::Responses => responses::head(self),
            Api::Messages => anthropic::head(self),
            _ => Vec::new(),
        };
        events.iter().map(sse_named).collect()
    }

    /// The wire bytes of streamed token `i`, one SSE event or NDJSON line.
    /// Each carries `sent_us`, the microseconds since the Unix epoch when
    /// it was made, right before it is written: a test measures what a
    /// proxy adds to each event's way as arrival minus this.
    pub(crate) fn chunk(&self, i: usize) -> Bytes {
        let stamp = |mut event: Value| {
            event["sent_us"] = Value::from(unix_micros());
            event
        };
        match self.api {
            Api::ChatCompletions | Api::Completions => sse(&stamp(openai::chunk(self, i))),
            Api::Responses => sse_named(&stamp(responses::delta(self, i))),
            Api::Messages => sse_named(&stamp(anthropic::delta(self, i))),
            Api::OllamaChat | Api::OllamaGenerate => ndjson(&stamp(ollama::chunk(self, i))),
        }
    }

    /// The wire bytes after the last token: OpenAI's finishing chunk (with
    /// `usage`) and `data: [DONE]`; Ollama's `"done": true` line; the
    /// closing events of Responses (`response.completed` last) and of
    /// Anthropic (`message_stop` last).
    pub(crate) fn tail(&self) -> Vec<Bytes> {
        match self.api {
            Api::ChatCompletions | Api::Completions => vec![
                sse(&openai::final_chunk(self)),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ],
            Api::Responses => responses::tail(self).iter().map(sse_named).collect(),
            Api::Messages => anthropic::tail(self).iter().map(sse_named).collect(),
            Api::OllamaChat | Api::OllamaGenerate => vec![ndjson(&ollama::final_line(self))],
        }
    }

    /// The non-streamed response body.
    pub(crate) fn full(&self) -> Value {
        match self.api {
            Api::ChatCompletions | Api::Completions => openai::completion(self),
            Api::Responses => responses::full(self),
            Api::Messages => anthropic::full(self),
            Api::OllamaChat | Api::OllamaGenerate => ollama::full(self),
        }
    }

    /// Time since the request arrived, saturated into Ollama's nanoseconds.
    pub(crate) fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Seconds since the Unix epoch; 0 if the clock is before it.
pub(crate) fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// Seconds from the Unix epoch to `t`; 0 if `t` is before it.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Microseconds since the Unix epoch; 0 if the clock is before it.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Counts the words of the prompt, wherever the request's API puts it:
/// `messages[].content` (chat, Anthropic), `prompt` (completions, Ollama
/// generate), `input` (Responses, embeddings), `system` (Anthropic) and
/// `instructions` (Responses). Each may be a string, or an array of
/// strings or of content parts whose text is under `text` or `content`.
pub(crate) fn prompt_tokens(body: &Value) -> usize {
    ["messages", "prompt", "input", "system", "instructions"]
        .iter()
        .filter_map(|k| body.get(k))
        .map(words)
        .sum()
}

/// Whitespace-separated words in a string, an array, or a content part.
fn words(v: &Value) -> usize {
    match v {
        Value::String(s) => s.split_whitespace().count(),
        Value::Array(items) => items.iter().map(words).sum(),
        Value::Object(part) => ["text", "content"]
            .iter()
            .filter_map(|k| part.get(*k))
            .map(words)
            .sum(),
        _ => 0,
    }
}

/// Length of each fake embedding vector: enough to look like a vector.
const EMBEDDING_DIMS: usize = 4;

/// The fake embedding of the `i`th input: small, deterministic, and
/// different for neighbouring inputs.
pub(crate) fn embedding(i: usize) -> Vec<f64> {
    (0..EMBEDDING_DIMS)
        .map(|d| ((i * EMBEDDING_DIMS + d) % 10) as f64 / 10.0)
        .collect()
}

/// How many inputs an embeddings request has: the length of an `input`
/// array, else one.
pub(crate) fn embedding_inputs(body: &Value) -> usize {
    match body.get("input") {
        Some(Value::Array(items)) => items.len(),
        _ => 1,
    }
}

/// An unnamed SSE event, as chat completions stream them.
fn sse(event: &Value) -> Bytes {
    Bytes::from(format!("data: {event}\n\n"))
}

/// An SSE event named after its `type`, as the Responses and Anthropic
/// streams have them (`event: response.created`, `event: message_start`).
fn sse_named(event: &Value) -> Bytes {
    let name = event["type"].as_str().unwrap_or("message");
    Bytes::from(format!("event: {name}\ndata: {event}\n\n"))
}

fn ndjson(line: &Value) -> Bytes {
    Bytes::from(format!("{line}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_prompt_words() {
        let chat =
            json!({"messages": [{"role": "user", "content": "hello there"}, {"content": "x"}]});
        assert_eq!(prompt_tokens(&chat), 3);
        assert_eq!(prompt_tokens(&json!({"prompt": ["a b", "c"]})), 3);
        assert_eq!(prompt_tokens(&json!({"prompt": 7})), 0);
        let anthropic = json!({
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi you"}]}],
        });
        assert_eq!(prompt_tokens(&anthropic), 4);
        let responses = json!({"instructions": "be kind", "input": "one two three"});
        assert_eq!(prompt_tokens(&responses), 5);
    }
}
