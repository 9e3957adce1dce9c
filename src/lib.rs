//! Switchyard: a load balancer and edge proxy for fleets of LLM inference
//! servers (Ollama, vLLM, llama.cpp server, any OpenAI-compatible API),
//! built on Cloudflare Pingora.
//!
//! # Layout
//! - [`config`]: the YAML file, its validation and the checked model.
//! - [`state`]: the immutable routing snapshot and its atomic replacement.
//! - [`routing`]: which pool serves a request, and its hash key.
//! - [`balance`]: which backend of a pool serves it: selectors, caps, queue.
//! - [`health`]: is a backend up: active check state, probes, circuit breaker.
//! - [`background`]: health checks and model discovery, run beside the proxy.
//! - [`models`]: which backend serves which model; the request's model.
//! - [`edge`]: client connections: their count, header and keep-alive
//!   limits, HTTP/1.1 or HTTP/2 on each, and which addresses may connect.
//! - [`tls`]: TLS termination: certificates by SNI, replaced on reload.
//! - [`auth`]: API keys, and the pools and models each may use.
//! - [`limits`]: rate and concurrency limits per address, key and pool,
//!   counted here or in Redis.
//! - [`forwarding`]: who a request is from: its id, its client's address
//!   behind trusted proxies, and the `X-Forwarded-*` headers.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation.
//! - [`access_log`]: a JSON line per request, written off the request path.
//! - [`errors`]: the answers Switchyard gives itself, as OpenAI-style JSON.
//! - [`metrics`]: what Switchyard counts, passed in by `Arc`, and its
//!   Prometheus registry.
//! - [`admin`]: the admin listener: `/metrics` and `/status`, behind a
//!   bearer token.
//! - [`lifecycle`]: SIGHUP reload, drain on shutdown, binary upgrade.
//! - [`logging`]: the process log, with Pingora's known noise lowered.
//! - [`server`]: assembles the Pingora server and its services.
//! - [`demo`]: `--demo`, a mock fleet behind the proxy in one process.
//! - [`mock`]: a mock OpenAI/Ollama backend for the demo, tests and benchmarks.
//! - [`cli`]: the command line.
//!
//! Public are only the modules the binaries, tests and benchmarks use
//! (`cli`, `config`, `server`, `demo`, `mock`, `lifecycle`, `logging`,
//! `auth` and `limits` for the key commands and the config model, and the pool,
//! model scanner, metrics and access log the micro-benchmarks time); the
//! rest is the crate's own.

pub mod access_log;
pub(crate) mod admin;
pub mod auth;
pub(crate) mod background;
pub mod balance;
pub mod cli;
pub mod config;
pub mod demo;
pub(crate) mod edge;
pub(crate) mod errors;
pub(crate) mod forwarding;
pub(crate) mod health;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mock;
pub mod models;
pub(crate) mod proxy;
pub(crate) mod routing;
pub mod server;
pub(crate) mod state;
pub(crate) mod tls;
