//! Streams pass through chunk by chunk, at the backend's pace: SSE and
//! Ollama NDJSON, compared against the same backend reached directly.

mod common;

use common::*;
use std::time::Duration;
use switchyard::mock::unix_micros;

/// How long each token event of a stream took from the mock (its
/// `sent_us` stamp) to the client, and when it arrived.
async fn event_delays(url: &str, body: &str) -> Vec<(Duration, Duration)> {
    let start = std::time::Instant::now();
    let mut resp = post_json(&client(), url, body).await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut out = Vec::new();
    let mut pending = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let now = unix_micros();
        let at = start.elapsed();
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let json = line.trim().trim_start_matches("data: ");
            let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
                continue;
            };
            if let Some(sent) = v["sent_us"].as_u64() {
                out.push((Duration::from_micros(now.saturating_sub(sent)), at));
            }
        }
    }
    out
}

/// Streams `body` from `path` through the proxy and checks that every
/// event reaches the client as soon as the backend sent it: measured per
/// event from the mock's own send stamp, so a loaded machine that delays
/// the whole stream does not make it look buffered, and a proxy that holds
/// even one event back (by the 200 ms the mock waits between events) does.
async fn compare(path: &str, body: &str) {
    let backend = mock(paced(
        "s0",
        Duration::from_millis(100),
        Duration::from_millis(200),
        10,
    ))
    .await;
    let backends = backends_yaml(&[&backend], &[]);
    let proxy = Proxy::start(|addr| one_pool(addr, "round_robin", &backends)).await;
    let url = proxy.url(path);
    // Warm the path once so the measured stream pays no connect.
    event_delays(&url, body).await;

    let events = event_delays(&url, body).await;
    assert_eq!(events.len(), 10, "every token event, stamped");
    for (i, (delay, at)) in events.iter().enumerate() {
        assert!(
            *delay < Duration::from_millis(180),
            "event {i} reached the client {delay:?} after the backend sent it (at {at:?})"
        );
    }
    // Spread over the stream's length, not bunched up at its end.
    let spread = events[9].1 - events[0].1;
    assert!(
        spread > Duration::from_millis(1000),
        "ten events 200 ms apart arrived within {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_token_by_token() {
    compare(
        "/v1/chat/completions",
        r#"{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_streams_line_by_line() {
    compare(
        "/api/chat",
        r#"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_headers_arrive_with_the_first_token_not_the_last() {
    let backend = mock(paced(
        "s0",
        Duration::from_millis(50),
        Duration::from_millis(300),
        5,
    ))
    .await;
    let backends = backends_yaml(&[&backend], &[]);
    let proxy = Proxy::start(|addr| one_pool(addr, "round_robin", &backends)).await;
    let start = std::time::Instant::now();
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .body(r#"{"model":"llama3","stream":true}"#)
        .send()
        .await
        .unwrap();
    let headers_at = start.elapsed();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(
        headers_at < Duration::from_millis(900),
        "headers took {headers_at:?}"
    );
    let body = resp.text().await.unwrap();
    assert!(body.trim_end().ends_with("data: [DONE]"));
}
