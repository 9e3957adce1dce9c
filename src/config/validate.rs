//! Turns the file format ([`super::raw`]) into the checked model ([`super::model`]).
//!
//! Validation never stops at the first problem: each check pushes an error
//! naming its key path and the offending value, and carries on with a
//! placeholder, so `switchyard -t` lists everything wrong with a file at once.

use super::model::*;
use super::raw::*;
use super::{ConfigError, ConfigErrors};
use regex::Regex;
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The largest backend weight. Weighted selectors expand weights into a
/// table, so an unbounded weight would be an unbounded allocation.
pub const MAX_WEIGHT: usize = 1000;

/// The most retries a pool may ask for; more only delays the error a client
/// is going to get anyway.
pub const MAX_RETRIES: usize = 16;

/// Collects errors while validating.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Parses a duration such as `500ms`, `2s` or `5m`; zero is refused.
    fn duration(&mut self, path: &str, value: Option<&String>, default: Duration) -> Duration {
        self.parse_duration(path, value, default, false)
    }

    fn parse_duration(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.push(path, format!("{text:?} must be longer than zero"));
                default
            }
            Ok(d) => d,
            Err(_) => {
                self.push(
                    path,
                    format!("{text:?} is not a duration (use a unit: 500ms, 2s, 5m)"),
                );
                default
            }
        }
    }

    /// A count that must be at least 1.
    fn positive(&mut self, path: &str, value: Option<usize>, default: usize) -> usize {
        match value {
            Some(0) => {
                self.push(path, "0 must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }
}

/// Validates a parsed file.
pub fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut errors = Errors::default();
    let server = server(&mut errors, raw.server.unwrap_or_default());

    let raw_pools = raw.pools.unwrap_or_default();
    if raw_pools.is_empty() {
        errors.push("pools", "at least one pool is required");
    }
    let pools: Vec<PoolSpec> = raw_pools
        .into_iter()
        .map(|(name, p)| pool(&mut errors, name, p))
        .collect();

    let raw_routes = raw.routes.unwrap_or_default();
    let routes = if raw_routes.is_empty() {
        default_routes(&mut errors, &pools)
    } else {
        raw_routes
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| route(&mut errors, i, r, &pools))
            .collect()
    };

    let models = models(&mut errors, raw.models.unwrap_or_default());

    if errors.0.is_empty() {
        Ok(Config {
            server,
            pools,
            routes,
            models,
        })
    } else {
        Err(ConfigErrors(errors.0))
    }
}

fn server(errors: &mut Errors, raw: RawServer) -> ServerSettings {
    let listen_raw = raw
        .listen
        .unwrap_or_else(|| vec!["127.0.0.1:8080".to_string()]);
    if listen_raw.is_empty() {
        errors.push("server.listen", "at least one address is required");
    }
    let mut seen = HashSet::new();
    let mut listen = Vec::new();
    for (i, text) in listen_raw.iter().enumerate() {
        let path = format!("server.listen[{i}]");
        match text.parse::<SocketAddr>() {
            Ok(addr) if !seen.insert(addr) => {
                errors.push(path, format!("{text:?} is listed twice"));
            }
            Ok(addr) => listen.push(addr),
            Err(_) => errors.push(path, format!("{text:?} is not an IP:port address")),
        }
    }
    let default_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = errors.positive("server.threads", raw.threads, default_threads);
    if threads > 1024 {
        errors.push("server.threads", format!("{threads} is more than 1024"));
    }
    ServerSettings {
        listen,
        threads,
        pid_file: raw
            .pid_file
            .unwrap_or_else(|| "/run/switchyard/switchyard.pid".into()),
        upgrade_sock: raw
            .upgrade_sock
            .unwrap_or_else(|| "/run/switchyard/upgrade.sock".into()),
        error_log: raw.error_log,
        grace_period: errors.parse_duration(
            "server.grace_period",
            raw.grace_period.as_ref(),
            Duration::from_secs(60),
            true,
        ),
        graceful_shutdown_timeout: errors.duration(
            "server.graceful_shutdown_timeout",
            raw.graceful_shutdown_timeout.as_ref(),
            Duration::from_secs(5),
        ),
        upstream_keepalive_pool_size: raw.upstream_keepalive_pool_size.unwrap_or(1024),
        work_stealing: raw.work_stealing.unwrap_or(false),
        max_request_body: match raw.max_request_body {
            None => 32 << 20,
            Some(text) => size(&text).unwrap_or_else(|| {
                errors.push(
                    "server.max_request_body",
                    format!("{text:?} is not a size (use a unit: 512KiB, 32MiB)"),
                );
                32 << 20
            }),
        },
    }
}

/// Parses `123`, `512KiB`, `32MiB`, `1GiB` (also KB/MB/GB, as 1000s).
fn size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number.parse().ok()?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale).filter(|&n| n > 0)
}

