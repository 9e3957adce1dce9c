//! Limits shared by several instances through a real `redis-server`
//! (Debian's package), started by the test on a free loopback port: two
//! instances together admit exactly the shared limit; Redis killed
//! mid-test lets requests through (`on_store_error: allow`, the default)
//! and counts the failures; `deny` answers 503.

mod common;

use common::scrape::scrape;
use common::*;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHAT: &str = r#"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#;

/// A `redis-server` that keeps nothing on disk; killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) is installed");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until(DEADLINE, "redis-server to listen", || async move {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .await;
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

/// An instance over `m` whose pool allows 10 requests a minute, counted
/// in `redis`; `extra` store keys as YAML (`on_store_error: deny`).
async fn instance(m: &MockServer, redis: &str, admin: u16, extra: &str) -> Proxy {
    // Generous: a loaded 2-core machine can take more than the few
    // milliseconds a real deployment gives Redis.
    let store = yaml(&format!("{{ redis: \"{redis}\", timeout: 1s{extra} }}"));
    Proxy::start(|addr| {
        Fleet::new(addr)
            .set("limits.store", store.clone())
            .admin("listen", format!("127.0.0.1:{admin}"))
            .pool(
                Pool::new("chat")
                    .set("limits", yaml("{ requests: { per: 1m, limit: 10 } }"))
                    .backend(Backend::of(m).set("models", yaml("[llama3]"))),
            )
            .yaml()
    })
    .await
}

async fn statuses(url: &str, n: usize) -> Vec<u16> {
    let sends = (0..n).map(|_| async {
        let resp = post_json(&client(), url, CHAT).await;
        resp.status().as_u16()
    });
    futures_util::future::join_all(sends).await
}

async fn store_errors(admin: u16) -> f64 {
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    scrape(&client(), admin, None)
        .await
        .value("switchyard_limit_store_errors_total", &[])
        .unwrap_or(0.0)
}

#[tokio::test]
async fn two_instances_share_one_limit_and_survive_redis_going_away() {
    let mut redis = Redis::start().await;
    let m = mock(MockConfig::new("b0").ttft(Duration::ZERO).tokens(1)).await;
    let (admin_a, admin_b) = (free_port(), free_port());
    let a = instance(&m, &redis.url(), admin_a, "").await;
    let b = instance(&m, &redis.url(), admin_b, "").await;
    let (url_a, url_b) = (a.url("/v1/chat/completions"), b.url("/v1/chat/completions"));
    let (from_a, from_b) = tokio::join!(statuses(&url_a, 10), statuses(&url_b, 10));
    let all: Vec<u16> = from_a.iter().chain(&from_b).copied().collect();
    assert_eq!(all.iter().filter(|s| **s == 200).count(), 10, "{all:?}");
    assert_eq!(all.iter().filter(|s| **s == 429).count(), 10, "{all:?}");

    // Redis goes away: requests are let through, and the failures counted.
    redis.kill();
    let before = store_errors(admin_a).await;
    let after_kill = statuses(&url_a, 5).await;
    assert!(after_kill.iter().all(|s| *s == 200), "{after_kill:?}");
    let after = store_errors(admin_a).await;
    assert!(after >= before + 5.0, "store errors {before} -> {after}");
    a.wait_log("limits store:").await;

    // The same outage, with on_store_error: deny.
    let admin_c = free_port();
    let c = instance(&m, &redis.url(), admin_c, ", on_store_error: deny").await;
    let resp = post_json(&client(), &c.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(resp.status().as_u16(), 503);
    let (_, _, code) = error_fields(&resp.bytes().await.unwrap());
    assert_eq!(code, "limit_store_unavailable");
}
