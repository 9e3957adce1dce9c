//! A value of the wrong YAML type is one more error in the list: named by
//! its key path and line, worded for the person who wrote the file, and
//! not also reported as missing.

use super::bounds::set_in;
use super::*;

/// A valid file with every list and mapping of the format present, so that
/// any key can be set in it.
const FULL: &str = r#"
server:
  listen: ["127.0.0.1:8080"]
pools:
  chat:
    backends:
      - { url: "http://127.0.0.1:9001", models: [m] }
routes:
  - { header: { name: x-model, regex: "^" }, pool: chat }
models:
  aliases: { a: m }
  fallbacks: { a: [m] }
"#;

/// Every key of the format, nested ones at their first index.
const KEYS: &[&str] = &[
    "server",
    "server.listen",
    "server.listen[0]",
    "server.threads",
    "server.pid_file",
    "server.upgrade_sock",
    "server.error_log",
    "server.grace_period",
    "server.graceful_shutdown_timeout",
    "server.upstream_keepalive_pool_size",
    "server.max_request_body",
    "server.work_stealing",
    "server.timeouts",
    "server.timeouts.client_header",
    "server.timeouts.client_body",
    "server.timeouts.client_send",
    "server.timeouts.keepalive",
    "server.max_header_size",
    "server.max_connections",
    "pools",
    "pools.chat",
    "pools.chat.strategy",
    "pools.chat.hash_key",
    "pools.chat.retries",
    "pools.chat.timeouts",
    "pools.chat.timeouts.connect",
    "pools.chat.timeouts.first_byte",
    "pools.chat.timeouts.idle",
    "pools.chat.health_check",
    "pools.chat.health_check.type",
    "pools.chat.health_check.path",
    "pools.chat.health_check.expect_status",
    "pools.chat.health_check.interval",
    "pools.chat.health_check.timeout",
    "pools.chat.health_check.healthy_threshold",
    "pools.chat.health_check.unhealthy_threshold",
    "pools.chat.backends",
    "pools.chat.backends[0]",
    "pools.chat.backends[0].name",
    "pools.chat.backends[0].url",
    "pools.chat.backends[0].weight",
    "pools.chat.backends[0].type",
    "pools.chat.backends[0].models",
    "pools.chat.backends[0].models[0]",
    "pools.chat.backends[0].priority",
    "pools.chat.backends[0].max_in_flight",
    "pools.chat.circuit",
    "pools.chat.circuit.consecutive_failures",
    "pools.chat.circuit.cooldown",
    "pools.chat.circuit.max_cooldown",
    "pools.chat.queue",
    "pools.chat.queue.max",
    "pools.chat.queue.timeout",
    "routes",
    "routes[0]",
    "routes[0].path_prefix",
    "routes[0].header",
    "routes[0].header.name",
    "routes[0].header.regex",
    "routes[0].model",
    "routes[0].pool",
    "models",
    "models.refresh",
    "models.aliases",
    "models.aliases.a",
    "models.fallbacks",
    "models.fallbacks.a",
    "models.fallbacks.a[0]",
];

/// Values that are the wrong type for some key of the format.
const WRONG: &[&str] = &[
    "{ k: v }",
    "[a, b]",
    "\"yes please\"",
    "-1",
    "1.5",
    "true",
    "4294967296",
    "~",
];

/// Words of serde and Rust that mean nothing to the reader of the file.
const RUST_WORDS: &[&str] = &[
    "usize", "isize", "u8", "u16", "u32", "u64", "u128", "i8", "i16", "i32", "i64", "i128", "f64",
    "struct", "sequence", "map", "option", "enum", "String", "Vec", "BTreeMap", "expected",
];

fn speaks_rust(message: &str) -> bool {
    ["unit value", "invalid type", "invalid value"]
        .iter()
        .any(|phrase| message.contains(phrase))
        || message
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|word| RUST_WORDS.contains(&word) || word.starts_with("Raw"))
}

