//! The admin listener and its metrics with real processes: known traffic
//! through the proxy, then exact counts from a scrape; the bearer token
//! and what `-t` refuses; `promtool check metrics` on a scrape; and a real
//! Prometheus server scraping the listener.
//!
//! promtool and prometheus come from Debian's `prometheus` package; the
//! tests that need them fail, saying so, where it is missing.

mod common;

use common::scrape::{fetch, scrape, Scrape};
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "metrics-test-token-0123456789";

/// Starts the proxy with the admin listener on a free loopback port;
/// returns it with the admin address once `/metrics` answers.
async fn start(fleet: impl Fn(SocketAddr) -> Fleet, token: Option<&str>) -> (Proxy, SocketAddr) {
    let proxy = Proxy::start(|addr| {
        fleet(addr)
            .admin("listen", format!("127.0.0.1:{}", free_port()))
            .yaml()
    })
    .await;
    let admin = admin_addr(&proxy.config);
    let client = client();
    wait_until(DEADLINE, "the admin listener", || async {
        fetch(&client, admin, "/metrics", token)
            .await
            .is_ok_and(|(status, _)| status == 200)
    })
    .await;
    (proxy, admin)
}

/// `admin.listen` of the configuration file at `path`.
fn admin_addr(path: &Path) -> SocketAddr {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["admin"]["listen"].as_str().unwrap().parse().unwrap()
}

