//! A mock LLM inference backend: a real HTTP/1.1 server speaking enough of
//! the OpenAI and Ollama APIs to stand in for vLLM, llama.cpp or Ollama in the
//! demo (`switchyard --demo`), the integration tests and the benchmarks.
//!
//! It owns nothing of the proxy; the proxy never links against it except to
//! start demo backends. Tests start it in-process on a `127.0.0.1:0`
//! listener, drive it through the proxy and assert on [`MockStats`].
//!
//! # What it answers
//! - `POST /v1/chat/completions`, `POST /v1/completions`: OpenAI completions;
//!   with `"stream": true`, Server-Sent Events, one token per event and per
//!   HTTP chunk, then a chunk with `finish_reason: "stop"` and `usage`, then
//!   `data: [DONE]`.
//! - `POST /api/chat`, `POST /api/generate`: Ollama; streamed as NDJSON
//!   unless `"stream": false`, ending with a `"done": true` line.
//! - `POST /v1/embeddings`, `GET /v1/models`, `GET /api/tags`, `GET /` and
//!   `GET /health`. Anything else is a 404 JSON error.
//! - A model not in [`MockConfig::models`] is a 404 `model_not_found`;
//!   malformed JSON is a 400. Errors are OpenAI-shaped.
//!
//! Every response has the header [`BACKEND_HEADER`] (`x-mock-backend`) and
//! every JSON object a `"backend"` field naming the server.
//!
//! # Timing
//! A streamed response's head is sent together with the first token, after
//! [`MockConfig::ttft`], as a real server's would be: the head leaves when
//! generation has produced something. Tokens follow [`MockConfig::token_gap`]
//! apart. A non-streamed response arrives when the stream would have ended,
//! after `ttft + (tokens - 1) * token_gap`, since a real server answers
//! whole only once it has generated everything.
//!
//! # Layout
//! - [`config`]: [`MockConfig`] and [`Failure`], the behaviour asked for.
//! - `server`: [`MockServer`], the accept loop, runtime control, shutdown.
//! - `routes`: one request, from failure mode to the handler of its path.
//! - `generation`: the fake completion a request gets.
//! - `openai`, `ollama`: the two wire formats.
//! - `body`: whole bodies and token streams paced by timers.
//! - [`stats`]: [`MockStats`], what the server has seen.

mod body;
pub mod config;
mod generation;
mod ollama;
mod openai;
mod routes;
mod server;
pub mod stats;

pub use config::{Failure, MockConfig, ParseFailureError};
pub use generation::unix_micros;
pub use routes::BACKEND_HEADER;
pub use server::MockServer;
pub use stats::MockStats;

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
