//! The Ollama wire format: `/api/chat` and `/api/generate` lines and the
//! `/api/tags` model list.
//!
//! Every object carries `"backend": <name>` so a test can tell who answered.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::generation::{Api, Generation};

/// Ollama timestamps are RFC 3339 with sub-second digits.
fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The text of a line: `message.content` for chat, `response` for generate.
fn with_text(g: &Generation, mut v: Value, text: String) -> Value {
    match g.api {
        Api::OllamaChat => v["message"] = json!({"role": "assistant", "content": text}),
        _ => v["response"] = json!(text),
    }
    v
}

fn base(g: &Generation, done: bool) -> Value {
    json!({
        "model": g.model,
        "created_at": now(),
        "done": done,
        "backend": &*g.backend,
    })
}

/// The counters Ollama reports when generation is done.
fn finish(g: &Generation, mut v: Value) -> Value {
    let total = g.elapsed_nanos();
    v["done_reason"] = json!("stop");
    v["total_duration"] = json!(total);
    v["load_duration"] = json!(0);
    v["prompt_eval_count"] = json!(g.prompt_tokens);
    v["prompt_eval_duration"] = json!(0);
    v["eval_count"] = json!(g.tokens);
    v["eval_duration"] = json!(total);
    v
}

/// Streamed line carrying token `i`.
pub(crate) fn chunk(g: &Generation, i: usize) -> Value {
    with_text(g, base(g, false), Generation::token(i))
}

/// The last streamed line: empty text, `"done": true` and the counts.
pub(crate) fn final_line(g: &Generation) -> Value {
    finish(g, with_text(g, base(g, true), String::new()))
}

/// The `"stream": false` response.
pub(crate) fn full(g: &Generation) -> Value {
    finish(g, with_text(g, base(g, true), g.text()))
}

/// `GET /api/tags`.
pub(crate) fn tags(backend: &str, models: &[String]) -> Value {
    let modified_at = now();
    let list: Vec<Value> = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "name": m,
                "model": m,
                "modified_at": modified_at,
                "size": 1_000_000 * (i + 1),
                "digest": format!("{:064x}", i + 1),
                "details": {"format": "gguf", "family": "mock", "parameter_size": "1B"},
            })
        })
        .collect();
    json!({"models": list, "backend": backend})
}
