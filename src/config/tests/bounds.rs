//! Every duration, count and size has a range, and its error says the bound.

use super::*;
use serde_yaml::Value;

/// The smallest valid file; tests set one key in it.
const BASE: &str = "pools:\n  chat:\n    backends:\n      - { url: \"http://127.0.0.1:9001\" }\n";

/// `BASE` with the key at `path` (`pools.chat.backends[0].weight`) set to
/// `value`, read as YAML (so `3` is a number, `2s` a string).
pub(super) fn set(path: &str, value: &str) -> String {
    set_in(BASE, path, value)
}

/// [`set`] on another file.
pub(super) fn set_in(yaml: &str, path: &str, value: &str) -> String {
    let mut doc: Value = serde_yaml::from_str(yaml).unwrap();
    let mut at = &mut doc;
    for segment in path.split('.') {
        let (key, index) = match segment.split_once('[') {
            Some((key, i)) => (key, Some(i.trim_end_matches(']').parse::<usize>().unwrap())),
            None => (segment, None),
        };
        if at.is_null() {
            *at = Value::Mapping(Default::default());
        }
        at = &mut at[key];
        if let Some(i) = index {
            at = &mut at[i];
        }
    }
    *at = serde_yaml::from_str(value).unwrap();
    serde_yaml::to_string(&doc).unwrap()
}

/// A value out of range, and the bound as its error writes it.
type Breach = (&'static str, &'static str);

/// Each key: a value below its minimum (`None` where zero is allowed) and
/// one above its maximum.
const DURATIONS: &[(&str, Option<Breach>, Breach)] = &[
    ("server.grace_period", None, ("61m", "1h")),
    (
        "server.graceful_shutdown_timeout",
        Some(("500ms", "1s")),
        ("6m", "5m"),
    ),
    (
        "server.timeouts.client_header",
        Some(("999ms", "1s")),
        ("2h", "1h"),
    ),
    (
        "server.timeouts.client_body",
        Some(("0s", "1s")),
        ("2h", "1h"),
    ),
    (
        "server.timeouts.client_send",
        Some(("1ms", "1s")),
        ("2h", "1h"),
    ),
    ("server.timeouts.keepalive", None, ("2h", "1h")),
    (
        "pools.chat.timeouts.connect",
        Some(("1ms", "10ms")),
        ("6m", "5m"),
    ),
    (
        "pools.chat.timeouts.first_byte",
        Some(("1us", "100ms")),
        ("2h", "1h"),
    ),
    (
        "pools.chat.timeouts.idle",
        Some(("50ms", "100ms")),
        ("2h", "1h"),
    ),
    (
        "pools.chat.health_check.interval",
        Some(("50ms", "100ms")),
        ("500000000000y", "1h"),
    ),
    (
        "pools.chat.health_check.timeout",
        Some(("5ms", "10ms")),
        ("6m", "5m"),
    ),
    (
        "pools.chat.circuit.cooldown",
        Some(("10ms", "100ms")),
        ("2h", "1h"),
    ),
    (
        "pools.chat.circuit.max_cooldown",
        Some(("10ms", "100ms")),
        ("25h", "1day"),
    ),
    (
        "pools.chat.queue.timeout",
        Some(("1ms", "10ms")),
        ("2h", "1h"),
    ),
    (
        "models.refresh",
        Some(("100ms", "250ms")),
        ("2days", "1day"),
    ),
];

#[test]
fn every_duration_has_a_range_named_in_its_error() {
    for &(path, min, (above, max)) in DURATIONS {
        assert_error(
            &set(path, above),
            &format!("{path}: {above:?} is more than the maximum {max}"),
        );
        let mut ok = vec![max];
        if let Some((below, min)) = min {
            assert_error(
                &set(path, below),
                &format!("{path}: {below:?} is less than the minimum {min}"),
            );
            ok.push(min);
        }
        // The bounds themselves are valid. The circuit's max_cooldown must
        // also be at least its cooldown: test each against the other's
        // extreme.
        let base = match path {
            "pools.chat.circuit.cooldown" => set("pools.chat.circuit.max_cooldown", "1day"),
            "pools.chat.circuit.max_cooldown" => set("pools.chat.circuit.cooldown", "100ms"),
            _ => BASE.to_string(),
        };
        for value in ok {
            let yaml = set_in(&base, path, value);
            assert!(Config::from_yaml(&yaml).is_ok(), "{path}: {value}");
        }
    }
}

