//! A mock LLM inference backend: a real HTTP/1.1 server speaking the
//! OpenAI, Ollama and Anthropic APIs as Ollama and vLLM do, to stand in for
//! them in the demo (`switchyard --demo`), the integration tests and the
//! benchmarks. Official client libraries (the `ollama` and `openai` Python
//! packages, Open WebUI, the `ollama` CLI) work against it unchanged.
//!
//! It owns nothing of the proxy; the proxy never links against it except to
//! start demo backends. Tests start it in-process on a `127.0.0.1:0`
//! listener, drive it through the proxy and assert on [`MockStats`].
//!
//! # What it answers
//! Generation, each with its API's own stream format:
//! - `POST /v1/chat/completions`, `POST /v1/completions`: OpenAI
//!   completions; with `"stream": true`, Server-Sent Events, one token per
//!   event and per HTTP chunk, then a chunk with `finish_reason: "stop"`
//!   and `usage`, then `data: [DONE]`.
//! - `POST /v1/responses`: OpenAI's Responses API; streamed as typed events
//!   from `response.created` through one `response.output_text.delta` per
//!   token to `response.completed`.
//! - `POST /v1/messages`: Anthropic's Messages API, as Ollama serves it;
//!   streamed as `message_start` ... `content_block_delta` per token ...
//!   `message_stop`.
//! - `POST /api/chat`, `POST /api/generate`: Ollama; streamed as NDJSON
//!   unless `"stream": false`, ending with a `"done": true` line.
//!
//! Everything else:
//! - `GET /v1/models`, `GET /v1/models/{id}`: OpenAI model entries
//!   (`created`, `owned_by`).
//! - `GET /api/tags`, `GET /api/ps`, `POST /api/show`: Ollama's model list,
//!   loaded models (the first model served) and model details, with the
//!   size, digest and `details` of `catalog`; `/api/show` takes the model
//!   under `model` or `name`.
//! - `POST /v1/embeddings`, `POST /api/embed` (`input`: a string or a
//!   list), `POST /api/embeddings` (`prompt`, the older form): small
//!   deterministic vectors.
//! - `POST /v1/messages/count_tokens`, `GET /api/version`, `GET /` ("Ollama
//!   is running") and `GET /health`.
//!
//! Anything else is a 404, a known path with the wrong method a 405. A
//! model not in [`MockConfig::models`] is a 404; malformed JSON is a 400.
//! Errors are in the shape of the path's API (see `reply`): OpenAI's on
//! `/v1/*`, Ollama's `{"error": "..."}` on `/api/*`, Anthropic's on
//! `/v1/messages`.
//!
//! Every response has the header [`BACKEND_HEADER`] (`x-mock-backend`) and
//! every top-level JSON object and stream event a `"backend"` field naming
//! the server.
//!
//! # Timing and failures
//! A streamed response's head is sent together with the first token (and
//! the API's opening events), after [`MockConfig::ttft`], as a real
//! server's would be: the head leaves when generation has produced
//! something. Tokens follow [`MockConfig::token_gap`] apart. A non-streamed
//! response arrives when the stream would have ended, after
//! `ttft + (tokens - 1) * token_gap`, since a real server answers whole
//! only once it has generated everything. The other endpoints answer at
//! once.
//!
//! [`Failure`] modes apply to every path (`hang` and status failures) or
//! to every generation endpoint, streamed or not (`drop:N`, `split:N`).
//!
//! # Layout
//! - [`config`]: [`MockConfig`] and [`Failure`], the behaviour asked for.
//! - `server`: [`MockServer`], the accept loop, runtime control, shutdown.
//! - `routes`: one request, from failure mode to the handler of its path.
//! - `reply`: how answers and errors are shaped for each API, and stamped.
//! - `generation`: the fake completion a request gets.
//! - `openai`, `responses`, `anthropic`, `ollama`: the wire formats.
//! - `catalog`: what the mock says about a model (size, family, digest).
//! - `body`: whole bodies and token streams paced by timers.
//! - [`stats`]: [`MockStats`], what the server has seen, including the
//!   body and header of the last POST, to check what a proxy forwarded,
//!   and the header of the last request to each path (health checks and
//!   model lists too).
//! - `tls`: [`MockTls`], the HTTPS mode (`--tls-cert`, `--tls-key`), with
//!   client certificates required when given a CA.

mod anthropic;
mod body;
mod catalog;
pub mod config;
mod generation;
mod ollama;
mod openai;
mod reply;
mod responses;
mod routes;
mod server;
pub mod stats;
mod tls;

pub use config::{Failure, MockConfig, ParseFailureError};
pub use generation::unix_micros;
pub use routes::BACKEND_HEADER;
pub use server::MockServer;
pub use stats::MockStats;
pub use tls::MockTls;

/// Waits `d`, or not at all when it is zero: a zero sleep still waits for
/// the timer's next tick (about a millisecond), which would put a floor
/// under the "instant" answers benchmarks rely on.
pub(crate) async fn pause(d: std::time::Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests;
