//! OpenAI's Responses API (`POST /v1/responses`), which vLLM and Ollama
//! serve beside chat completions: the response object, and the typed
//! events of its stream.
//!
//! A stream opens with `response.created`, `response.in_progress`,
//! `response.output_item.added` and `response.content_part.added`, carries
//! one `response.output_text.delta` per token, and closes with the matching
//! `.done` events and `response.completed`, which holds the whole response.
//! Every event has its `type` as the SSE event name and a
//! `sequence_number` counting from 0, which the OpenAI SDK reads. There is
//! no `[DONE]` line in this API. Every event also carries
//! `"backend": <name>`, as every mock object does.

use serde_json::{json, Value};

use super::generation::Generation;

/// Events sent before the first token; the first token's is number
/// `HEAD_EVENTS`.
const HEAD_EVENTS: usize = 4;

/// The id of the one output message: the response's own, renamed.
fn item_id(g: &Generation) -> String {
    format!("msg_{}", g.id.trim_start_matches("resp_"))
}

fn usage(g: &Generation) -> Value {
    json!({
        "input_tokens": g.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": g.tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": g.prompt_tokens + g.tokens,
    })
}

/// The output text part, empty while streaming starts and whole at its end.
fn text_part(text: String) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The output message, `in_progress` with no content yet, or `completed`.
fn message(g: &Generation, done: bool) -> Value {
    let (status, content) = if done {
        ("completed", json!([text_part(g.text())]))
    } else {
        ("in_progress", json!([]))
    };
    json!({
        "id": item_id(g),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

/// The response object: as it starts (`in_progress`, no output, no usage)
/// or as it ends.
fn response(g: &Generation, done: bool) -> Value {
    let (status, output, usage, completed_at) = if done {
        (
            "completed",
            json!([message(g, true)]),
            usage(g),
            json!(g.created),
        )
    } else {
        ("in_progress", json!([]), Value::Null, Value::Null)
    };
    json!({
        "id": g.id,
        "object": "response",
        "created_at": g.created,
        "completed_at": completed_at,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": g.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        // Ollama's Responses API is stateless: nothing is stored.
        "store": false,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
        "backend": &*g.backend,
    })
}

/// An event of type `kind`, number `seq`, with `fields` added.
fn event(g: &Generation, kind: &str, seq: usize, fields: Value) -> Value {
    let mut v = json!({"type": kind, "sequence_number": seq, "backend": &*g.backend});
    if let (Value::Object(v), Value::Object(fields)) = (&mut v, fields) {
        v.extend(fields);
    }
    v
}

/// The events that open the stream.
pub(crate) fn head(g: &Generation) -> Vec<Value> {
    let events = vec![
        event(
            g,
            "response.created",
            0,
            json!({"response": response(g, false)}),
        ),
        event(
            g,
            "response.in_progress",
            1,
            json!({"response": response(g, false)}),
        ),
        event(
            g,
            "response.output_item.added",
            2,
            json!({"output_index": 0, "item": message(g, false)}),
        ),
        event(
            g,
            "response.content_part.added",
            3,
            json!({
                "item_id": item_id(g),
                "output_index": 0,
                "content_index": 0,
                "part": text_part(String::new()),
            }),
        ),
    ];
    debug_assert_eq!(events.len(), HEAD_EVENTS);
    events
}

/// The event carrying token `i`.
pub(crate) fn delta(g: &Generation, i: usize) -> Value {
    event(
        g,
        "response.output_text.delta",
        HEAD_EVENTS + i,
        json!({
            "item_id": item_id(g),
            "output_index": 0,
            "content_index": 0,
            "delta": Generation::token(i),
            "logprobs": [],
        }),
    )
}

/// The events that close the stream, `response.completed` last.
pub(crate) fn tail(g: &Generation) -> Vec<Value> {
    let seq = HEAD_EVENTS + g.tokens;
    vec![
        event(
            g,
            "response.output_text.done",
            seq,
            json!({
                "item_id": item_id(g),
                "output_index": 0,
                "content_index": 0,
                "text": g.text(),
                "logprobs": [],
            }),
        ),
        event(
            g,
            "response.content_part.done",
            seq + 1,
            json!({
                "item_id": item_id(g),
                "output_index": 0,
                "content_index": 0,
                "part": text_part(g.text()),
            }),
        ),
        event(
            g,
            "response.output_item.done",
            seq + 2,
            json!({"output_index": 0, "item": message(g, true)}),
        ),
        event(
            g,
            "response.completed",
            seq + 3,
            json!({"response": response(g, true)}),
        ),
    ]
}

/// The `"stream": false` response.
pub(crate) fn full(g: &Generation) -> Value {
    response(g, true)
}
