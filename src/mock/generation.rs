//! One completion being generated: which API asked for it, for which model,
//! and the fake tokens it produces.
//!
//! The dialects ([`openai`](super::openai), [`ollama`](super::ollama)) only
//! encode; this module decides what the text is, so a streamed and a
//! non-streamed answer to the same request carry the same tokens.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use super::{ollama, openai};

/// The generation endpoints, each with its own wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions`
    Completions,
    /// `POST /api/chat`
    OllamaChat,
    /// `POST /api/generate`
    OllamaGenerate,
}

impl Api {
    /// Ollama streams unless told not to; OpenAI only when asked.
    pub(crate) fn streams_by_default(self) -> bool {
        matches!(self, Api::OllamaChat | Api::OllamaGenerate)
    }

    /// The streaming media type: SSE for OpenAI, NDJSON for Ollama.
    pub(crate) fn stream_content_type(self) -> &'static str {
        match self {
            Api::ChatCompletions | Api::Completions => "text/event-stream",
            Api::OllamaChat | Api::OllamaGenerate => "application/x-ndjson",
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
    /// Response id, unique per backend (`chatcmpl-<backend>-<n>`).
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
            Api::OllamaChat | Api::OllamaGenerate => ndjson(&stamp(ollama::chunk(self, i))),
        }
    }

    /// The wire bytes after the last token: OpenAI's finishing chunk (with
    /// `usage`) and `data: [DONE]`; Ollama's `"done": true` line.
    pub(crate) fn tail(&self) -> Vec<Bytes> {
        match self.api {
            Api::ChatCompletions | Api::Completions => vec![
                sse(&openai::final_chunk(self)),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ],
            Api::OllamaChat | Api::OllamaGenerate => vec![ndjson(&ollama::final_line(self))],
        }
    }

    /// The non-streamed response body.
    pub(crate) fn full(&self) -> Value {
        match self.api {
            Api::ChatCompletions | Api::Completions => openai::completion(self),
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Microseconds since the Unix epoch; 0 if the clock is before it.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Counts the words of the prompt: `messages[].content` for chat, `prompt`
/// for completions (a string or an array of strings).
pub(crate) fn prompt_tokens(body: &Value) -> usize {
    let words = |v: &Value| v.as_str().map_or(0, |s| s.split_whitespace().count());
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |ms| {
            ms.iter().filter_map(|m| m.get("content")).map(words).sum()
        });
    let prompt = match body.get("prompt") {
        Some(Value::Array(parts)) => parts.iter().map(words).sum(),
        Some(p) => words(p),
        None => 0,
    };
    messages + prompt
}

fn sse(event: &Value) -> Bytes {
    Bytes::from(format!("data: {event}\n\n"))
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
    }
}
