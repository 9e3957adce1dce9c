//! Rate and concurrency limits through the real binary, counted in the
//! proxy: a request burst, a token budget charged from the reported usage,
//! requests in flight, and `server.allow` / `server.deny` at accept.

mod common;

use common::scrape::scrape;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

const CHAT: &str = r#"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#;

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A proxy over one quick mock, with `limits` (a YAML mapping) as
/// `limits.per_address`.
async fn limited(m: &MockServer, limits: &str) -> Proxy {
    let limits = yaml(limits);
    Proxy::start(|addr| {
        Fleet::new(addr)
            .set("limits.per_address", limits.clone())
            .pool(Pool::new("chat").backend(Backend::of(m).set("models", yaml("[llama3]"))))
            .yaml()
    })
    .await
}

/// Sends `n` chats at once; their statuses, and the Retry-After of each 429.
async fn burst(url: &str, n: usize) -> (Vec<u16>, Vec<String>) {
    let sends = (0..n).map(|_| async {
        let resp = post_json(&client(), url, CHAT).await;
        let retry = header(&resp, "retry-after");
        (resp.status().as_u16(), retry)
    });
    let results = futures_util::future::join_all(sends).await;
    let statuses = results.iter().map(|(s, _)| *s).collect();
    let retries = results
        .into_iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, r)| r)
        .collect();
    (statuses, retries)
}

#[tokio::test]
async fn a_burst_passes_then_the_rate() {
    let m = mock(MockConfig::new("b0").ttft(Duration::ZERO).tokens(1)).await;
    let proxy = limited(&m, "{ requests: { per: 1s, limit: 2, burst: 5 } }").await;
    let url = proxy.url("/v1/chat/completions");
    let start = Instant::now();
    let (statuses, retries) = burst(&url, 20).await;
    let ended = Instant::now();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 5, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
    assert!(retries.iter().all(|r| r == "1"), "Retry-After: {retries:?}");

    // Two requests' room comes back each second: a second after the burst
    // was answered, at least two pass, and no more than the time since
    // it began allows.
    tokio::time::sleep_until((ended + Duration::from_millis(1000)).into()).await;
    let (statuses, _) = burst(&url, 6).await;
    let allowed = ((start.elapsed().as_secs_f64() - 0.0) * 2.0).floor() as usize;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        ok >= 2 && ok <= allowed.min(6),
        "{ok} passed, {allowed} allowed: {statuses:?}"
    );

    // The refusals are counted by scope and limit.
    let resp = post_json(&client(), &url, CHAT).await;
    let refused = resp.status().as_u16() == 429;
    let body = resp.bytes().await.unwrap();
    if refused {
        let (_, kind, code) = error_fields(&body);
        assert_eq!(
            (kind.as_str(), code.as_str()),
            ("rate_limit_error", "rate_limit_exceeded")
        );
    }
}

#[tokio::test]
async fn a_token_budget_refuses_once_spent_and_the_headers_count_down() {
    // "hi" is one prompt token: 999 more make 1000 a request.
    let m = mock(
        MockConfig::new("b0")
            .ttft(Duration::ZERO)
            .token_gap(Duration::ZERO)
            .tokens(999),
    )
    .await;
    // An admin listener, to see each request ended: its tokens are charged
    // when the proxy finishes it, which can come after the client has read
    // the whole answer, and this client goes on only once they are.
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .set(
                "limits.per_address",
                yaml("{ tokens: { per: 24h, limit: 3000 } }"),
            )
            .admin("listen", admin.to_string())
            .pool(Pool::new("chat").backend(Backend::of(&m).set("models", yaml("[llama3]"))))
            .yaml()
    })
    .await;
    let url = proxy.url("/v1/chat/completions");
    let mut seen = Vec::new();
    for sent in 1..=4 {
        let resp = post_json(&client(), &url, CHAT).await;
        let status = resp.status().as_u16();
        let remaining = header(&resp, "x-ratelimit-remaining-tokens");
        assert_eq!(header(&resp, "x-ratelimit-limit-tokens"), "3000");
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        if status == 200 {
            assert_eq!(body["usage"]["total_tokens"], 1000, "{body}");
        }
        seen.push((status, remaining));
        // Recorded after the charge, in the same hook.
        wait_until(DEADLINE, "the request to end in the proxy", || async move {
            scrape(&client(), admin, None)
                .await
                .sum("switchyard_requests_total", &[])
                >= f64::from(sent)
        })
        .await;
    }
    // Tokens come back at 3000 a day, one every 29 s, so waiting for the
    // proxy to end each request cannot refill the spent bucket before the
    // fourth asks.
    let close = |got: &str, want: u64| {
        got.parse::<u64>()
            .is_ok_and(|n| n >= want && n <= want + 200)
    };
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [200, 200, 200, 429],
        "{seen:?}"
    );
    for (i, want) in [3000, 2000, 1000, 0].into_iter().enumerate() {
        assert!(close(&seen[i].1, want), "request {i}: {seen:?}");
    }
}

/// Starts a slow stream; returns its response, headers read.
async fn stream(url: &str) -> reqwest::Response {
    post_json(
        &client(),
        url,
        r#"{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await
}

#[tokio::test]
async fn requests_in_flight_are_capped_and_released_on_end_or_cancel() {
    let m = mock(
        MockConfig::new("b0")
            .ttft(Duration::ZERO)
            .token_gap(Duration::from_millis(20))
            .tokens(100),
    )
    .await;
    let proxy = limited(&m, "{ concurrent: 2 }").await;
    let url = proxy.url("/v1/chat/completions");
    let a = stream(&url).await;
    let b = stream(&url).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let third = stream(&url).await;
    assert_eq!(third.status().as_u16(), 429);
    assert_eq!(header(&third, "retry-after"), "1");
    drop(third);

    // The client of one stream hangs up: its slot comes back.
    drop(a);
    wait_until(DEADLINE, "a slot freed by a cancelled stream", || async {
        let s = stream(&url).await;
        let ok = s.status().as_u16() == 200;
        if ok {
            // Held until the end of the test's wait: read it whole.
            let _ = s.bytes().await;
        }
        ok
    })
    .await;

    // A stream that ends gives its slot back too.
    let _ = b.bytes().await;
    let c = stream(&url).await;
    assert_eq!(c.status().as_u16(), 200);
    let d = stream(&url).await;
    assert_eq!(
        d.status().as_u16(),
        200,
        "the finished streams' slots are free"
    );
}

#[tokio::test]
async fn a_denied_address_is_closed_before_its_request_is_read() {
    let m = mock(MockConfig::new("b0").ttft(Duration::ZERO).tokens(1)).await;
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .server("allow", yaml("[\"127.0.0.0/8\"]"))
            .server("deny", yaml("[\"127.0.0.2\"]"))
            .pool(Pool::new("chat").backend(Backend::of(&m).set("models", yaml("[llama3]"))))
            .yaml()
    })
    .await;
    let allowed = exchange_from("127.0.0.1", proxy.addr).await.unwrap();
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    let denied = exchange_from("127.0.0.2", proxy.addr)
        .await
        .unwrap_or_default();
    assert_eq!(denied, "", "a denied peer got an answer");
    let metrics_seen = proxy.log_text();
    assert!(!metrics_seen.contains("panicked"), "{metrics_seen}");
}
