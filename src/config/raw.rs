//! The configuration file's format: plain serde structs that mirror the YAML.
//!
//! Nothing here is checked beyond YAML types. Every field is optional so that
//! `validate` can name a missing key itself and apply the documented defaults
//! in one place. Unknown keys are not rejected by serde but collected by
//! `serde_ignored`, and values of the wrong type are taken out and collected
//! ([`super::mistyped`]), so that every one of them is reported, not only the
//! first; duplicate keys are found before these structs are filled
//! ([`super::duplicates`]).

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub server: Option<RawServer>,
    /// Pool name to pool. A `BTreeMap` keeps error messages and logs in a
    /// stable order.
    pub pools: Option<BTreeMap<String, RawPool>>,
    pub routes: Option<Vec<RawRoute>>,
    pub models: Option<RawModels>,
    pub admin: Option<RawAdmin>,
    pub access_log: Option<RawAccessLog>,
}

/// `admin:`: the admin listener (`/metrics`); off unless given.
#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<String>,
    /// The name of an environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// A file holding the bearer token.
    pub token_file: Option<String>,
}

/// `access_log:`: a line per request; off when the key is absent.
#[derive(Debug, Default, Deserialize)]
pub struct RawAccessLog {
    pub path: Option<String>,
    pub format: Option<String>,
}

/// `models:`: discovery, aliases and fallbacks, fleet-wide.
#[derive(Debug, Default, Deserialize)]
pub struct RawModels {
    pub refresh: Option<String>,
    pub aliases: Option<BTreeMap<String, String>>,
    pub fallbacks: Option<BTreeMap<String, Vec<String>>>,
}

/// `server:`: process-wide settings; most need a restart to change.
#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<Vec<String>>,
    pub threads: Option<usize>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub error_log: Option<String>,
    pub grace_period: Option<String>,
    pub graceful_shutdown_timeout: Option<String>,
    pub upstream_keepalive_pool_size: Option<usize>,
    pub max_request_body: Option<String>,
    pub work_stealing: Option<bool>,
    pub timeouts: Option<RawClientTimeouts>,
    pub max_header_size: Option<String>,
    pub max_connections: Option<usize>,
    pub expose_backend: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
}

/// `server.timeouts:`: how long to wait on clients.
#[derive(Debug, Default, Deserialize)]
pub struct RawClientTimeouts {
    pub client_header: Option<String>,
    pub client_body: Option<String>,
    pub client_send: Option<String>,
    pub keepalive: Option<String>,
}

/// `pools.NAME:`
#[derive(Debug, Default, Deserialize)]
pub struct RawPool {
    pub strategy: Option<String>,
    pub hash_key: Option<String>,
    pub retries: Option<usize>,
    pub timeouts: Option<RawTimeouts>,
    pub health_check: Option<RawHealthCheck>,
    pub backends: Option<Vec<RawBackend>>,
    pub circuit: Option<RawCircuit>,
    pub queue: Option<RawQueue>,
    /// `backend` or `client`: whose `Host` the backends get.
    pub host_header: Option<String>,
    /// Headers every backend of the pool gets, unless it sets its own.
    pub headers: Option<BTreeMap<String, RawHeaderValue>>,
}

/// A header value for backends: plain text, or read from the environment
/// or a file (the only forms a credential may take).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHeaderValue {
    Text(String),
    From(RawValueSource),
}

/// `{ env: VAR, prefix: "Bearer " }` or `{ file: PATH }`.
#[derive(Debug, Default, Deserialize)]
pub struct RawValueSource {
    pub env: Option<String>,
    pub file: Option<String>,
    pub prefix: Option<String>,
}

/// `pools.NAME.backends[i].tls:`
#[derive(Debug, Default, Deserialize)]
pub struct RawBackendTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub verify: Option<bool>,
}

/// `pools.NAME.circuit:`
#[derive(Debug, Default, Deserialize)]
pub struct RawCircuit {
    pub consecutive_failures: Option<usize>,
    pub cooldown: Option<String>,
    pub max_cooldown: Option<String>,
}

/// `pools.NAME.queue:`
#[derive(Debug, Default, Deserialize)]
pub struct RawQueue {
    pub max: Option<usize>,
    pub timeout: Option<String>,
}

/// `pools.NAME.timeouts:`
#[derive(Debug, Default, Deserialize)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub first_byte: Option<String>,
    pub idle: Option<String>,
}

/// `pools.NAME.health_check:`
#[derive(Debug, Default, Deserialize)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub path: Option<String>,
    pub expect_status: Option<u16>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<usize>,
    pub unhealthy_threshold: Option<usize>,
}

/// `pools.NAME.backends[i]:`
#[derive(Debug, Default, Deserialize)]
pub struct RawBackend {
    pub name: Option<String>,
    pub url: Option<String>,
    pub weight: Option<usize>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub models: Option<Vec<String>>,
    pub priority: Option<u32>,
    pub max_in_flight: Option<usize>,
    pub tls: Option<RawBackendTls>,
    pub headers: Option<BTreeMap<String, RawHeaderValue>>,
    pub model_map: Option<BTreeMap<String, String>>,
}

/// `routes[i]:`. A condition is `Some(None)` when its key is written with
/// no value (`header:` alone, or `~`), which must be an error rather than
/// no condition: a route whose only condition vanished is a catch-all that
/// shadows every route after it.
#[derive(Debug, Default, Deserialize)]
pub struct RawRoute {
    #[serde(default, deserialize_with = "present")]
    pub path_prefix: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub header: Option<Option<RawHeaderMatch>>,
    #[serde(default, deserialize_with = "present")]
    pub model: Option<Option<String>>,
    pub pool: Option<String>,
}

/// Tells a key written with a null value (`Some(None)`) from a missing one
/// (`None`, through `#[serde(default)]`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `routes[i].header:`
#[derive(Debug, Default, Deserialize)]
pub struct RawHeaderMatch {
    pub name: Option<String>,
    pub regex: Option<String>,
}