fn models(errors: &mut Errors, raw: RawModels) -> ModelsSpec {
    let aliases = raw.aliases.unwrap_or_default();
    for (alias, target) in &aliases {
        if target.is_empty() {
            errors.push(
                format!("models.aliases.{alias}"),
                "the target model is empty",
            );
        } else if aliases.contains_key(target) {
            errors.push(
                format!("models.aliases.{alias}"),
                format!("{target:?} is itself an alias; aliases are not chained"),
            );
        }
    }
    let fallbacks = raw.fallbacks.unwrap_or_default();
    for (model, list) in &fallbacks {
        if list.is_empty() {
            errors.push(
                format!("models.fallbacks.{model}"),
                "lists no fallback model",
            );
        }
        if list.contains(model) {
            errors.push(
                format!("models.fallbacks.{model}"),
                "lists the model itself",
            );
        }
    }
    ModelsSpec {
        refresh: errors.duration(
            "models.refresh",
            raw.refresh.as_ref(),
            Duration::from_secs(30),
        ),
        aliases,
        fallbacks,
    }
}

fn pool(errors: &mut Errors, name: String, raw: RawPool) -> PoolSpec {
    let at = format!("pools.{name}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        errors.push(
            &at,
            format!("pool name {name:?} may only use letters, digits, '-', '_' and '.'"),
        );
    }
    let strategy = strategy(
        errors,
        &at,
        raw.strategy.as_deref(),
        raw.hash_key.as_deref(),
    );
    let retries = raw.retries.unwrap_or(2);
    if retries > MAX_RETRIES {
        errors.push(
            format!("{at}.retries"),
            format!("{retries} is more than {MAX_RETRIES}"),
        );
    }
    let t = raw.timeouts.unwrap_or_default();
    let timeouts = Timeouts {
        connect: errors.duration(
            &format!("{at}.timeouts.connect"),
            t.connect.as_ref(),
            Duration::from_secs(2),
        ),
        first_byte: errors.duration(
            &format!("{at}.timeouts.first_byte"),
            t.first_byte.as_ref(),
            Duration::from_secs(300),
        ),
        idle: errors.duration(
            &format!("{at}.timeouts.idle"),
            t.idle.as_ref(),
            Duration::from_secs(60),
        ),
    };
    let circuit = {
        let c = raw.circuit.unwrap_or_default();
        let d = CircuitSpec::default();
        let spec = CircuitSpec {
            consecutive_failures: errors.positive(
                &format!("{at}.circuit.consecutive_failures"),
                c.consecutive_failures,
                d.consecutive_failures,
            ),
            cooldown: errors.duration(
                &format!("{at}.circuit.cooldown"),
                c.cooldown.as_ref(),
                d.cooldown,
            ),
            max_cooldown: errors.duration(
                &format!("{at}.circuit.max_cooldown"),
                c.max_cooldown.as_ref(),
                d.max_cooldown,
            ),
        };
        if spec.max_cooldown < spec.cooldown {
            errors.push(
                format!("{at}.circuit.max_cooldown"),
                "is shorter than cooldown",
            );
        }
        spec
    };
    let queue = {
        let q = raw.queue.unwrap_or_default();
        let d = QueueSpec::default();
        QueueSpec {
            max: q.max.unwrap_or(d.max),
            timeout: errors.duration(
                &format!("{at}.queue.timeout"),
                q.timeout.as_ref(),
                d.timeout,
            ),
        }
    };
    let health = health(errors, &at, raw.health_check.unwrap_or_default());
    let backends = backends(errors, &at, raw.backends.unwrap_or_default());
    PoolSpec {
        name,
        strategy,
        retries: retries.min(MAX_RETRIES),
        timeouts,
        health,
        backends,
        circuit,
        queue,
    }
}

