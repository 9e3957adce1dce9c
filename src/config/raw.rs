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
    pub auth: Option<RawAuth>,
    pub limits: Option<RawLimits>,
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

/// `auth:`: API keys; off (every request let in) when absent.
#[derive(Debug, Default, Deserialize)]
pub struct RawAuth {
    pub keys: Option<Vec<RawKey>>,
    pub forward: Option<bool>,
}

/// `auth.keys[i]`: a name, and the key as exactly one of `sha256`, `env`
/// or `file`.
#[derive(Debug, Default, Deserialize)]
pub struct RawKey {
    pub name: Option<String>,
    pub sha256: Option<String>,
    pub env: Option<String>,
    pub file: Option<String>,
    /// Only to refuse it by name: a key in plain text in the file.
    pub key: Option<serde::de::IgnoredAny>,
    pub pools: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
    pub limits: Option<RawLimitSet>,
}

/// `limits:`: the defaults per client address and per key, and where the
/// counts are kept.
#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub per_address: Option<RawLimitSet>,
    pub per_key: Option<RawLimitSet>,
    pub store: Option<RawStore>,
}

/// `limits.store:`
#[derive(Debug, Default, Deserialize)]
pub struct RawStore {
    pub redis: Option<String>,
    pub timeout: Option<String>,
    pub on_store_error: Option<String>,
}

/// The limits of one scope: `limits.per_address`, `limits.per_key`,
/// `auth.keys[i].limits`, `pools.NAME.limits`.
#[derive(Debug, Default, Deserialize)]
pub struct RawLimitSet {
    pub requests: Option<RawRequestRate>,
    pub tokens: Option<RawTokenRate>,
    pub concurrent: Option<usize>,
}

/// `requests: { per, limit, burst }`.
#[derive(Debug, Default, Deserialize)]
pub struct RawRequestRate {
    pub per: Option<String>,
    pub limit: Option<usize>,
    pub burst: Option<usize>,
}

/// `tokens: { per, limit }`.
#[derive(Debug, Default, Deserialize)]
pub struct RawTokenRate {
    pub per: Option<String>,
    pub limit: Option<usize>,
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
    pub listen: Option<Vec<RawListen>>,
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
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// `server.listen[i]`: `"ADDR"`, or `{ addr: "ADDR", tls: {...} }` for a
/// listener that terminates TLS.
#[derive(Debug)]
pub enum RawListen {
    Addr(String),
    Listener(RawListener),
}

/// `server.listen[i]` written as a mapping.
#[derive(Debug, Default, Deserialize)]
pub struct RawListener {
    pub addr: Option<String>,
    pub tls: Option<RawTls>,
}

/// `server.listen[i].tls`: one certificate (`cert` and `key`) or several
/// chosen by SNI (`certs`), not both.
#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub certs: Option<Vec<RawCertPair>>,
}

/// `server.listen[i].tls.certs[j]`
#[derive(Debug, Default, Deserialize)]
pub struct RawCertPair {
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl<'de> Deserialize<'de> for RawListen {
    /// A string or a mapping. The mapping is read by [`RawListener`]'s own
    /// `Deserialize` over the same map access, so its unknown keys and
    /// values of the wrong type are found with their paths like any other.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawListen;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                // "a string" first: the mistyped values reader takes an
                // item of the list for a string that is not one.
                f.write_str("a string or a mapping with addr and tls")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawListen, E> {
                Ok(RawListen::Addr(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawListen, A::Error> {
                let de = serde::de::value::MapAccessDeserializer::new(map);
                RawListener::deserialize(de).map(RawListen::Listener)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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
    pub limits: Option<RawLimitSet>,
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
