//! What a pool, and the whole file, may cost to build; backends that are
//! Switchyard itself.

use super::*;

/// `n` backends from `first` on, one YAML line each, at `weight`.
fn backend_lines(first: usize, n: usize, weight: usize) -> String {
    (first..first + n)
        .map(|i| {
            format!(
                "      - {{ url: \"http://10.{}.{}.{}:8000\", weight: {weight} }}\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect()
}

/// Pools `p0`, `p1`... of `n` backends each, with a route to each.
fn pools(count: usize, n: usize, weight: usize, strategy: &str) -> String {
    let mut yaml = String::from("pools:\n");
    for p in 0..count {
        yaml += &format!("  p{p}:\n    strategy: {strategy}\n");
        if strategy == "consistent_hash" {
            yaml += "    hash_key: path\n";
        }
        yaml += &format!("    backends:\n{}", backend_lines(p * n, n, weight));
    }
    yaml += "routes:\n";
    for p in 0..count {
        yaml += &format!("  - {{ path_prefix: /p{p}, pool: p{p} }}\n");
    }
    yaml
}

#[test]
fn a_pool_has_at_most_1024_backends() {
    assert!(Config::from_yaml(&pools(1, 1024, 1, "round_robin")).is_ok());
    assert_error(
        &pools(1, 1025, 1, "round_robin"),
        "pools.p0.backends: 1025 backends is more than the maximum 1024 per pool",
    );
}

#[test]
fn the_file_has_at_most_4096_backends() {
    assert!(Config::from_yaml(&pools(4, 1024, 1, "round_robin")).is_ok());
    assert_error(
        &pools(5, 1000, 1, "round_robin"),
        "pools: 5000 backends in all is more than the maximum 4096",
    );
}

#[test]
fn a_ketama_ring_is_bounded_by_the_sum_of_its_weights() {
    // The reload that once aborted the process on a 12.8 GB allocation.
    assert_error(
        &pools(1, 10_000, 1000, "consistent_hash"),
        "pools.p0.backends: 10000 backends is more than the maximum 1024 per pool",
    );
    assert_error(
        &pools(1, 11, 1000, "consistent_hash"),
        "pools.p0.backends: the weights add up to 11000, more than the maximum 10000 \
         for strategy consistent_hash (160 ring points per unit of weight: \
         1.6 million points, 12.8 MB)",
    );
    // Other strategies expand weights 2 bytes a unit: no such limit.
    assert!(Config::from_yaml(&pools(1, 1024, 1000, "round_robin")).is_ok());
}

#[test]
fn the_largest_ring_accepted_is_built() {
    let config = Config::from_yaml(&pools(1, 10, 1000, "consistent_hash")).unwrap();
    let pool = crate::balance::pool::Pool::detached(config.pools[0].clone());
    assert_eq!(pool.upstreams().len(), 10);
}

#[test]
fn the_rings_of_a_file_are_bounded_together() {
    assert!(Config::from_yaml(&pools(2, 10, 1000, "consistent_hash")).is_ok());
    assert_error(
        &pools(3, 10, 1000, "consistent_hash"),
        "pools: the weights of the consistent_hash pools add up to 30000, more than the \
         maximum 20000 (160 ring points per unit of weight: 3.2 million points, 25.6 MB)",
    );
}

/// One pool with `backend`, Switchyard listening on `listen`.
fn looped(listen: &str, backend: &str) -> Result<Config, ConfigErrors> {
    Config::from_yaml(&format!(
        "server:\n  listen: [\"{listen}\"]\npools:\n  a:\n    backends:\n      \
         - {{ url: \"http://10.0.0.1:8000\" }}\n      - {{ url: \"{backend}\" }}\n"
    ))
}

#[test]
fn a_backend_that_is_our_own_listener_is_refused() {
    for (listen, backend) in [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("0.0.0.0:8080", "http://localhost:8080"),
        ("[::]:8080", "http://[::1]:8080"),
        ("[::]:8080", "http://0.0.0.0:8080"),
        ("127.0.0.1:8080", "http://0.0.0.0:8080"),
        ("10.0.0.5:80", "http://10.0.0.5"),
    ] {
        let errors = looped(listen, backend).expect_err(backend).0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "pools.a.backends[1].url");
        assert!(
            errors[0]
                .message
                .starts_with(&format!("{backend:?} is Switchyard's own listener")),
            "{}",
            errors[0]
        );
    }
    assert_eq!(
        looped("0.0.0.0:8080", "http://127.0.0.1:8080")
            .unwrap_err()
            .to_string(),
        "pools.a.backends[1].url: \"http://127.0.0.1:8080\" is Switchyard's own listener \
         0.0.0.0:8080 (server.listen): requests would loop back into the proxy",
    );
}

#[test]
fn another_host_or_port_is_not_our_listener() {
    for (listen, backend) in [
        ("0.0.0.0:8080", "http://10.0.0.2:8080"),
        ("127.0.0.1:8080", "http://127.0.0.1:8081"),
        ("10.0.0.5:8080", "http://127.0.0.1:8080"),
        ("127.0.0.1:8080", "http://10.0.0.2:8080"),
    ] {
        assert!(looped(listen, backend).is_ok(), "{listen} {backend}");
    }
}

#[test]
fn every_key_of_a_backend_is_checked_even_with_a_bad_url() {
    let all = errors(
        "pools:\n  a:\n    backends:\n      \
         - { url: \"htp://x\", weight: 5000, type: grpc, max_in_flight: 0 }\n",
    );
    assert_eq!(
        all,
        vec![
            "pools.a.backends[0].weight: 5000 is more than the maximum 1000",
            r#"pools.a.backends[0].type: "grpc" is not one of openai, ollama, auto"#,
            "pools.a.backends[0].max_in_flight: 0 must be at least 1",
            r#"pools.a.backends[0].url: "htp://x" is not an http or https URL"#,
        ]
    );
}