fn strategy(errors: &mut Errors, at: &str, name: Option<&str>, key: Option<&str>) -> Strategy {
    let strategy = match name.unwrap_or("round_robin") {
        "round_robin" => Strategy::RoundRobin,
        "random" => Strategy::Random,
        "least_connections" => Strategy::LeastConnections,
        "priority" => Strategy::Priority,
        "consistent_hash" => {
            let Some(key) = key else {
                errors.push(
                    format!("{at}.hash_key"),
                    "is required with strategy consistent_hash \
                     (header:NAME, cookie:NAME, client_ip, path or model)",
                );
                return Strategy::ConsistentHash(HashKey::ClientIp);
            };
            return Strategy::ConsistentHash(hash_key(errors, at, key));
        }
        other => {
            errors.push(
                format!("{at}.strategy"),
                format!(
                    "{other:?} is not one of round_robin, random, consistent_hash, \
                     least_connections, priority"
                ),
            );
            Strategy::RoundRobin
        }
    };
    if let Some(key) = key {
        errors.push(
            format!("{at}.hash_key"),
            format!(
                "{key:?} is only used by strategy consistent_hash, not {}",
                strategy.name()
            ),
        );
    }
    strategy
}

fn hash_key(errors: &mut Errors, at: &str, key: &str) -> HashKey {
    let named = |prefix: &str| key.strip_prefix(prefix).filter(|n| !n.is_empty());
    if let Some(name) = named("header:") {
        if http::HeaderName::from_bytes(name.as_bytes()).is_ok() {
            return HashKey::Header(name.to_ascii_lowercase());
        }
    } else if let Some(name) = named("cookie:") {
        return HashKey::Cookie(name.to_string());
    } else if key == "client_ip" {
        return HashKey::ClientIp;
    } else if key == "path" {
        return HashKey::Path;
    } else if key == "model" {
        return HashKey::Model;
    }
    errors.push(
        format!("{at}.hash_key"),
        format!("{key:?} is not one of header:NAME, cookie:NAME, client_ip, path, model"),
    );
    HashKey::ClientIp
}

fn health(errors: &mut Errors, at: &str, raw: RawHealthCheck) -> HealthSpec {
    let at = format!("{at}.health_check");
    let kind = match raw.kind.as_deref().unwrap_or("tcp") {
        "tcp" => HealthKind::Tcp,
        "none" => HealthKind::None,
        "http" => {
            let path = raw.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || http::Uri::try_from(path.as_str()).is_err() {
                errors.push(
                    format!("{at}.path"),
                    format!("{path:?} is not a path starting with /"),
                );
            }
            if let Some(code) = raw.expect_status {
                if !(100..=599).contains(&code) {
                    errors.push(
                        format!("{at}.expect_status"),
                        format!("{code} is not an HTTP status"),
                    );
                }
            }
            HealthKind::Http {
                path,
                expect_status: raw.expect_status,
            }
        }
        other => {
            errors.push(
                format!("{at}.type"),
                format!("{other:?} is not one of http, tcp, none"),
            );
            HealthKind::None
        }
    };
    if !matches!(kind, HealthKind::Http { .. }) {
        if let Some(path) = &raw.path {
            errors.push(
                format!("{at}.path"),
                format!("{path:?} is only used by type http"),
            );
        }
        if let Some(code) = raw.expect_status {
            errors.push(
                format!("{at}.expect_status"),
                format!("{code} is only used by type http"),
            );
        }
    }
    HealthSpec {
        kind,
        interval: errors.duration(
            &format!("{at}.interval"),
            raw.interval.as_ref(),
            Duration::from_secs(5),
        ),
        timeout: errors.duration(
            &format!("{at}.timeout"),
            raw.timeout.as_ref(),
            Duration::from_secs(2),
        ),
        healthy_threshold: errors.positive(
            &format!("{at}.healthy_threshold"),
            raw.healthy_threshold,
            2,
        ),
        unhealthy_threshold: errors.positive(
            &format!("{at}.unhealthy_threshold"),
            raw.unhealthy_threshold,
            3,
        ),
    }
}

