//! Every configuration error names its key path and the bad value.
//!
//! The general behaviour is here; each concern has its own file.

mod access_log;
mod admin;
mod backends;
mod bounds;
mod duplicates;
mod mistyped;
mod routes;
mod server;
mod tls;
mod upstream;

use super::*;

const GOOD: &str = r#"
server:
  listen: ["127.0.0.1:8080"]
  threads: 2
pools:
  chat:
    strategy: consistent_hash
    hash_key: "header:x-user-id"
    retries: 2
    timeouts: { connect: 2s, first_byte: 300s, idle: 60s }
    health_check:
      type: http
      path: /
      interval: 5s
      timeout: 2s
      healthy_threshold: 2
      unhealthy_threshold: 3
    backends:
      - { name: gpu-1, url: "http://10.0.0.1:11434", weight: 5 }
      - { name: gpu-2, url: "http://10.0.0.2:11434" }
  ollama:
    backends:
      - { url: "http://127.0.0.1:11434" }
routes:
  - { path_prefix: /api, pool: ollama }
  - { header: { name: x-model, regex: "^deepseek" }, pool: chat }
  - { pool: chat }
"#;

/// Every error `yaml` gets, rendered as `switchyard -t` prints them.
fn errors(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

/// `yaml` is rejected, with `expected` among its errors.
fn assert_error(yaml: &str, expected: &str) {
    let all = errors(yaml);
    assert!(
        all.iter().any(|e| e == expected),
        "wanted {expected:?} in {all:#?}"
    );
}

#[test]
fn the_documented_example_is_valid() {
    let c = Config::from_yaml(GOOD).unwrap();
    assert_eq!(c.server.threads, 2);
    let chat = c.pool("chat").unwrap();
    assert_eq!(
        chat.strategy,
        Strategy::ConsistentHash(HashKey::Header("x-user-id".into()))
    );
    assert_eq!(chat.backends[0].weight, 5);
    assert_eq!(chat.backends[1].weight, 1);
    assert_eq!(
        chat.timeouts.first_byte,
        std::time::Duration::from_secs(300)
    );
    let ollama = c.pool("ollama").unwrap();
    assert_eq!(ollama.strategy, Strategy::RoundRobin);
    assert_eq!(ollama.retries, 2);
    assert_eq!(ollama.health.kind, HealthKind::Tcp);
    assert_eq!(ollama.backends[0].name, "127.0.0.1:11434");
    assert_eq!(c.routes.len(), 3);
}

#[test]
fn unknown_keys_are_all_reported_with_their_path() {
    let yaml = GOOD
        .replace("threads: 2", "threads: 2\n  thread: 3")
        .replace("weight: 5 }", "wieght: 5 }");
    let all = errors(&yaml);
    assert!(
        all.contains(&"server.thread: unknown key".to_string()),
        "{all:?}"
    );
    assert!(
        all.contains(&"pools.chat.backends[0].wieght: unknown key".to_string()),
        "{all:?}"
    );
}

#[test]
fn bad_url() {
    assert_error(
        &GOOD.replace("http://10.0.0.2:11434", "htp://x"),
        r#"pools.chat.backends[1].url: "htp://x" is not an http or https URL"#,
    );
    assert_error(
        &GOOD.replace("http://10.0.0.2:11434", "http://10.0.0.2:11434/v1?x=1"),
        r#"pools.chat.backends[1].url: "http://10.0.0.2:11434/v1?x=1" is not an http or https URL (a backend URL has no query)"#,
    );
}

#[test]
fn duplicate_backend_url() {
    assert_error(
        &GOOD.replace("http://10.0.0.2:11434", "http://10.0.0.1:11434"),
        r#"pools.chat.backends[1].url: "http://10.0.0.1:11434" is the same backend as pools.chat.backends[0] (both reach 10.0.0.1:11434; a backend is known by its address)"#,
    );
}

#[test]
fn route_to_missing_pool() {
    assert_error(
        &GOOD.replace("pool: ollama }", "pool: olama }"),
        r#"routes[0].pool: "olama" is not a pool defined under pools"#,
    );
}

#[test]
fn hash_key_without_consistent_hash() {
    assert_error(
        &GOOD.replace("strategy: consistent_hash", "strategy: round_robin"),
        r#"pools.chat.hash_key: "header:x-user-id" is only used by strategy consistent_hash, not round_robin"#,
    );
    assert_error(
        &GOOD.replace("    hash_key: \"header:x-user-id\"\n", ""),
        "pools.chat.hash_key: is required with strategy consistent_hash (header:NAME, cookie:NAME, client_ip, path or model)",
    );
    assert_error(
        &GOOD.replace("header:x-user-id", "ip"),
        r#"pools.chat.hash_key: "ip" is not one of header:NAME, cookie:NAME, client_ip, path, model"#,
    );
}

#[test]
fn zero_weights_everywhere() {
    let yaml = GOOD.replace("weight: 5 }", "weight: 0 }").replace(
        "url: \"http://10.0.0.2:11434\" }",
        "url: \"http://10.0.0.2:11434\", weight: 0 }",
    );
    assert_error(
        &yaml,
        "pools.chat.backends: every weight is 0: the pool could serve nothing",
    );
}

#[test]
fn bad_values_name_path_and_value() {
    assert_error(
        &GOOD.replace("connect: 2s", "connect: 2"),
        r#"pools.chat.timeouts.connect: "2" is not a duration (use a unit: 500ms, 2s, 5m)"#,
    );
    assert_error(
        &GOOD.replace("interval: 5s", "interval: 0s"),
        r#"pools.chat.health_check.interval: "0s" is less than the minimum 100ms"#,
    );
    assert_error(
        &GOOD.replace("strategy: consistent_hash", "strategy: fastest"),
        r#"pools.chat.strategy: "fastest" is not one of round_robin, random, consistent_hash, least_connections, priority"#,
    );
    assert_error(
        &GOOD.replace("type: http", "type: grpc"),
        r#"pools.chat.health_check.type: "grpc" is not one of http, tcp, none"#,
    );
    assert_error(
        &GOOD.replace("127.0.0.1:8080", "localhost"),
        r#"server.listen[0]: "localhost" is not an IP:port address"#,
    );
    assert_error(
        &GOOD.replace("threads: 2", "threads: 0"),
        "server.threads: 0 is less than the minimum 1",
    );
    assert_error(
        &GOOD.replace("regex: \"^deepseek\"", "regex: \"(\""),
        r#"routes[1].header.regex: "(" is not a regex: error: unclosed group"#,
    );
    assert_error(
        &GOOD.replace("weight: 5", "weight: 5000"),
        "pools.chat.backends[0].weight: 5000 is more than the maximum 1000",
    );
}

#[test]
fn every_error_is_listed_not_only_the_first() {
    let yaml = GOOD
        .replace("connect: 2s", "connect: soon")
        .replace("http://10.0.0.2:11434", "htp://x")
        .replace("pool: ollama }", "pool: nope }");
    assert_eq!(errors(&yaml).len(), 3, "{:#?}", errors(&yaml));
}

#[test]
fn type_errors_name_the_key() {
    assert_eq!(
        errors(&GOOD.replace("threads: 2", "threads: two")),
        vec!["server.threads: must be a whole number from 1 to 1024, not \"two\" (line 4)"]
    );
}

#[test]
fn broken_yaml_is_an_error_not_a_panic() {
    for text in [
        "pools: [",
        "\t- x",
        "pools:\n  a: 3",
        "routes: {}",
        "--- !!binary x",
        "pools: ~",
        "",
    ] {
        assert!(
            Config::from_yaml(text).is_err(),
            "{text:?} should be rejected"
        );
    }
}

#[test]
fn routes_are_required_with_several_pools_and_optional_with_one() {
    let one = "pools:\n  a:\n    backends: [{ url: \"http://127.0.0.1:1\" }]\n";
    assert_eq!(Config::from_yaml(one).unwrap().routes[0].pool, "a");
    let two = format!("{one}  b:\n    backends: [{{ url: \"http://127.0.0.1:2\" }}]\n");
    assert_error(&two, "routes: is required when there is more than one pool");
}
