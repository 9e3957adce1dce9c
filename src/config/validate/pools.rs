//! `pools.NAME`: strategy, retries, timeouts, health check, circuit and
//! queue. Its backends are [`super::backends`].

use super::{backends, headers, Errors};
use crate::config::model::*;
use crate::config::raw::{RawHealthCheck, RawPool};
use crate::config::tls::SystemRoots;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Two more backends after a failed connect: enough to get past one or two
/// that are restarting, few enough that a dead pool answers quickly.
pub const DEFAULT_RETRIES: usize = 2;

/// More retries only delay the error a client is going to get anyway.
pub const RETRIES: RangeInclusive<usize> = 0..=16;

/// A backend on the same network connects in a millisecond; 2s is a lost
/// SYN retransmitted once, and no longer than a client should wait before
/// the next backend is tried.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Under 10ms a loaded machine's scheduling delays fail good connects. The
/// kernel gives up on its own after about 2 minutes of SYN retries, so more
/// than 5 minutes is a typo.
pub const CONNECT_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(300);

/// A large model can take minutes to load and read a long prompt before its
/// first token.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(300);

/// No inference server answers in under 100ms, so a smaller value only
/// fails every request; an hour is no timeout at all.
pub const FIRST_BYTE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// A generating server sends a token every few tens of milliseconds; a
/// minute of silence is a stuck one.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Under 100ms a healthy stream's pause (a batch step, a GC) would cut it;
/// an hour is no timeout at all.
pub const IDLE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// A dead backend is noticed within about 15s (three checks), at one cheap
/// request per backend every 5s.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Under 100ms the checks are load on the backends. Over an hour a dead
/// backend goes unnoticed for hours; the health service also adds the
/// interval to the clock, which must not overflow.
pub const HEALTH_INTERVAL: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// A health endpoint answers in milliseconds even under load; 2s without an
/// answer is a backend that cannot take requests either.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Under 10ms a loaded machine fails good checks; a check that needs more
/// than 5 minutes is not a health check.
pub const HEALTH_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(300);

/// Two passing checks, so a backend that flaps is not sent traffic on one
/// lucky answer.
pub const DEFAULT_HEALTHY_THRESHOLD: usize = 2;

/// Three failing checks, so one lost packet does not take a backend out.
pub const DEFAULT_UNHEALTHY_THRESHOLD: usize = 3;

/// Checks in a row that change a backend's state. 100 at the default
/// interval is over 8 minutes; more only means a dead backend keeps its
/// traffic.
pub const HEALTH_THRESHOLD: RangeInclusive<usize> = 1..=100;

/// Failures in a row that open a circuit (default: [`CircuitSpec`]). A
/// thousand failed requests is far past the point of taking a backend out.
pub const CONSECUTIVE_FAILURES: RangeInclusive<usize> = 1..=1000;

/// How long a circuit first stays open (default: [`CircuitSpec`]). Under
/// 100ms a failing backend is probed as fast as requests come; over an hour
/// a recovered backend stays unused.
pub const CIRCUIT_COOLDOWN: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// The ceiling of the doubling cooldown and of a backend's `Retry-After`
/// (default: [`CircuitSpec`]). A day at most: a backend is retried at least
/// daily, and the circuit adds this to the clock, which must not overflow.
pub const CIRCUIT_MAX_COOLDOWN: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(24 * 3600);

/// Requests that may wait for a backend (default: [`QueueSpec`]). Each
/// waiting request holds its client connection and body; 100,000 is
/// already more than any fleet drains within a queue timeout.
pub const QUEUE_MAX: RangeInclusive<usize> = 0..=100_000;

/// The longest wait in a pool's queue (default: [`QueueSpec`]). Under 10ms
/// is no wait at all (`queue.max: 0` says that plainly); an hour is longer
/// than any client waits.
pub const QUEUE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(3600);

/// What `health_check.expect_status` may be: the codes HTTP defines.
pub const HTTP_STATUS: RangeInclusive<u16> = 100..=599;