fn backends(errors: &mut Errors, at: &str, raw: Vec<RawBackend>) -> Vec<BackendSpec> {
    if raw.is_empty() {
        errors.push(format!("{at}.backends"), "at least one backend is required");
        return Vec::new();
    }
    let mut urls = BTreeMap::new();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let path = format!("{at}.backends[{i}]");
        let Some(url) = b.url else {
            errors.push(format!("{path}.url"), "is required");
            continue;
        };
        let Some((authority, addr)) = parse_url(errors, &format!("{path}.url"), &url) else {
            continue;
        };
        if let Some(first) = urls.insert(addr, i) {
            errors.push(
                format!("{path}.url"),
                format!("{url:?} is the same backend as {at}.backends[{first}]"),
            );
            continue;
        }
        let weight = b.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            errors.push(
                format!("{path}.weight"),
                format!("{weight} is more than {MAX_WEIGHT}"),
            );
        }
        let kind = match b.kind.as_deref() {
            None | Some("auto") => BackendKind::Auto,
            Some("openai") => BackendKind::OpenAi,
            Some("ollama") => BackendKind::Ollama,
            Some(other) => {
                errors.push(
                    format!("{path}.type"),
                    format!("{other:?} is not one of openai, ollama, auto"),
                );
                BackendKind::Auto
            }
        };
        if let Some(models) = &b.models {
            if models.iter().any(|m| m.trim().is_empty()) {
                errors.push(format!("{path}.models"), "a model name is empty");
            }
        }
        let name = b.name.unwrap_or(authority);
        if !names.insert(name.clone()) {
            errors.push(
                format!("{path}.name"),
                format!("{name:?} is used by another backend of the pool"),
            );
        }
        out.push(BackendSpec {
            name,
            url,
            addr,
            weight: weight.min(MAX_WEIGHT),
            kind,
            models: b.models,
            priority: b.priority.unwrap_or(0),
            max_in_flight: match b.max_in_flight {
                Some(0) => {
                    errors.push(format!("{path}.max_in_flight"), "0 must be at least 1");
                    None
                }
                other => other,
            },
        });
    }
    if !out.is_empty() && out.iter().all(|b| b.weight == 0) {
        errors.push(
            format!("{at}.backends"),
            "every weight is 0: the pool could serve nothing",
        );
    }
    out
}

/// Checks `http://host[:port][/]` and resolves it. Returns the authority and the address.
fn parse_url(errors: &mut Errors, path: &str, url: &str) -> Option<(String, SocketAddr)> {
    let not_http = |errors: &mut Errors, why: &str| {
        errors.push(path, format!("{url:?} is not an http URL{why}"));
        None
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return not_http(errors, "");
    };
    if uri.scheme_str() != Some("http") {
        return not_http(errors, " (only http:// backends are supported)");
    }
    let Some(authority) = uri.authority() else {
        return not_http(errors, "");
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return not_http(errors, " (a backend URL has no path)");
    }
    if authority.as_str().contains('@') {
        return not_http(errors, " (credentials are not supported)");
    }
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    match (host, port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => Some((authority.to_string(), addr)),
        _ => {
            errors.push(path, format!("{url:?}: host {host:?} does not resolve"));
            None
        }
    }
}

fn route(errors: &mut Errors, i: usize, raw: RawRoute, pools: &[PoolSpec]) -> Option<RouteSpec> {
    let at = format!("routes[{i}]");
    let pool = match raw.pool {
        Some(p) if pools.iter().any(|x| x.name == p) => p,
        Some(p) => {
            errors.push(
                format!("{at}.pool"),
                format!("{p:?} is not a pool defined under pools"),
            );
            return None;
        }
        None => {
            errors.push(format!("{at}.pool"), "is required");
            return None;
        }
    };
    if let Some(prefix) = &raw.path_prefix {
        if !prefix.starts_with('/') {
            errors.push(
                format!("{at}.path_prefix"),
                format!("{prefix:?} must start with /"),
            );
        }
    }
    let header = match raw.header {
        None => None,
        Some(h) => {
            let name = match h.name {
                Some(n) if http::HeaderName::from_bytes(n.as_bytes()).is_ok() => {
                    n.to_ascii_lowercase()
                }
                Some(n) => {
                    errors.push(
                        format!("{at}.header.name"),
                        format!("{n:?} is not a header name"),
                    );
                    return None;
                }
                None => {
                    errors.push(format!("{at}.header.name"), "is required");
                    return None;
                }
            };
            let text = h.regex.unwrap_or_default();
            match Regex::new(&text) {
                Ok(regex) => Some(HeaderMatch { name, regex }),
                Err(e) => {
                    let why = e.to_string().lines().last().unwrap_or_default().to_string();
                    errors.push(
                        format!("{at}.header.regex"),
                        format!("{text:?} is not a regex: {why}"),
                    );
                    return None;
                }
            }
        }
    };
    if let Some(glob) = &raw.model {
        if glob.is_empty() {
            errors.push(format!("{at}.model"), "the pattern is empty");
        }
    }
    Some(RouteSpec {
        path_prefix: raw.path_prefix,
        header,
        model: raw.model,
        pool,
    })
}

/// Without `routes`, a config with exactly one pool sends everything to it.
fn default_routes(errors: &mut Errors, pools: &[PoolSpec]) -> Vec<RouteSpec> {
    match pools {
        [only] => vec![RouteSpec {
            path_prefix: None,
            header: None,
            model: None,
            pool: only.name.clone(),
        }],
        [] => Vec::new(),
        _ => {
            errors.push("routes", "is required when there is more than one pool");
            Vec::new()
        }
    }
}