/// Scrapes until `done` holds for the scrape, and returns that scrape.
async fn scrape_until(
    admin: SocketAddr,
    token: Option<&str>,
    what: &str,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let client = client();
    let end = Instant::now() + DEADLINE;
    loop {
        let s = scrape(&client, admin, token).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}; last scrape:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pool over `mocks` whose model lists the file fixes, so the model
/// labels do not wait for discovery.
fn chat_pool(mocks: &[&MockServer]) -> Pool {
    mocks.iter().fold(Pool::new("chat"), |pool, m| {
        pool.backend(Backend::of(m).set("models", vec!["llama3", "qwen2.5"]))
    })
}

const REQUESTS: &str = "switchyard_requests_total";

#[test]
fn the_scrape_parser_reads_labels_and_values() {
    let s = Scrape::parse(
        "# HELP x y\n# TYPE x counter\nx 3\nr{a=\"1\",b=\"q\\\"z\"} 2.5\nr{a=\"2\",b=\"\"} 1\n",
    );
    assert_eq!(s.value("x", &[]), Some(3.0));
    assert_eq!(s.value("r", &[("b", "q\"z")]), Some(2.5));
    assert_eq!(s.value("r", &[("b", "")]), Some(1.0));
    assert_eq!(s.sum("r", &[]), 3.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_once_each_by_pool_backend_model_and_outcome() {
    let m = mocks(2).await;
    let (proxy, admin) = start(
        |addr| {
            Fleet::new(addr)
                .pool(chat_pool(&[&m[0], &m[1]]))
                .route("chat", &[])
        },
        None,
    )
    .await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    let mut served = std::collections::HashMap::new();
    for _ in 0..6 {
        let (status, backend) = chat(&client, &url, "llama3").await.unwrap();
        assert_eq!(status, 200);
        *served.entry(backend).or_insert(0.0) += 1.0;
    }
    for _ in 0..2 {
        assert_eq!(chat(&client, &url, "no-such-model").await.unwrap().0, 404);
    }
    let (status, chunks) = stream_chunks(
        &client,
        &url,
        r#"{"model":"qwen2.5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body_text(&chunks).contains("[DONE]"));

    // A request is counted when its logging ends, just after its client
    // has the response: wait for all nine, then every count is exact.
    let s = scrape_until(admin, None, "nine requests", |s| {
        s.sum(REQUESTS, &[]) >= 9.0
    })
    .await;
    assert_eq!(s.sum(REQUESTS, &[]), 9.0, "{}", s.text);
    for (backend, n) in &served {
        let labels = [
            ("pool", "chat"),
            ("backend", backend.as_str()),
            ("model", "llama3"),
            ("status", "2xx"),
            ("outcome", "ok"),
            ("error_code", ""),
        ];
        assert_eq!(s.value(REQUESTS, &labels), Some(*n), "{}", s.text);
    }
    let refused = [
        ("pool", "chat"),
        ("backend", ""),
        ("model", "other"),
        ("status", "4xx"),
        ("outcome", "refused"),
        ("error_code", "model_not_found"),
    ];
    assert_eq!(s.value(REQUESTS, &refused), Some(2.0), "{}", s.text);
    assert_eq!(s.sum(REQUESTS, &[("model", "qwen2.5")]), 1.0);
    assert_eq!(s.sum("switchyard_request_duration_seconds_count", &[]), 9.0);
    // Only the stream has a time to first token.
    assert_eq!(
        s.sum(
            "switchyard_time_to_first_token_seconds_count",
            &[("model", "qwen2.5")]
        ),
        1.0
    );
    assert_eq!(
        s.sum("switchyard_time_to_first_token_seconds_count", &[]),
        1.0
    );
    assert_eq!(s.value("switchyard_build_info", &[]), Some(1.0));
    assert!(s.value("process_resident_memory_bytes", &[]).unwrap() > 1e6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_read_from_each_format_as_the_response_passes() {
    let seven = mock(
        MockConfig::new("seven")
            .ttft(Duration::ZERO)
            .token_gap(Duration::from_millis(1))
            .tokens(7),
    )
    .await;
    let (proxy, admin) = start(
        |addr| {
            Fleet::new(addr)
                .pool(chat_pool(&[&seven]))
                .route("chat", &[])
        },
        None,
    )
    .await;
    let client = client();
    // Three words of prompt each: an OpenAI stream, a whole OpenAI answer,
    // an Ollama NDJSON stream, a whole Ollama answer, an Anthropic stream.
    let messages = r#""messages":[{"role":"user","content":"one two three"}]"#;
    for (path, extra) in [
        (
            "/v1/chat/completions",
            r#""stream":true,"stream_options":{"include_usage":true}"#,
        ),
        ("/v1/chat/completions", r#""stream":false"#),
        ("/api/chat", r#""stream":true"#),
        ("/api/chat", r#""stream":false"#),
        ("/v1/messages", r#""stream":true,"max_tokens":64"#),
    ] {
        let body = format!(r#"{{"model":"llama3",{extra},{messages}}}"#);
        let resp = post_json(&client, &proxy.url(path), &body).await;
        assert_eq!(resp.status(), 200, "{path} {extra}");
        resp.bytes().await.unwrap();
    }
    let labels = |kind| {
        [
            ("pool", "chat"),
            ("backend", "seven"),
            ("model", "llama3"),
            ("kind", kind),
            ("source", "reported"),
        ]
    };
    let s = scrape_until(admin, None, "five requests", |s| {
        s.sum(REQUESTS, &[]) >= 5.0
    })
    .await;
    let tokens = "switchyard_tokens_total";
    assert_eq!(
        s.value(tokens, &labels("completion")),
        Some(35.0),
        "{}",
        s.text
    );
    assert_eq!(s.value(tokens, &labels("prompt")), Some(15.0), "{}", s.text);
    assert_eq!(s.sum(tokens, &[("source", "estimated")]), 0.0);
    // Time per output token for the three streams: 7 tokens each.
    assert_eq!(
        s.sum("switchyard_time_per_output_token_seconds_count", &[]),
        3.0,
        "{}",
        s.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_outcome_and_reason() {
    // Each failure in a pool of its own, reached by its model.
    let any = || {
        MockConfig::new("")
            .models(Vec::<String>::new())
            .ttft(Duration::ZERO)
    };
    let busy = mock(any().name("busy").fail_with(503)).await;
    let spare = mock(any().name("spare")).await;
    let broken = mock(any().name("broken").fail_with(500)).await;
    let cut = mock(
        any()
            .name("cut")
            .failure(Failure::DropMidStream { after_tokens: 2 }),
    )
    .await;
    let slow = mock(
        any()
            .name("slow")
            .token_gap(Duration::from_millis(200))
            .tokens(100),
    )
    .await;
    let backend = |m: &MockServer, model: &str| Backend::of(m).set("models", vec![model]);
    let (proxy, admin) = start(
        |addr| {
            Fleet::new(addr)
                .pool(
                    Pool::new("flaky")
                        .set("strategy", "priority")
                        .backend(backend(&busy, "flaky").set("priority", 9))
                        .backend(backend(&spare, "flaky")),
                )
                .pool(Pool::new("broken").backend(backend(&broken, "broken")))
                .pool(Pool::new("cut").backend(backend(&cut, "cut")))
                .pool(Pool::new("slow").backend(backend(&slow, "slow")))
                .route("flaky", &[("model", "flaky")])
                .route("broken", &[("model", "broken")])
                .route("cut", &[("model", "cut")])
                .route("slow", &[("model", "slow")])
        },
        None,
    )
    .await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    // 503 from the first backend, retried on the second.
    assert_eq!(
        chat(&client, &url, "flaky").await.unwrap(),
        (200, "spare".into())
    );
    // A 500 is passed on: the backend's error, not Switchyard's.
    assert_eq!(chat(&client, &url, "broken").await.unwrap().0, 500);
    // A stream cut by its backend ends with an error event.
    let stream = |model: &str| {
        format!(
            r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    };
    // Its own client: Pingora closes a connection whose stream failed, and
    // a request reusing it could race that close.
    let (status, chunks) = stream_chunks(&common::client(), &url, &stream("cut")).await;
    assert_eq!(status, 200);
    assert!(
        body_text(&chunks).contains("backend_error"),
        "{}",
        body_text(&chunks)
    );
    // A client that leaves in the middle of a stream.
    let mut resp = post_json(&client, &url, &stream("slow")).await;
    assert!(resp.chunk().await.unwrap().is_some());
    drop(resp);

    // A request's counters are updated one family after another, and a
    // scrape reads them one after another: wait for the last of each.
    let s = scrape_until(admin, None, "four requests", |s| {
        s.sum(REQUESTS, &[]) >= 4.0
            && s.sum("switchyard_client_cancellations_total", &[]) >= 1.0
            && s.sum("switchyard_stream_errors_total", &[]) >= 1.0
    })
    .await;
    let request = |pool: &str, labels: &[(&str, &str)]| {
        let mut all = vec![("pool", pool)];
        all.extend_from_slice(labels);
        s.value(REQUESTS, &all)
    };
    assert_eq!(
        s.value(
            "switchyard_retries_total",
            &[("pool", "flaky"), ("reason", "status")]
        ),
        Some(1.0)
    );
    assert_eq!(
        request(
            "flaky",
            &[("backend", "spare"), ("outcome", "ok"), ("status", "2xx")]
        ),
        Some(1.0)
    );
    assert_eq!(
        request(
            "broken",
            &[
                ("status", "5xx"),
                ("outcome", "backend_error"),
                ("error_code", "")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        request(
            "cut",
            &[
                ("status", "2xx"),
                ("outcome", "backend_error"),
                ("error_code", "backend_error")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "switchyard_stream_errors_total",
            &[("pool", "cut"), ("error_code", "backend_error")]
        ),
        Some(1.0)
    );
    assert_eq!(
        request(
            "slow",
            &[("status", "2xx"), ("outcome", "client_cancelled")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "switchyard_client_cancellations_total",
            &[("pool", "slow"), ("phase", "during_response")]
        ),
        Some(1.0)
    );
    assert_eq!(s.sum(REQUESTS, &[]), 4.0, "{}", s.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_shows_as_down() {
    let m = mocks(2).await;
    let (_proxy, admin) = start(
        |addr| {
            Fleet::new(addr)
                .pool(chat_pool(&[&m[0], &m[1]]).http_checks("200ms"))
                .route("chat", &[])
        },
        None,
    )
    .await;
    let up = |s: &Scrape, b: &str| s.value("switchyard_backend_up", &[("backend", b)]);
    let s = scrape(&client(), admin, None).await;
    assert_eq!((up(&s, "b0"), up(&s, "b1")), (Some(1.0), Some(1.0)));
    let mut m = m;
    m.pop().unwrap().shutdown().await;
    let s = scrape_until(admin, None, "b1 down", |s| up(s, "b1") == Some(0.0)).await;
    assert_eq!(up(&s, "b0"), Some(1.0));
    let circuit = |state: &str| {
        s.value(
            "switchyard_backend_circuit_state",
            &[("backend", "b0"), ("state", state)],
        )
    };
    assert_eq!(
        (circuit("closed"), circuit("open"), circuit("half_open")),
        (Some(1.0), Some(0.0), Some(0.0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_shows_while_a_slow_backend_holds_its_slot() {
    let slow = mock(
        MockConfig::new("slow")
            .ttft(Duration::from_millis(1500))
            .tokens(1),
    )
    .await;
    let (proxy, admin) = start(
        |addr| {
            Fleet::new(addr)
                .pool(
                    Pool::new("chat")
                        .backend(Backend::of(&slow).set("max_in_flight", 1))
                        .set("queue.timeout", "30s"),
                )
                .route("chat", &[])
        },
        None,
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { chat(&client(), &url, "llama3").await })
        })
        .collect();
    let s = scrape_until(admin, None, "two requests queued", |s| {
        s.value("switchyard_queue_depth_requests", &[("pool", "chat")]) == Some(2.0)
    })
    .await;
    assert_eq!(
        s.value(
            "switchyard_backend_in_flight_requests",
            &[("backend", "slow")]
        ),
        Some(1.0)
    );
    assert_eq!(s.value("switchyard_in_flight_requests", &[]), Some(3.0));
    for r in requests {
        assert_eq!(r.await.unwrap().unwrap().0, 200);
    }
    let s = scrape_until(admin, None, "three requests counted", |s| {
        s.sum(REQUESTS, &[]) >= 3.0
    })
    .await;
    assert_eq!(
        s.value("switchyard_queue_depth_requests", &[("pool", "chat")]),
        Some(0.0)
    );
    // The first was admitted at once; the two others waited.
    assert_eq!(
        s.value("switchyard_queue_wait_seconds_count", &[("pool", "chat")]),
        Some(2.0)
    );
    assert!(
        s.value("switchyard_queue_wait_seconds_sum", &[("pool", "chat")])
            .unwrap()
            > 2.0,
        "the second waited one generation, the third two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_with_the_time_of_the_last_good_one() {
    let m = mocks(2).await;
    let fleet =
        |addr, mock: &MockServer| Fleet::new(addr).pool(chat_pool(&[mock])).route("chat", &[]);
    let (proxy, admin) = start(|addr| fleet(addr, &m[0]), None).await;
    let client = client();
    let reloads =
        |s: &Scrape, result: &str| s.value("switchyard_reloads_total", &[("result", result)]);
    let stamp = |s: &Scrape| {
        s.value("switchyard_last_reload_success_timestamp_seconds", &[])
            .unwrap()
    };
    let s = scrape(&client, admin, None).await;
    assert_eq!(
        (reloads(&s, "ok"), reloads(&s, "failed")),
        (Some(0.0), Some(0.0))
    );
    let started = stamp(&s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(started <= now && started > now - 60.0, "{started} {now}");

    // A good reload that also moves the admin listener, which needs a
    // restart: the listener stays where it is.
    let moved = fleet(proxy.addr, &m[1])
        .admin("listen", format!("127.0.0.1:{}", free_port()))
        .yaml();
    std::fs::write(&proxy.config, proxy.with_paths(&moved)).unwrap();
    proxy.signal("HUP");
    proxy.wait_log("reload 2:").await;
    assert!(
        proxy
            .log_text()
            .contains("admin.listen changed but need a restart"),
        "{}",
        proxy.log_text()
    );
    let s = scrape(&client, admin, None).await;
    assert_eq!(
        (reloads(&s, "ok"), reloads(&s, "failed")),
        (Some(1.0), Some(0.0))
    );
    let reloaded = stamp(&s);
    assert!(reloaded > started, "{reloaded} > {started}");

    std::fs::write(&proxy.config, "pools: [").unwrap();
    proxy.signal("HUP");
    proxy.wait_log("reload failed").await;
    let s = scrape(&client, admin, None).await;
    assert_eq!(
        (reloads(&s, "ok"), reloads(&s, "failed")),
        (Some(1.0), Some(1.0))
    );
    assert_eq!(stamp(&s), reloaded, "a failed reload is not a good one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_opened_are_the_backends_accepts_the_rest_reused() {
    let m = mocks(1).await;
    let (proxy, admin) = start(
        |addr| {
            Fleet::new(addr)
                .pool(chat_pool(&[&m[0]]))
                .route("chat", &[])
        },
        None,
    )
    .await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..10 {
        assert_eq!(chat(&client, &url, "llama3").await.unwrap().0, 200);
    }
    let s = scrape_until(admin, None, "ten requests", |s| {
        s.sum(REQUESTS, &[]) >= 10.0
    })
    .await;
    let kind = |k: &str| {
        s.value("switchyard_upstream_connections_total", &[("kind", k)])
            .unwrap_or(0.0)
    };
    // Health checks are off and the model lists fixed: every connection
    // the backend accepted was opened for a request.
    assert_eq!(kind("opened"), m[0].stats().connections() as f64);
    assert_eq!(kind("opened") + kind("reused"), 10.0, "{}", s.text);
    assert!(kind("reused") >= 1.0, "{}", s.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_required_and_a_reload_changes_it() {
    let m = mocks(1).await;
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let (proxy, admin) = start(
        |addr| {
            Fleet::new(addr)
                .pool(chat_pool(&[&m[0]]))
                .route("chat", &[])
                .admin("token_file", file.display().to_string())
        },
        Some(TOKEN),
    )
    .await;
    let client = client();
    for token in [None, Some("not-the-token-not-the-token")] {
        let (status, body) = fetch(&client, admin, "/metrics", token).await.unwrap();
        assert_eq!(status, 401, "{body}");
        let (_, _, code) = error_fields(body.as_bytes());
        assert_eq!(code, "unauthorized");
    }
    let (status, body) = fetch(&client, admin, "/metrics", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("switchyard_requests_total") || body.contains("switchyard_build_info"));
    let (status, body) = fetch(&client, admin, "/nope", Some(TOKEN)).await.unwrap();
    assert_eq!(status, 404, "{body}");
    // The proxy's own listener has no admin pages.
    let (status, _) = fetch(&client, proxy.addr, "/metrics", Some(TOKEN))
        .await
        .unwrap();
    assert_ne!(status, 200);

    let next = "a-new-token-after-the-reload";
    std::fs::write(&file, next).unwrap();
    proxy.signal("HUP");
    proxy.wait_log("reload 2:").await;
    let status = |t| {
        let client = client.clone();
        async move { fetch(&client, admin, "/metrics", Some(t)).await.unwrap().0 }
    };
    assert_eq!((status(TOKEN).await, status(next).await), (401, 200));
    let log = proxy.log_text();
    assert!(!log.contains(TOKEN) && !log.contains(next), "{log}");
}

#[test]
fn check_refuses_an_open_admin_beyond_loopback_and_one_on_the_proxy_port() {
    let proxy: SocketAddr = "127.0.0.1:18080".parse().unwrap();
    let yaml = |admin: &str| {
        format!(
            "server:\n  listen: [\"{proxy}\"]\n\
             pools:\n  chat:\n    backends: [{{ url: \"http://127.0.0.1:9\" }}]\n\
             admin: {{ {admin} }}\n"
        )
    };
    let (code, out) = check_config(&yaml("listen: \"0.0.0.0:19100\""), &[]);
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains("admin.listen: \"0.0.0.0:19100\" is not a loopback address"),
        "{out}"
    );
    let (code, out) = check_config(&yaml(&format!("listen: \"{proxy}\"")), &[]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("is also where the proxy listens"), "{out}");

    let with_env = yaml("listen: \"0.0.0.0:19100\", token_env: SWITCHYARD_METRICS_TEST_TOKEN");
    let (code, out) = check_config(&with_env, &[]);
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains(
            "admin.token_env: environment variable SWITCHYARD_METRICS_TEST_TOKEN is not set"
        ),
        "{out}"
    );
    let (code, out) = check_config(&with_env, &[("SWITCHYARD_METRICS_TEST_TOKEN", TOKEN)]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(TOKEN), "{out}");
}

/// A tool from Debian's `prometheus` package, or a failure saying how to
/// install it.
fn tool(name: &str) -> &'static str {
    let path = match name {
        "promtool" => "/usr/bin/promtool",
        _ => "/usr/bin/prometheus",
    };
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's prometheus package \
         (`apt-get install -y prometheus`, as root), which .ci/run installs"
    );
    path
}

/// Traffic of every kind the metrics tell apart: served, refused, streamed.
async fn mixed_traffic(proxy: &Proxy) {
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(chat(&client, &url, "llama3").await.unwrap().0, 200);
    assert_eq!(chat(&client, &url, "unknown").await.unwrap().0, 404);
    let (status, _) = stream_chunks(
        &client,
        &url,
        r#"{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_wrong_with_a_scrape() {
    let promtool = tool("promtool");
    let m = mocks(1).await;
    let (proxy, admin) = start(
        |addr| {
            Fleet::new(addr)
                .pool(chat_pool(&[&m[0]]))
                .route("chat", &[])
        },
        None,
    )
    .await;
    mixed_traffic(&proxy).await;
    let s = scrape_until(admin, None, "three requests", |s| {
        s.sum(REQUESTS, &[]) >= 3.0
    })
    .await;
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = check.stdin.take().unwrap();
        stdin.write_all(s.text.as_bytes()).unwrap();
    }
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.text
    );
}

/// A Prometheus server on loopback, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second with the token in
    /// `token_file`. Prometheus cannot listen on port 0 and say where, so
    /// a free port is picked, and another one if it was taken meanwhile.
    async fn start(target: SocketAddr, token_file: &Path) -> Prometheus {
        let bin = tool("prometheus");
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global: {{ scrape_interval: 1s, scrape_timeout: 1s }}\n\
                     scrape_configs:\n\
                     \x20 - job_name: switchyard\n\
                     \x20   authorization: {{ credentials_file: {:?} }}\n\
                     \x20   static_configs: [{{ targets: [\"{target}\"] }}]\n",
                    token_file.display()
                ),
            )
            .unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new(bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut server = Prometheus { child, addr, dir };
            if server.ready().await {
                return server;
            }
            let log = server.log();
            assert!(
                log.contains("address already in use"),
                "prometheus exited:\n{log}"
            );
        }
        panic!("no free port for prometheus in five tries");
    }

    /// Waits until it answers `/-/ready` (true) or exits (false).
    async fn ready(&mut self) -> bool {
        let client = client();
        let url = format!("http://{}/-/ready", self.addr);
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus was not ready after 60s:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query that returns one sample.
    async fn query(&self, query: &str) -> Option<f64> {
        let resp = client()
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log:\n{}", self.log());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_request_counter_as_it_grows() {
    let m = mocks(1).await;
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let (proxy, admin) = start(
        |addr| {
            Fleet::new(addr)
                .pool(chat_pool(&[&m[0]]))
                .route("chat", &[])
                .admin("token_file", token_file.display().to_string())
        },
        Some(TOKEN),
    )
    .await;
    let prometheus = Prometheus::start(admin, &token_file).await;
    let up = "up{job=\"switchyard\"}";
    let requests = "sum(switchyard_requests_total{job=\"switchyard\"}) or vector(0)";
    let within = Duration::from_secs(60);
    wait_until(
        within,
        "prometheus to scrape the admin listener",
        || async { prometheus.query(up).await == Some(1.0) },
    )
    .await;
    let before = prometheus.query(requests).await.unwrap_or(0.0);
    mixed_traffic(&proxy).await;
    wait_until(within, "prometheus to see three more requests", || async {
        prometheus.query(requests).await == Some(before + 3.0)
    })
    .await;
}
