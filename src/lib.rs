//! Switchyard: a load balancer and edge proxy for fleets of LLM inference
//! servers (Ollama, vLLM, llama.cpp server, any OpenAI-compatible API),
//! built on Cloudflare Pingora.
//!
//! # Layout
//! - [`config`]: the YAML file, its validation and the checked model.
//! - [`state`]: the immutable routing snapshot and its atomic replacement.
//! - [`route`]: which pool serves a request.
//! - [`pool`]: which backend of a pool serves it (Pingora's selectors).
//! - [`health`]: active health checks and the state they drive.
//! - [`least_conn`]: the `least_connections` selector and in-flight counts.
//! - [`circuit`]: passive health, a circuit breaker per backend.
//! - [`admission`]: per-backend caps and the pool's FIFO queue.
//! - [`models`]: which backend serves which model; the request's model.
//! - [`request_body`]: reading a body whole to route on its model.
//! - [`replay`]: forwarding a body read before the backend was chosen.
//! - [`edge`]: client connections: their count, header and keep-alive limits.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation.
//! - [`watchdog`]: the first-byte and idle timeouts of a response.
//! - [`error_response`]: OpenAI-style JSON errors.
//! - [`metrics`]: the counters Switchyard keeps, passed in by `Arc`.
//! - [`reload`]: SIGHUP re-reads the configuration.
//! - [`drain`]: shutdown that ends with the last request in flight.
//! - [`signals`]: QUIT, TERM, INT and USR2 (upgrade from inside the service).
//! - [`server`]: assembles the Pingora server and its services.
//! - [`demo`]: `--demo`, a mock fleet behind the proxy in one process.
//! - [`mock`]: a mock OpenAI/Ollama backend for the demo, tests and benchmarks.
//! - [`cli`]: the command line.

pub mod admission;
pub mod circuit;
pub mod cli;
pub mod config;
pub mod demo;
pub mod drain;
pub mod edge;
pub mod error_response;
pub mod health;
pub mod least_conn;
pub mod metrics;
pub mod mock;
pub mod models;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod replay;
pub mod request_body;
pub mod route;
pub mod server;
pub mod signals;
pub mod state;
pub mod watchdog;
