//! Streams pass through chunk by chunk, at the backend's pace: SSE and
//! Ollama NDJSON, compared against the same backend reached directly.

mod common;

use common::*;
use std::time::Duration;

/// Arrival time of each event (SSE `data:` line or NDJSON line) in a stream.
fn event_times(chunks: &[(Duration, bytes::Bytes)]) -> Vec<(Duration, String)> {
    let mut out = Vec::new();
    for (at, chunk) in chunks {
        for line in String::from_utf8_lossy(chunk).lines() {
            if !line.trim().is_empty() {
                out.push((*at, line.to_string()));
            }
        }
    }
    out
}

/// Streams `body` from `path` directly and through the proxy, and checks
/// that the proxy delivers every event at the time the backend sent it.
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
    let client = client();

    // Warm both paths once so neither pays a connect the other does not.
    stream_chunks(&client, &format!("{}{path}", backend.url()), body).await;
    stream_chunks(&client, &proxy.url(path), body).await;

    let (s1, direct) = stream_chunks(&client, &format!("{}{path}", backend.url()), body).await;
    let (s2, proxied) = stream_chunks(&client, &proxy.url(path), body).await;
    assert_eq!((s1, s2), (200, 200));
    let direct = event_times(&direct);
    let proxied = event_times(&proxied);
    assert_eq!(direct.len(), proxied.len(), "same events");
    assert!(direct.len() >= 10);

    // Token events: the first within 50 ms of direct, each later one at the
    // backend's pace (200 ms apart), so never bunched up at the end.
    let first_gap = proxied[0].0.abs_diff(direct[0].0);
    assert!(
        first_gap < Duration::from_millis(50),
        "first event {first_gap:?} later than direct"
    );
    for (i, ((dt, de), (pt, pe))) in direct.iter().zip(&proxied).take(10).enumerate() {
        let same_shape = de.split("\"backend\"").count() == pe.split("\"backend\"").count();
        assert!(same_shape, "event {i} differs: {de} / {pe}");
        let skew = pt.abs_diff(*dt);
        assert!(
            skew < Duration::from_millis(100),
            "event {i} at {pt:?} through the proxy, {dt:?} direct"
        );
        if i > 0 {
            let gap = *pt - proxied[i - 1].0;
            assert!(
                gap > Duration::from_millis(100),
                "event {i} came {gap:?} after the previous one: buffered"
            );
        }
    }
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