#[test]
fn a_duration_too_large_to_represent_is_above_the_maximum() {
    let path = "pools.chat.health_check.interval";
    assert_error(
        &set(path, "900000000000y"),
        &format!("{path}: \"900000000000y\" is more than the maximum 1h"),
    );
}

#[test]
fn zero_is_allowed_only_where_it_means_something() {
    let c = Config::from_yaml(&set("server.grace_period", "0s")).unwrap();
    assert!(c.server.grace_period.is_zero());
    let c = Config::from_yaml(&set("server.timeouts.keepalive", "0s")).unwrap();
    assert!(c.server.timeouts.keepalive.is_zero());
}

/// Each key: a value below its minimum or `None`, the minimum, a value
/// above the maximum, the maximum.
const COUNTS: &[(&str, Option<usize>, usize)] = &[
    ("server.threads", Some(1), 1024),
    ("server.upstream_keepalive_pool_size", None, 4096),
    ("server.max_connections", Some(1), 1_000_000),
    ("pools.chat.retries", None, 16),
    ("pools.chat.health_check.healthy_threshold", Some(1), 100),
    ("pools.chat.health_check.unhealthy_threshold", Some(1), 100),
    ("pools.chat.circuit.consecutive_failures", Some(1), 1000),
    ("pools.chat.queue.max", None, 100_000),
    ("pools.chat.backends[0].weight", None, 1000),
];

#[test]
fn every_count_has_a_range_named_in_its_error() {
    for &(path, min, max) in COUNTS {
        let above = max + 1;
        assert_error(
            &set(path, &above.to_string()),
            &format!("{path}: {above} is more than the maximum {max}"),
        );
        assert!(Config::from_yaml(&set(path, &max.to_string())).is_ok());
        match min {
            Some(min) => {
                let below = min - 1;
                assert_error(
                    &set(path, &below.to_string()),
                    &format!("{path}: {below} is less than the minimum {min}"),
                );
                assert!(Config::from_yaml(&set(path, &min.to_string())).is_ok());
            }
            // Weight 0 drains the only backend: valid alone, but not here.
            None if path.ends_with("weight") => {}
            None => assert!(Config::from_yaml(&set(path, "0")).is_ok(), "{path}: 0"),
        }
    }
}

#[test]
fn sizes_have_a_range_named_in_their_error() {
    let body = "server.max_request_body";
    assert_error(
        &set(body, "2GiB"),
        &format!("{body}: \"2GiB\" is more than the maximum 1GiB"),
    );
    assert_error(
        &set(body, "99999999999999999999999999999999999999999GiB"),
        &format!(
            "{body}: \"99999999999999999999999999999999999999999GiB\" is more than the maximum 1GiB"
        ),
    );
    assert_error(
        &set(body, "512"),
        &format!("{body}: \"512\" is less than the minimum 1KiB"),
    );
    assert_error(
        &set(body, "lots"),
        &format!("{body}: \"lots\" is not a size (use a unit: 512KiB, 32MiB)"),
    );
    let c = Config::from_yaml(&set(body, "1GiB")).unwrap();
    assert_eq!(c.server.max_request_body, 1 << 30);

    let header = "server.max_header_size";
    assert_error(
        &set(header, "2MiB"),
        &format!("{header}: \"2MiB\" is more than the maximum 1MiB"),
    );
    assert_error(
        &set(header, "1000"),
        &format!("{header}: \"1000\" is less than the minimum 1KiB"),
    );
    let c = Config::from_yaml(&set(header, "64KiB")).unwrap();
    assert_eq!(c.server.max_header_size, 64 << 10);
}
