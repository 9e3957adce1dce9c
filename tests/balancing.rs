//! Load balancing through the real binary: strategies, weights, failover
//! and recovery.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;

/// Sends `n` requests, eight at a time, and counts who served them.
async fn count_backends(client: &reqwest::Client, url: &str, n: usize) -> HashMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut served = Vec::new();
            for _ in 0..n / 8 {
                let (status, backend) = chat(&client, &url, "llama3").await.unwrap();
                assert_eq!(status, 200);
                served.push(backend);
            }
            served
        }));
    }
    let mut counts = HashMap::new();
    for t in tasks {
        for backend in t.await.unwrap() {
            *counts.entry(backend).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_splits_evenly() {
    let m = mocks(3).await;
    let backends = backends_yaml(&[&m[0], &m[1], &m[2]], &[]);
    let proxy = Proxy::start(|addr| one_pool(addr, "round_robin", &backends)).await;
    let counts = count_backends(&client(), &proxy.url("/v1/chat/completions"), 304).await;
    for b in ["b0", "b1", "b2"] {
        let n = counts.get(b).copied().unwrap_or(0);
        assert!((96..=106).contains(&n), "{b} got {n} of 304: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_honoured() {
    let m = mocks(3).await;
    let backends = backends_yaml(&[&m[0], &m[1], &m[2]], &[5, 3, 2]);
    for strategy in ["round_robin", "random"] {
        let proxy = Proxy::start(|addr| one_pool(addr, strategy, &backends)).await;
        let counts = count_backends(&client(), &proxy.url("/v1/chat/completions"), 1000).await;
        // Random draws have a standard deviation of ~1.6 points here; allow
        // five for it, three for the deterministic rotation.
        let slack = if strategy == "random" { 50 } else { 30 };
        for (b, share) in [("b0", 500), ("b1", 300), ("b2", 200)] {
            let n = counts.get(b).copied().unwrap_or(0) as i64;
            assert!(
                (n - share).abs() <= slack,
                "{strategy}: {b} got {n} of 1000, want {share}: {counts:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_sticks_and_moves_only_the_removed_backends_users() {
    let m = mocks(3).await;
    let backends = backends_yaml(&[&m[0], &m[1], &m[2]], &[]);
    let proxy = Proxy::start(|addr| {
        one_pool(
            addr,
            "consistent_hash\n    hash_key: \"header:x-user-id\"",
            &backends,
        )
    })
    .await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    let mut home = HashMap::new();
    for user in 0..50 {
        let id = format!("user-{user}");
        let (_, first) = chat_with(&client, &url, "llama3", &[("x-user-id", &id)])
            .await
            .unwrap();
        for _ in 0..3 {
            let (_, again) = chat_with(&client, &url, "llama3", &[("x-user-id", &id)])
                .await
                .unwrap();
            assert_eq!(again, first, "{id} moved");
        }
        home.insert(id, first);
    }
    let used: std::collections::HashSet<_> = home.values().cloned().collect();
    assert_eq!(
        used.len(),
        3,
        "50 users should spread over all 3 backends: {home:?}"
    );

    // Remove b1: its users move, nobody else does.
    let mut m = m;
    let b1 = m.remove(1);
    b1.shutdown().await;
    proxy.wait_log("backend b1 is unhealthy").await;
    for (id, before) in &home {
        let (status, now) = chat_with(&client, &url, "llama3", &[("x-user-id", id)])
            .await
            .unwrap();
        assert_eq!(status, 200);
        if before == "b1" {
            assert_ne!(now, "b1");
        } else {
            assert_eq!(&now, before, "{id} moved although its backend stayed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_failed_over_and_returns_when_restarted() {
    let mut m = mocks(3).await;
    let backends = backends_yaml(&[&m[0], &m[1], &m[2]], &[]);
    let proxy = Proxy::start(|addr| one_pool(addr, "round_robin", &backends)).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");

    let victim = m.remove(2);
    let victim_addr = victim.addr();
    let killed = std::time::Instant::now();
    victim.shutdown().await;

    // No request fails while the health check has not noticed yet: a refused
    // connect is retried on another backend within the same request.
    let mut served = HashMap::new();
    for _ in 0..60 {
        let (status, backend) = chat(&client, &url, "llama3").await.unwrap();
        assert_eq!(status, 200, "a request failed after a backend died");
        *served.entry(backend).or_insert(0) += 1;
    }
    assert!(!served.contains_key("b2"));
    // interval 200ms x unhealthy_threshold 2, with room for a loaded machine.
    proxy.wait_log("backend b2 is unhealthy").await;
    assert!(killed.elapsed() < Duration::from_secs(10));

    // Restarted on the same address, it gets traffic again.
    let back = MockServer::bind(victim_addr, MockConfig::new("b2")).unwrap();
    proxy.wait_log("backend b2 is healthy").await;
    wait_until(DEADLINE, "b2 to serve again", || async {
        chat(&client, &url, "llama3")
            .await
            .map(|(_, b)| b == "b2")
            .unwrap_or(false)
    })
    .await;
    assert!(back.stats().requests_to("/v1/chat/completions") > 0);
}
