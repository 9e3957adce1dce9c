//! The OpenAI wire format: chat and legacy completions, their stream
//! chunks, the model list, embeddings and errors. (The Responses API has
//! its own module, [`responses`](super::responses).)
//!
//! Shapes follow the OpenAI API closely enough for real client libraries to
//! parse them. Each top-level object also carries `"backend": <name>` and
//! `system_fingerprint: <name>` so a test can tell who answered.

use serde_json::{json, Value};

use super::generation::{self, Api, Generation};

/// `object` of a non-streamed response.
fn object(g: &Generation) -> &'static str {
    match g.api {
        Api::Completions => "text_completion",
        _ => "chat.completion",
    }
}

/// `object` of a stream chunk. Legacy completions stream the same object
/// type they return whole.
fn chunk_object(g: &Generation) -> &'static str {
    match g.api {
        Api::Completions => "text_completion",
        _ => "chat.completion.chunk",
    }
}

fn usage(g: &Generation) -> Value {
    json!({
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.tokens,
        "total_tokens": g.prompt_tokens + g.tokens,
    })
}

/// One choice of a stream chunk: `delta` for chat, `text` for completions.
fn stream_choice(g: &Generation, text: Option<String>, finish: Option<&str>) -> Value {
    match g.api {
        Api::Completions => json!({
            "index": 0,
            "text": text.unwrap_or_default(),
            "logprobs": null,
            "finish_reason": finish,
        }),
        _ => {
            let delta = match text {
                Some(t) => json!({"role": "assistant", "content": t}),
                None => json!({}),
            };
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
        }
    }
}

fn envelope(g: &Generation, object: &str, choices: Value) -> Value {
    json!({
        "id": g.id,
        "object": object,
        "created": g.created,
        "model": g.model,
        "system_fingerprint": &*g.backend,
        "backend": &*g.backend,
        "choices": choices,
    })
}

/// Stream chunk carrying token `i`.
pub(crate) fn chunk(g: &Generation, i: usize) -> Value {
    let choice = stream_choice(g, Some(Generation::token(i)), None);
    envelope(g, chunk_object(g), json!([choice]))
}

/// The chunk after the last token: `finish_reason: "stop"` and `usage`.
pub(crate) fn final_chunk(g: &Generation) -> Value {
    let choice = stream_choice(g, None, Some("stop"));
    let mut v = envelope(g, chunk_object(g), json!([choice]));
    v["usage"] = usage(g);
    v
}

/// The non-streamed response.
pub(crate) fn completion(g: &Generation) -> Value {
    let choice = match g.api {
        Api::Completions => json!({
            "index": 0,
            "text": g.text(),
            "logprobs": null,
            "finish_reason": "stop",
        }),
        _ => json!({
            "index": 0,
            "message": {"role": "assistant", "content": g.text()},
            "logprobs": null,
            "finish_reason": "stop",
        }),
    };
    let mut v = envelope(g, object(g), json!([choice]));
    v["usage"] = usage(g);
    v
}

/// Who a model belongs to, as Ollama's `/v1/models` says: the namespace of
/// `namespace/model`, else `library` (the models of ollama.com's library).
fn owned_by(model: &str) -> &str {
    model.split_once('/').map_or("library", |(ns, _)| ns)
}

/// One `/v1/models` entry; `created` is when the model was pulled.
pub(crate) fn model(id: &str, created: u64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": owned_by(id)})
}

/// `GET /v1/models`.
pub(crate) fn models(backend: &str, models: &[String], created: u64) -> Value {
    let data: Vec<Value> = models.iter().map(|m| model(m, created)).collect();
    json!({"object": "list", "data": data, "backend": backend})
}

/// `POST /v1/embeddings`: one small deterministic vector per input.
pub(crate) fn embeddings(backend: &str, model: &str, body: &Value) -> Value {
    let data: Vec<Value> = (0..generation::embedding_inputs(body))
        .map(|i| json!({"object": "embedding", "index": i, "embedding": generation::embedding(i)}))
        .collect();
    let prompt_tokens = generation::prompt_tokens(body);
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "backend": backend,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

/// An OpenAI-style error object.
pub(crate) fn error(backend: &str, message: &str, kind: &str, code: &str) -> Value {
    json!({
        "error": {"message": message, "type": kind, "param": null, "code": code},
        "backend": backend,
    })
}
