//! The hybrid fleet of `conf/examples/hybrid.yaml`, run: three local
//! backends at priority 100 over plain HTTP, a cloud tier at priority 10
//! over HTTPS behind a base path, with its key from the environment and a
//! model map. Requests keep coming while the local backends are killed one
//! by one: none fails, the cloud tier serves once every local one is gone
//! (and not before), and traffic returns to a local backend that comes
//! back.

mod common;

use common::tls::{Leaf, TestCa};
use common::*;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const KEY: &str = "gsk-hybrid-SECRET-7171";
const SERVED: &str = "llama-3.1-8b-instant";

fn local(name: &str) -> MockConfig {
    MockConfig::new(name)
        .models(["llama3.1:8b"])
        .ttft(Duration::ZERO)
        .tokens(1)
}

/// Sends `n` chat requests one after another; every one must succeed.
/// Returns how many each backend served.
async fn traffic(client: &reqwest::Client, url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    let body = r#"{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..n {
        let resp = post_json(client, url, body).await;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (backend, attempts) = (header("x-mock-backend"), header("x-switchyard-attempts"));
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(
            status, 200,
            "a request failed (attempts {attempts:?}): {text}"
        );
        *served.entry(backend).or_insert(0) += 1;
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_tier_serves_only_while_every_local_backend_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("hybrid test CA");
    let ca_file = ca.write(dir.path(), "ca");
    let leaf = ca.issue(dir.path(), "cloud", Leaf::default());
    let cloud = mock_tls(
        MockConfig::new("cloud")
            .models([SERVED])
            .base_path("/openai")
            .ttft(Duration::ZERO)
            .tokens(1),
        &MockTls::new(&leaf.cert, &leaf.key),
    )
    .await;
    let mut locals = Vec::new();
    for i in 0..3 {
        locals.push(Some(mock(local(&format!("gpu-{i}"))).await));
    }
    let addrs: Vec<_> = locals.iter().map(|m| m.as_ref().unwrap().addr()).collect();
    let cloud_url = format!("https://localhost:{}/openai", cloud.addr().port());
    let headers: Value =
        serde_yaml::from_str("{ Authorization: { env: HYBRID_CLOUD_KEY, prefix: \"Bearer \" } }")
            .unwrap();
    let map: Value = serde_yaml::from_str(&format!("{{ \"llama3.1:8b\": {SERVED} }}")).unwrap();
    let proxy = Proxy::start_with_env(
        |addr| {
            let mut pool = Pool::new("fleet")
                .set("strategy", "priority")
                .set("retries", 3)
                .http_checks("200ms")
                // A TLS check can take more than the harness's 500 ms on a
                // loaded machine; one slow check must not take the cloud
                // tier out while it is the last one standing.
                .set("health_check.timeout", "3s")
                .set("health_check.unhealthy_threshold", 2)
                .set("circuit.cooldown", "1s");
            for m in locals.iter().flatten() {
                pool = pool.backend(Backend::of(m).set("priority", 100).set("type", "ollama"));
            }
            pool = pool.backend(
                Backend::url(&cloud_url)
                    .set("name", "cloud")
                    .set("type", "openai")
                    .set("priority", 10)
                    .set("tls.ca", ca_file.display().to_string())
                    .set("headers", headers.clone())
                    .set("model_map", map.clone()),
            );
            Fleet::new(addr).models("refresh", "1s").pool(pool).yaml()
        },
        &[],
        &[("HYBRID_CLOUD_KEY", KEY)],
    )
    .await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");

    // Every local backend up: the cloud gets nothing.
    let served = traffic(&client, &url, 30).await;
    assert!(!served.contains_key("cloud"), "{served:?}");

    // Killed one by one, with requests between: retries carry them to the
    // next local backend, then to the cloud, with none failing.
    for (i, slot) in locals.iter_mut().enumerate() {
        slot.take().unwrap().shutdown().await;
        let served = traffic(&client, &url, 20).await;
        if i < 2 {
            assert!(
                !served.contains_key("cloud"),
                "after {} killed: {served:?}",
                i + 1
            );
        } else {
            assert_eq!(served.get("cloud"), Some(&20), "{served:?}");
        }
    }
    let stats = cloud.stats();
    let seen = stats.last_headers();
    assert_eq!(seen["authorization"], format!("Bearer {KEY}"));
    assert_eq!(stats.last_model().as_deref(), Some(SERVED));
    assert!(stats
        .paths()
        .contains(&"/openai/v1/chat/completions".to_string()));

    // One comes back on its address: once its checks pass, traffic returns.
    let back = MockServer::bind(addrs[1], local("gpu-1")).unwrap();
    wait_until(DEADLINE, "traffic back on gpu-1", || async {
        traffic(&client, &url, 1).await.contains_key("gpu-1")
    })
    .await;
    let served = traffic(&client, &url, 20).await;
    assert_eq!(served.get("gpu-1"), Some(&20), "{served:?}");
    assert!(!proxy.log_text().contains(KEY), "the key is in the log");
    drop(back);
}