pub(super) fn pool(
    errors: &mut Errors,
    name: String,
    raw: RawPool,
    listen: &[SocketAddr],
    roots: &mut SystemRoots,
) -> PoolSpec {
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
    let retries = errors.count(
        &format!("{at}.retries"),
        raw.retries,
        DEFAULT_RETRIES,
        &RETRIES,
    );
    let t = raw.timeouts.unwrap_or_default();
    let timeouts = Timeouts {
        connect: errors.duration(
            &format!("{at}.timeouts.connect"),
            t.connect.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
            &CONNECT_TIMEOUT,
        ),
        first_byte: errors.duration(
            &format!("{at}.timeouts.first_byte"),
            t.first_byte.as_ref(),
            DEFAULT_FIRST_BYTE_TIMEOUT,
            &FIRST_BYTE_TIMEOUT,
        ),
        idle: errors.duration(
            &format!("{at}.timeouts.idle"),
            t.idle.as_ref(),
            DEFAULT_IDLE_TIMEOUT,
            &IDLE_TIMEOUT,
        ),
    };
    let circuit = {
        let c = raw.circuit.unwrap_or_default();
        let d = CircuitSpec::default();
        let spec = CircuitSpec {
            consecutive_failures: errors.count(
                &format!("{at}.circuit.consecutive_failures"),
                c.consecutive_failures,
                d.consecutive_failures,
                &CONSECUTIVE_FAILURES,
            ),
            cooldown: errors.duration(
                &format!("{at}.circuit.cooldown"),
                c.cooldown.as_ref(),
                d.cooldown,
                &CIRCUIT_COOLDOWN,
            ),
            max_cooldown: errors.duration(
                &format!("{at}.circuit.max_cooldown"),
                c.max_cooldown.as_ref(),
                d.max_cooldown,
                &CIRCUIT_MAX_COOLDOWN,
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
            max: errors.count(&format!("{at}.queue.max"), q.max, d.max, &QUEUE_MAX),
            timeout: errors.duration(
                &format!("{at}.queue.timeout"),
                q.timeout.as_ref(),
                d.timeout,
                &QUEUE_TIMEOUT,
            ),
        }
    };
    let health = health(errors, &at, raw.health_check.unwrap_or_default());
    let host_header = match raw.host_header.as_deref() {
        None => None,
        Some("backend") => Some(HostHeader::Backend),
        Some("client") => Some(HostHeader::Client),
        Some(other) => {
            errors.push(
                format!("{at}.host_header"),
                format!("{other:?} is not one of backend, client"),
            );
            None
        }
    };
    let pool_headers = headers::headers(errors, &format!("{at}.headers"), raw.headers);
    let defaults = backends::PoolDefaults {
        headers: &pool_headers,
        host_header,
    };
    let backends = backends::backends(
        errors,
        &at,
        raw.backends.unwrap_or_default(),
        listen,
        &defaults,
        roots,
    );
    if matches!(strategy, Strategy::ConsistentHash(_)) {
        backends::ring_limit(errors, &at, &backends);
    }
    PoolSpec {
        name,
        strategy,
        retries,
        timeouts,
        health,
        backends,
        circuit,
        queue,
        limits: super::limits::set(errors, &format!("{at}.limits"), raw.limits),
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
    errors.mistyped(&format!("{at}.expect_status"), || {
        let (min, max) = (HTTP_STATUS.start(), HTTP_STATUS.end());
        format!("an HTTP status from {min} to {max}")
    });
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
                if !HTTP_STATUS.contains(&code) {
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
            DEFAULT_HEALTH_INTERVAL,
            &HEALTH_INTERVAL,
        ),
        timeout: errors.duration(
            &format!("{at}.timeout"),
            raw.timeout.as_ref(),
            DEFAULT_HEALTH_TIMEOUT,
            &HEALTH_TIMEOUT,
        ),
        healthy_threshold: errors.count(
            &format!("{at}.healthy_threshold"),
            raw.healthy_threshold,
            DEFAULT_HEALTHY_THRESHOLD,
            &HEALTH_THRESHOLD,
        ),
        unhealthy_threshold: errors.count(
            &format!("{at}.unhealthy_threshold"),
            raw.unhealthy_threshold,
            DEFAULT_UNHEALTHY_THRESHOLD,
            &HEALTH_THRESHOLD,
        ),
    }
}