/// Whether `path` is `at` or a key inside it.
fn inside(path: &str, at: &str) -> bool {
    path.strip_prefix(at)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Every error of `yaml`, or none if it is valid.
fn all(yaml: &str) -> Vec<ConfigError> {
    Config::from_yaml(yaml).err().map_or_else(Vec::new, |e| e.0)
}

#[test]
fn a_wrong_weight_is_listed_with_every_other_error() {
    let yaml = r#"
server:
  listen: ["127.0.0.1:8080"]
  threads: many
  thread: 4
pools:
  gpu:
    timeouts: { connect: soon }
    health_check: { type: http, expect_status: "ok" }
    backends:
      - { url: "http://10.0.0.1:8000", weight: -1 }
      - { url: "htp://x" }
      - { url: "http://10.0.0.3:8000", max_in_flight: 0 }
routes:
  - { pool: gpu }
  - { pool: cpu }
models:
  aliases: { fast: [a, b] }
"#;
    assert_eq!(
        errors(yaml),
        vec![
            "server.thread: unknown key",
            r#"server.threads: must be a whole number from 1 to 1024, not "many" (line 4)"#,
            r#"pools.gpu.health_check.expect_status: must be an HTTP status from 100 to 599, not "ok" (line 9)"#,
            "pools.gpu.backends[0].weight: must be a whole number from 0 to 1000, not -1 (line 11)",
            "models.aliases.fast: must be a string, not a list (line 18)",
            r#"pools.gpu.timeouts.connect: "soon" is not a duration (use a unit: 500ms, 2s, 5m)"#,
            r#"pools.gpu.backends[1].url: "htp://x" is not an http or https URL"#,
            "pools.gpu.backends[2].max_in_flight: 0 must be at least 1",
            r#"routes[1].pool: "cpu" is not a pool defined under pools"#,
        ]
    );
}

#[test]
fn type_errors_in_nested_positions_say_what_the_key_takes() {
    for (path, value, message) in [
        // A string where a number is.
        (
            "pools.chat.circuit.consecutive_failures",
            "often",
            r#"must be a whole number from 1 to 1000, not "often""#,
        ),
        (
            "pools.chat.backends[0].priority",
            "high",
            r#"must be a whole number from 0 to 4294967295, not "high""#,
        ),
        // A number where a list is.
        (
            "server.listen",
            "8080",
            "must be a list of addresses such as [\"127.0.0.1:8080\"], or of listeners such as { addr: \"0.0.0.0:443\", tls: { cert: FILE, key: FILE } }, not 8080",
        ),
        (
            "pools.chat.backends[0].models",
            "7",
            "must be a list of strings, not 7",
        ),
        (
            "models.fallbacks.a",
            "3",
            "must be a list of strings, not 3",
        ),
        ("routes", "5", "must be a list, not 5"),
        // A mapping where a string is.
        (
            "pools.chat.backends[0].url",
            "{ host: x }",
            "must be a string, not a mapping",
        ),
        (
            "routes[0].header.regex",
            "{ any: x }",
            "must be a string, not a mapping",
        ),
        (
            "models.aliases.a",
            "{ to: b }",
            "must be a string, not a mapping",
        ),
        (
            "pools.chat.timeouts.idle",
            "{ s: 60 }",
            "must be a duration from 100ms to 1h, such as 1m, not a mapping",
        ),
        (
            "server.max_header_size",
            "[32KiB]",
            "must be a size from 1KiB to 1MiB, such as 32KiB, not a list",
        ),
        // A flag given words.
        (
            "server.work_stealing",
            "yes please",
            r#"must be true or false, not "yes please""#,
        ),
        // A scalar where a mapping is, at every depth.
        ("server", "on", r#"must be a mapping, not "on""#),
        ("server.timeouts", "30s", r#"must be a mapping, not "30s""#),
        ("pools.chat", "[a]", "must be a mapping, not a list"),
        ("pools.chat.queue", "10", "must be a mapping, not 10"),
        (
            "pools.chat.backends[0]",
            "\"http://127.0.0.1:9001\"",
            r#"must be a mapping, not "http://127.0.0.1:9001""#,
        ),
        (
            "routes[0].header",
            "x-model",
            r#"must be a mapping, not "x-model""#,
        ),
        ("models", "[]", "must be a mapping, not a list"),
        // An item of a list of strings that is not one.
        (
            "server.listen[0]",
            "[x]",
            "must be a list of addresses such as [\"127.0.0.1:8080\"], or of listeners such as { addr: \"0.0.0.0:443\", tls: { cert: FILE, key: FILE } }, but [0] is a list",
        ),
        (
            "models.fallbacks.a[0]",
            "[b]",
            "must be a list of strings, but [0] is a list",
        ),
    ] {
        let errors = all(&set_in(FULL, path, value));
        // The list's own path, for an item of a list of strings.
        let at = match path.strip_suffix("[0]") {
            Some(list) if message.contains("but [0]") => list,
            _ => path,
        };
        let found: Vec<&ConfigError> = errors.iter().filter(|e| e.path == at).collect();
        assert_eq!(found.len(), 1, "{path}: {value}: {errors:#?}");
        assert!(
            found[0].message.starts_with(&format!("{message} (line ")),
            "{path}: {value}: {found:#?}"
        );
    }
}

#[test]
fn no_message_speaks_rust_and_no_key_is_reported_twice() {
    for &path in KEYS {
        let mut told = false;
        for &value in WRONG {
            let errors = all(&set_in(FULL, path, value));
            for e in &errors {
                assert!(!speaks_rust(&e.message), "{path}: {value}: {e}");
            }
            // A key whose type is wrong says only that.
            let at = |e: &&ConfigError| e.message.starts_with("must be");
            for wrong in errors.iter().filter(at) {
                let about: Vec<_> = errors
                    .iter()
                    .filter(|e| inside(&e.path, &wrong.path))
                    .collect();
                assert_eq!(about.len(), 1, "{path}: {value}: {errors:#?}");
            }
            let list = path.strip_suffix("[0]").unwrap_or(path);
            told |= errors
                .iter()
                .filter(at)
                .any(|e| e.path == path || e.path == list);
        }
        assert!(told, "{path}: no value was the wrong type");
    }
}

#[test]
fn a_key_of_the_wrong_type_is_not_also_missing() {
    for (path, value, not) in [
        ("pools.chat.backends[0].url", "[x]", "is required"),
        (
            "pools.chat.backends",
            "5",
            "at least one backend is required",
        ),
        ("pools", "[chat]", "at least one pool is required"),
        ("routes[0].pool", "{ name: chat }", "is required"),
        ("routes[0].header.name", "[x]", "is required"),
        (
            "server.listen",
            "{ a: b }",
            "at least one address is required",
        ),
        ("models.fallbacks.a", "b", "lists no fallback model"),
    ] {
        let found = all(&set_in(FULL, path, value));
        assert!(
            found
                .iter()
                .any(|e| e.path == path && e.message.starts_with("must be")),
            "{path}: {found:#?}"
        );
        assert!(
            !found.iter().any(|e| e.message.contains(not)),
            "{path}: {found:#?}"
        );
    }
    // Nor are the routes to its pools.
    for (path, value) in [("pools", "[chat]"), ("pools.chat", "gpu")] {
        let found = all(&set_in(FULL, path, value));
        assert_eq!(found.len(), 1, "{path}: {found:#?}");
    }
}

#[test]
fn a_file_that_is_not_a_mapping_says_so() {
    assert_eq!(
        errors("[pools, routes]"),
        vec!["the file must be a mapping, not a list"]
    );
    assert_eq!(
        errors("just words"),
        vec![r#"the file must be a mapping, not "just words""#]
    );
}

#[test]
fn the_line_is_the_line_of_the_key_or_of_the_item() {
    let yaml = "server:\n  listen:\n    - 127.0.0.1:8080\n    - [x]\n  threads:\n    - 2\n\
                pools:\n  a:\n    backends:\n      - url: http://127.0.0.1:9001\n        \
                weight: heavy\n";
    assert_eq!(
        errors(yaml),
        vec![
            "server.listen: must be a list of addresses such as [\"127.0.0.1:8080\"], or of listeners such as { addr: \"0.0.0.0:443\", tls: { cert: FILE, key: FILE } }, but [1] is a list (line 4)",
            "server.threads: must be a whole number from 1 to 1024, not a list (line 5)",
            r#"pools.a.backends[0].weight: must be a whole number from 0 to 1000, not "heavy" (line 11)"#,
        ]
    );
}

#[test]
fn a_file_full_of_wrong_types_lists_the_first_hundred() {
    let backends: String = (0..150)
        .map(|i| {
            format!(
                "      - {{ url: \"http://127.0.0.1:{}\", weight: x }}\n",
                9000 + i
            )
        })
        .collect();
    let all = errors(&format!("pools:\n  a:\n    backends:\n{backends}"));
    assert_eq!(all.len(), 101);
    // The file is not read to its end, so not validated: each says what
    // the YAML type of its key is, without the range.
    assert_eq!(
        all[99],
        r#"pools.a.backends[99].weight: must be a whole number, not "x" (line 103)"#
    );
    assert_eq!(
        all[100],
        "more values of the wrong type; the first 100 are listed"
    );
}

#[test]
fn a_valid_file_reads_as_before() {
    // Plain scalars in string keys keep their text: only a rejected file is
    // read again from a copy.
    let yaml =
        "pools:\n  a:\n    backends:\n      - { url: \"http://127.0.0.1:9001\", name: 0x10 }\n";
    let c = Config::from_yaml(yaml).unwrap();
    assert_eq!(c.pools[0].backends[0].name, "0x10");
}

#[test]
fn a_number_beyond_64_bits_is_named_not_a_rust_type() {
    let yaml = "server:\n  threads: many\npools:\n  a:\n    backends:\n      \
                - { url: \"http://127.0.0.1:9001\", weight: 99999999999999999999999 }\n";
    assert_eq!(
        errors(yaml),
        vec!["pools.a.backends[0].weight: is a number too large for any key (line 6)"]
    );
}
