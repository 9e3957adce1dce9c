//! Behaviour under real LLM load: least connections, circuit breaking,
//! retries before the first byte, honest mid-stream failures, cancellation,
//! concurrency caps with a queue.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const SSE: &str = r#"{"model":"llama3","stream":true}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_slow_backend_and_releases_every_slot() {
    let slow = mock(paced(
        "slow",
        Duration::from_secs(2),
        Duration::from_millis(10),
        3,
    ))
    .await;
    let fast = |n: &str| {
        MockConfig::new(n)
            .ttft(Duration::from_millis(10))
            .token_gap(Duration::from_millis(40))
            .tokens(5)
    };
    let (f1, f2) = (mock(fast("f1")).await, mock(fast("f2")).await);
    let backends = backends_yaml(&[&slow, &f1, &f2], &[]);
    let proxy = Proxy::start(|addr| unchecked_pool(addr, "least_connections", &backends, "")).await;
    let url = proxy.url("/v1/chat/completions");

    // 30 streams, started 20 ms apart; every fifth is abandoned by its client.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut resp = client().post(&url).body(SSE).send().await.unwrap();
            let backend = resp.headers()["x-mock-backend"]
                .to_str()
                .unwrap()
                .to_string();
            if i % 5 == 0 {
                let _ = resp.chunk().await;
                drop(resp);
            } else {
                while let Ok(Some(_)) = resp.chunk().await {}
            }
            backend
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_default() += 1;
    }
    let on_slow = counts.get("slow").copied().unwrap_or(0);
    assert!(
        on_slow <= 4,
        "the slow backend got {on_slow} of 30: {counts:?}"
    );

    // Every slot was given back, aborted streams included: with nothing in
    // flight the three backends tie, and ties take turns.
    wait_until(DEADLINE, "backends to finish", || async {
        slow.stats().in_flight() + f1.stats().in_flight() + f2.stats().in_flight() == 0
    })
    .await;
    let client = client();
    let mut after: HashMap<String, usize> = HashMap::new();
    for m in [&slow, &f1, &f2] {
        m.set_timing(Duration::ZERO, Duration::ZERO, 1);
    }
    for _ in 0..30 {
        let (status, backend) = chat(&client, &url, "llama3").await.unwrap();
        assert_eq!(status, 200);
        *after.entry(backend).or_default() += 1;
    }
    assert_eq!(
        after.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_failing_backend_gets_less_traffic_and_clients_see_no_error() {
    let bad = mock(MockConfig::new("bad").fail_with(503).ttft(Duration::ZERO)).await;
    let ok = |n: &str| MockConfig::new(n).ttft(Duration::ZERO).tokens(1);
    let (g1, g2) = (mock(ok("g1")).await, mock(ok("g2")).await);
    let backends = backends_yaml(&[&bad, &g1, &g2], &[]);
    let extra = "    circuit: { consecutive_failures: 3, cooldown: 30s }\n";
    let proxy = Proxy::start(|addr| unchecked_pool(addr, "round_robin", &backends, extra)).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..90 {
        let (status, backend) = chat(&client, &url, "llama3").await.unwrap();
        assert_eq!(status, 200, "a 503 reached the client");
        assert_ne!(backend, "bad");
    }
    let tried_bad = bad.stats().requests_to("/v1/chat/completions");
    // Retry-After: 1 opens its circuit at once; at most a probe per second follows.
    assert!(
        tried_bad <= 6,
        "the failing backend was tried {tried_bad} times out of 90"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_dies_ends_with_an_error_in_its_own_format() {
    let dying = mock(
        paced(
            "dying",
            Duration::from_millis(20),
            Duration::from_millis(20),
            10,
        )
        .failure(Failure::DropMidStream { after_tokens: 3 }),
    )
    .await;
    let backends = backends_yaml(&[&dying], &[]);
    // Four dying streams in a row must not open the backend's circuit.
    let extra = "    circuit: { consecutive_failures: 10 }\n";
    let proxy = Proxy::start(|addr| unchecked_pool(addr, "round_robin", &backends, extra)).await;
    // Cut between two events, then in the middle of one: either way the
    // error starts on an event boundary of its own.
    for failure in [
        Failure::DropMidStream { after_tokens: 3 },
        Failure::SplitMidEvent { after_tokens: 3 },
    ] {
        dying.set_failure(failure);

        // SSE: three tokens, then an OpenAI error event, then a clean end.
        let (status, chunks) =
            stream_chunks(&client(), &proxy.url("/v1/chat/completions"), SSE).await;
        assert_eq!(status, 200);
        let text = body_text(&chunks);
        let events = sse_events(&text);
        assert_eq!(events.len(), 4, "{failure}: {text}");
        for event in &events {
            let json = event.strip_prefix("data: ").expect("a data event");
            serde_json::from_str::<serde_json::Value>(json)
                .unwrap_or_else(|e| panic!("{failure}: {e} in {event:?}"));
        }
        let last: serde_json::Value =
            serde_json::from_str(events[3].trim_start_matches("data: ")).unwrap();
        assert_eq!(last["error"]["type"], "server_error", "{text}");
        assert!(!text.contains("[DONE]"));

        // NDJSON: three lines, then {"error": ...}. Pingora 0.9 never keeps a
        // client connection after an upstream error, so the first stream's
        // connection is closed behind its clean end; a new client keeps this
        // request from racing that close.
        let (status, chunks) =
            stream_chunks(&client(), &proxy.url("/api/chat"), r#"{"model":"llama3"}"#).await;
        assert_eq!(status, 200);
        let text = body_text(&chunks);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{failure}: {e} in {l:?}")))
            .collect();
        assert_eq!(lines.len(), 4, "{failure}: {text}");
        assert!(lines[3]["error"].is_string(), "{text}");

        // Anthropic's Messages API: its SDKs skip unnamed events, so the
        // error is a named `event: error` in Anthropic's shape.
        let body = r#"{"model":"llama3","max_tokens":16,"stream":true,"messages":[]}"#;
        let (status, chunks) = stream_chunks(&client(), &proxy.url("/v1/messages"), body).await;
        assert_eq!(status, 200);
        let text = body_text(&chunks);
        let events = sse_events(&text);
        let deltas = events
            .iter()
            .filter(|e| e.starts_with("event: content_block_delta\n"))
            .count();
        assert_eq!(deltas, 3, "{failure}: {text}");
        let last = events.last().unwrap();
        let data = last
            .strip_prefix("event: error\ndata: ")
            .unwrap_or_else(|| panic!("{failure}: {text}"));
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], "error", "{text}");
        assert_eq!(v["error"]["type"], "api_error", "{text}");
        assert!(!text.contains("message_stop"), "{text}");
    }
}

/// The events of an SSE body, without the blank lines between them.
fn sse_events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect()
}

fn timeouts_pool(
    addr: std::net::SocketAddr,
    backend: &str,
    first_byte: &str,
    idle: &str,
) -> String {
    let backends = format!("      - {{ url: \"{backend}\" }}\n");
    let extra = format!(
        "    retries: 0\n    timeouts: {{ connect: 1s, first_byte: {first_byte}, idle: {idle} }}\n"
    );
    unchecked_pool(addr, "round_robin", &backends, &extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_timeout_gives_504() {
    let hung = mock(MockConfig::new("h").failure(Failure::Hang)).await;
    let url = hung.url();
    let proxy = Proxy::start(|addr| timeouts_pool(addr, &url, "500ms", "30s")).await;
    let start = Instant::now();
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .body(r#"{"model":"llama3"}"#)
        .send()
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(resp.status(), 504);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let (_, _, code) = error_fields(&resp.bytes().await.unwrap());
    assert_eq!(code, "backend_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_ends_a_silent_stream_but_not_a_slow_first_byte() {
    // First token after 800 ms (longer than idle, within first_byte), then
    // silence for 20 s.
    let slow = mock(paced(
        "slow",
        Duration::from_millis(800),
        Duration::from_secs(20),
        3,
    ))
    .await;
    let url = slow.url();
    let proxy = Proxy::start(|addr| timeouts_pool(addr, &url, "10s", "400ms")).await;
    let start = Instant::now();
    let (status, chunks) = stream_chunks(
        &client(),
        &proxy.url("/v1/chat/completions"),
        r#"{"model":"llama3","stream":true}"#,
    )
    .await;
    let took = start.elapsed();
    assert_eq!(status, 200, "the first byte came within first_byte");
    assert!(!chunks.is_empty(), "the first token was delivered");
    assert!(
        took < Duration::from_secs(8),
        "the silent stream was cut by idle, took {took:?}"
    );
    let body = body_text(&chunks);
    assert!(!body.contains("[DONE]"));
    assert!(
        body.contains("tok0") && body.contains("\"error\""),
        "the stream ends with an error event, not a hang: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_stops_the_backend() {
    let slow = mock(paced(
        "slow",
        Duration::from_millis(20),
        Duration::from_millis(200),
        50,
    ))
    .await;
    let backends = backends_yaml(&[&slow], &[]);
    let proxy = Proxy::start(|addr| unchecked_pool(addr, "round_robin", &backends, "")).await;
    let mut resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .body(SSE)
        .send()
        .await
        .unwrap();
    resp.chunk().await.unwrap();
    resp.chunk().await.unwrap();
    drop(resp);
    wait_until(
        Duration::from_secs(5),
        "the backend to see the stream cut",
        || async { slow.stats().streams_cancelled() == 1 },
    )
    .await;
    wait_until(Duration::from_secs(5), "the backend to stop", || async {
        slow.stats().in_flight() == 0
    })
    .await;
    // A client that hangs up, and one that asks for a model nobody serves,
    // are nothing for an operator to act on: no ERROR line, and the
    // backend's circuit is untouched (three such requests would open it).
    for _ in 0..3 {
        let mut resp = client()
            .post(proxy.url("/v1/chat/completions"))
            .body(SSE)
            .send()
            .await
            .unwrap();
        resp.chunk().await.unwrap();
        drop(resp);
    }
    let (status, _) = chat(
        &client(),
        &proxy.url("/v1/chat/completions"),
        "nobody-serves-this",
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    wait_until(Duration::from_secs(5), "the backend to stop", || async {
        slow.stats().in_flight() == 0 && slow.stats().streams_cancelled() == 4
    })
    .await;
    let (status, backend) = chat(&client(), &proxy.url("/v1/chat/completions"), "llama3")
        .await
        .unwrap();
    assert_eq!(
        (status, backend.as_str()),
        (200, "slow"),
        "the circuit stayed closed"
    );
    let log = proxy.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_backend_queues_then_refuses() {
    let one = mock(
        MockConfig::new("one")
            .ttft(Duration::from_millis(600))
            .tokens(1),
    )
    .await;
    let backends = format!(
        "      - {{ name: one, url: \"{}\", max_in_flight: 1 }}\n",
        one.url()
    );
    let extra = "    queue: { max: 1, timeout: 5s }\n";
    let proxy =
        Proxy::start(|addr| unchecked_pool(addr, "least_connections", &backends, extra)).await;
    let url = proxy.url("/v1/chat/completions");

    // One served, one queued (then served), one refused: the queue is full.
    let send = |delay: u64| {
        let url = url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let started = Instant::now();
            let resp = client()
                .post(&url)
                .body(r#"{"model":"llama3"}"#)
                .send()
                .await
                .unwrap();
            let retry_after = resp.headers().get("retry-after").is_some();
            (resp.status().as_u16(), retry_after, started.elapsed())
        })
    };
    let (a, b, c) = (send(0), send(150), send(300));
    let (a, b, c) = (a.await.unwrap(), b.await.unwrap(), c.await.unwrap());
    assert_eq!(a.0, 200);
    assert_eq!(b.0, 200);
    assert!(
        b.2 >= Duration::from_millis(500),
        "the second waited for the first: {:?}",
        b.2
    );
    assert_eq!((c.0, c.1), (429, true));
    assert!(one.stats().in_flight() <= 1);

    // A wait longer than the queue's timeout is a 503 with Retry-After.
    let backends = format!(
        "      - {{ name: one, url: \"{}\", max_in_flight: 1 }}\n",
        one.url()
    );
    one.set_timing(Duration::from_secs(3), Duration::ZERO, 1);
    let extra = "    queue: { max: 4, timeout: 300ms }\n";
    let proxy =
        Proxy::start(|addr| unchecked_pool(addr, "least_connections", &backends, extra)).await;
    let url2 = proxy.url("/v1/chat/completions");
    let first = tokio::spawn({
        let url2 = url2.clone();
        async move {
            client()
                .post(&url2)
                .body(r#"{"model":"llama3"}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    wait_until(DEADLINE, "the first request to hold the slot", || async {
        one.stats().in_flight() == 1
    })
    .await;
    let resp = client()
        .post(&url2)
        .body(r#"{"model":"llama3"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(
        error_fields(&resp.bytes().await.unwrap()).2,
        "queue_timeout"
    );
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_for_one_model_does_not_hold_up_another() {
    // Model x lives on one backend that serves one request at a time and
    // takes 5 s to answer; model y on another, idle.
    let slow = mock(
        MockConfig::new("slow")
            .models(["x"])
            .ttft(Duration::from_secs(5))
            .tokens(1),
    )
    .await;
    let fast = mock(
        MockConfig::new("fast")
            .models(["y"])
            .ttft(Duration::ZERO)
            .tokens(1),
    )
    .await;
    let backends = format!(
        "      - {{ name: slow, url: \"{}\", max_in_flight: 1, models: [x] }}\n\
         \x20     - {{ name: fast, url: \"{}\", models: [y] }}\n",
        slow.url(),
        fast.url()
    );
    let extra = "    queue: { max: 1, timeout: 30s }\n";
    let proxy = Proxy::start(|addr| unchecked_pool(addr, "round_robin", &backends, extra)).await;
    let url = proxy.url("/v1/chat/completions");
    let first = {
        let url = url.clone();
        tokio::spawn(async move { chat(&client(), &url, "x").await })
    };
    let stats = slow.stats();
    wait_until(DEADLINE, "the first x request to hold the slot", || {
        let stats = stats.clone();
        async move { stats.in_flight() == 1 }
    })
    .await;
    // More x requests until one is refused: then one is queued for sure.
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    wait_until(DEADLINE, "an x request to be queued", || {
        let (quick, url) = (quick.clone(), url.clone());
        async move { chat(&quick, &url, "x").await.is_ok_and(|(s, _)| s == 429) }
    })
    .await;
    // A request for y does not wait behind the x queue.
    let start = Instant::now();
    let (status, backend) = chat(&client(), &url, "y").await.unwrap();
    let took = start.elapsed();
    assert_eq!((status, backend.as_str()), (200, "fast"));
    assert!(
        took < Duration::from_secs(3),
        "a request for an idle model waited {took:?} behind another model's queue"
    );
    assert_eq!(first.await.unwrap().unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_tiers_spill_over_and_come_back() {
    let quick = |n: &str| MockConfig::new(n).ttft(Duration::ZERO).tokens(1);
    let mut top = Some(mock(quick("top")).await);
    let low = mock(quick("low")).await;
    let top_addr = top.as_ref().unwrap().addr();
    let pool = Pool::new("chat")
        .set("strategy", "priority")
        .set("health_check.type", "tcp")
        .set("health_check.interval", "200ms")
        .set("health_check.unhealthy_threshold", 1)
        .set("health_check.healthy_threshold", 1)
        .backend(Backend::of(top.as_ref().unwrap()).set("priority", 100))
        .backend(Backend::of(&low).set("priority", 50));
    let proxy = Proxy::start(|addr| Fleet::new(addr).pool(pool.clone()).yaml()).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..20 {
        assert_eq!(
            chat(&client, &url, "llama3").await.unwrap(),
            (200, "top".into())
        );
    }
    top.take().unwrap().shutdown().await;
    // No request fails while the top tier goes away: a refused connect is
    // retried on the next tier at once.
    for _ in 0..20 {
        assert_eq!(
            chat(&client, &url, "llama3").await.unwrap(),
            (200, "low".into())
        );
    }
    let _back = MockServer::bind(top_addr, quick("top")).unwrap();
    wait_until(DEADLINE, "traffic to return to the top tier", || async {
        chat(&client, &url, "llama3").await.unwrap() == (200, "top".into())
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            chat(&client, &url, "llama3").await.unwrap(),
            (200, "top".into())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_health_check_closes_the_circuit_and_the_tier_comes_back() {
    let quick = |n: &str| MockConfig::new(n).ttft(Duration::ZERO).tokens(1);
    let top = mock(quick("top")).await;
    let low = mock(quick("low")).await;
    // A circuit, once open, would keep the top tier out for a minute.
    let pool = Pool::new("chat")
        .set("strategy", "priority")
        .http_checks("200ms")
        .set("circuit.consecutive_failures", 2)
        .set("circuit.cooldown", "60s")
        .backend(Backend::of(&top).set("priority", 100))
        .backend(Backend::of(&low).set("priority", 50));
    let proxy = Proxy::start(|addr| Fleet::new(addr).pool(pool.clone()).yaml()).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(
        chat(&client, &url, "llama3").await.unwrap(),
        (200, "top".into())
    );
    // The top backend fails every request (and its health check) for a
    // while; clients are served by the lower tier.
    top.set_failure(Failure::Status(502));
    for _ in 0..10 {
        assert_eq!(
            chat(&client, &url, "llama3").await.unwrap(),
            (200, "low".into())
        );
    }
    top.set_failure(Failure::None);
    // Its health check passes again: traffic returns within seconds, not
    // after the circuit's cooldown.
    let start = Instant::now();
    wait_until(DEADLINE, "traffic to return to the top tier", || async {
        chat(&client, &url, "llama3").await.unwrap() == (200, "top".into())
    })
    .await;
    assert!(start.elapsed() < Duration::from_secs(30));
    for _ in 0..5 {
        assert_eq!(
            chat(&client, &url, "llama3").await.unwrap(),
            (200, "top".into())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_recovers_is_probed_and_rejoins() {
    let flaky = mock(MockConfig::new("flaky").ttft(Duration::ZERO).tokens(1)).await;
    let steady = mock(MockConfig::new("steady").ttft(Duration::ZERO).tokens(1)).await;
    flaky.set_failure(Failure::Status(500));
    let backends = backends_yaml(&[&flaky, &steady], &[]);
    let extra = "    circuit: { consecutive_failures: 3, cooldown: 500ms }\n";
    let proxy = Proxy::start(|addr| unchecked_pool(addr, "round_robin", &backends, extra)).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    // 500 is not retried (the backend may have acted on the request); after
    // three of them the circuit opens and the backend is left alone.
    let mut errors = 0;
    for _ in 0..40 {
        if chat(&client, &url, "llama3").await.unwrap().0 != 200 {
            errors += 1;
        }
    }
    assert_eq!(
        errors, 3,
        "only the failures that opened the circuit reach clients"
    );
    assert_eq!(flaky.stats().requests_to("/v1/chat/completions"), 3);

    flaky.set_failure(Failure::None);
    wait_until(DEADLINE, "the recovered backend to rejoin", || async {
        chat(&client, &url, "llama3").await.unwrap() == (200, "flaky".into())
    })
    .await;
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        *served
            .entry(chat(&client, &url, "llama3").await.unwrap().1)
            .or_default() += 1;
    }
    assert_eq!(served.get("flaky"), Some(&10), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_replay_the_body_and_never_revisit_a_backend() {
    let quick = |n: &str| MockConfig::new(n).ttft(Duration::ZERO).tokens(1);
    let (b1, b2, good) = (
        mock(quick("b1").fail_with(503)).await,
        mock(quick("b2").fail_with(502)).await,
        mock(quick("good")).await,
    );
    let backends = backends_yaml(&[&b1, &b2, &good], &[]);
    let extra = "    circuit: { consecutive_failures: 100 }\n";
    let proxy = Proxy::start(|addr| unchecked_pool(addr, "round_robin", &backends, extra)).await;
    let client = client();
    // Larger than Pingora's 64 KiB replay buffer.
    let prompt = "p".repeat(300 << 10);
    for _ in 0..3 {
        let body =
            format!(r#"{{"messages":[{{"role":"user","content":"{prompt}"}}],"model":"llama3"}}"#);
        let before = [&b1, &b2, &good].map(|m| m.stats().requests_to("/v1/chat/completions"));
        let resp = client
            .post(proxy.url("/v1/chat/completions"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-mock-backend"], "good");
        let after = [&b1, &b2, &good].map(|m| m.stats().requests_to("/v1/chat/completions"));
        for (i, (a, b)) in after.iter().zip(before).enumerate() {
            assert!(a - b <= 1, "backend {i} was tried twice in one request");
        }
        for m in [&b1, &b2, &good] {
            if m.stats().last_body_len() > 0 {
                assert!(
                    m.stats().last_body() == body.as_bytes(),
                    "{} got other bytes",
                    m.name()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_retried_after_the_first_byte() {
    let dying = mock(
        paced(
            "dying",
            Duration::from_millis(10),
            Duration::from_millis(10),
            10,
        )
        .failure(Failure::DropMidStream { after_tokens: 2 }),
    )
    .await;
    let other = mock(MockConfig::new("other").ttft(Duration::ZERO)).await;
    // The dying backend is the preferred tier, so the first attempt lands there.
    let pool = Pool::new("chat")
        .set("strategy", "priority")
        .backend(Backend::of(&dying).set("priority", 9))
        .backend(Backend::of(&other).set("priority", 0));
    let proxy = Proxy::start(|addr| Fleet::new(addr).pool(pool.clone()).yaml()).await;
    let start = Instant::now();
    let (status, chunks) = stream_chunks(&client(), &proxy.url("/v1/chat/completions"), SSE).await;
    assert_eq!(status, 200);
    assert!(body_text(&chunks).contains("\"error\""));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the error came within idle + 1 s"
    );
    assert_eq!(
        other.stats().requests_to("/v1/chat/completions"),
        0,
        "a started stream was retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_requests_over_two_capped_backends_all_succeed() {
    let slow = |n: &str| {
        MockConfig::new(n)
            .ttft(Duration::from_millis(200))
            .tokens(1)
    };
    let (a, b) = (mock(slow("a")).await, mock(slow("b")).await);
    let backends = format!(
        "      - {{ name: a, url: \"{}\", max_in_flight: 2 }}\n      - {{ name: b, url: \"{}\", max_in_flight: 2 }}\n",
        a.url(),
        b.url()
    );
    let run = |queue_max: usize| {
        let backends = backends.clone();
        async move {
            let extra = format!("    queue: {{ max: {queue_max}, timeout: 20s }}\n");
            let proxy =
                Proxy::start(|addr| unchecked_pool(addr, "least_connections", &backends, &extra))
                    .await;
            let url = proxy.url("/v1/chat/completions");
            let tasks: Vec<_> = (0..10)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move {
                        let resp = client()
                            .post(&url)
                            .body(r#"{"model":"llama3"}"#)
                            .send()
                            .await
                            .unwrap();
                        (
                            resp.status().as_u16(),
                            resp.headers().contains_key("retry-after"),
                        )
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let all = run(256).await;
    assert!(all.iter().all(|(s, _)| *s == 200), "{all:?}");
    assert!(a.stats().in_flight() <= 2 && b.stats().in_flight() <= 2);

    // Slow enough that all ten arrive while the first four are in flight:
    // four served, two queued then served, four refused.
    for m in [&a, &b] {
        m.set_timing(Duration::from_secs(2), Duration::ZERO, 1);
    }
    let some = run(2).await;
    let ok = some.iter().filter(|(s, _)| *s == 200).count();
    let refused = some.iter().filter(|(s, r)| *s == 429 && *r).count();
    assert_eq!((ok, refused), (6, 4), "{some:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_silent_before_its_header_is_timed_out_and_retried() {
    let hung = mock(MockConfig::new("hung").failure(Failure::Hang)).await;
    let good = mock(MockConfig::new("good").ttft(Duration::ZERO).tokens(1)).await;
    let backends = format!(
        "      - {{ name: hung, url: \"{}\", priority: 9 }}\n      - {{ name: good, url: \"{}\" }}\n",
        hung.url(),
        good.url()
    );
    // idle shorter than first_byte: the usual case, where Pingora's read
    // timeout, not the watchdog, ends the wait for the header.
    let extra = "    timeouts: { first_byte: 400ms, idle: 100ms }\n";
    let proxy = Proxy::start(|addr| unchecked_pool(addr, "priority", &backends, extra)).await;
    let start = Instant::now();
    let (status, backend) = chat(&client(), &proxy.url("/v1/chat/completions"), "llama3")
        .await
        .unwrap();
    assert_eq!((status, backend.as_str()), (200, "good"));
    assert!(
        start.elapsed() >= Duration::from_millis(350) && start.elapsed() < Duration::from_secs(5)
    );

    // With no other backend, the client gets a 504.
    let backends = format!("      - {{ name: hung, url: \"{}\" }}\n", hung.url());
    let proxy = Proxy::start(|addr| unchecked_pool(addr, "round_robin", &backends, extra)).await;
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .body(r#"{"model":"llama3"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(
        error_fields(&resp.bytes().await.unwrap()).2,
        "backend_timeout"
    );
}
