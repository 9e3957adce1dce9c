//! The admin listener's `/status` and its page, with real processes: the
//! JSON after known traffic (counts, tokens, time to first token, in
//! flight), a killed backend turning down, a circuit opening, reloads
//! applied and refused, an attempt retried elsewhere counted against its
//! backend; then the page in a real headless Chromium, which must show
//! every backend, an ejected one, and see a killed one go down.
//!
//! Chromium comes from Debian's `chromium` package; the page's test fails,
//! saying so, where it is missing.

mod common;

use common::scrape::{fetch, scrape};
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "status-test-token-0123456789";

/// The interval of the fast health checks the tests use.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// A running proxy with its admin listener.
struct Running {
    proxy: Proxy,
    admin: SocketAddr,
    /// Holds the token file, which every reload reads again.
    _secrets: tempfile::TempDir,
}

/// Starts the proxy for `fleet`, with the admin listener on a free port
/// behind [`TOKEN`]; returns once `/status` answers.
async fn start(fleet: impl Fn(SocketAddr) -> Fleet) -> Running {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = Proxy::start(|addr| {
        fleet(addr)
            .admin("listen", admin.to_string())
            .admin("token_file", token_file.display().to_string())
            .yaml()
    })
    .await;
    let client = client();
    wait_until(DEADLINE, "the admin listener", || async {
        fetch(&client, admin, "/status", Some(TOKEN))
            .await
            .is_ok_and(|(status, _)| status == 200)
    })
    .await;
    Running {
        proxy,
        admin,
        _secrets: secrets,
    }
}

/// `GET /status`, parsed.
async fn status(admin: SocketAddr) -> Value {
    let (code, body) = fetch(&client(), admin, "/status", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The backend called `name`, in whatever pool.
fn backend<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["backends"].as_array().unwrap())
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no backend {name} in {status:#}"))
}

/// Polls `/status` until `done` holds, and returns that document.
async fn status_until(admin: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let s = status(admin).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}; last /status:\n{s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A streamed chat for `model`, with its usage reported; returns its status.
async fn stream(client: &reqwest::Client, proxy: &Proxy, model: &str) -> u16 {
    let body = format!(
        r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let (code, chunks) = stream_chunks(client, &proxy.url("/v1/chat/completions"), &body).await;
    assert!(
        body_text(&chunks).contains("[DONE]"),
        "{}",
        body_text(&chunks)
    );
    code
}

/// Rewrites the proxy's configuration file with `change` and sends SIGHUP.
fn reload(proxy: &Proxy, change: impl FnOnce(&mut serde_yaml::Value)) {
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&proxy.config).unwrap()).unwrap();
    change(&mut doc);
    std::fs::write(&proxy.config, serde_yaml::to_string(&doc).unwrap()).unwrap();
    proxy.signal("HUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_backend_and_follows_the_fleet() {
    let b0 = mock(
        MockConfig::new("b0")
            .models(["llama3"])
            .ttft(Duration::from_millis(60))
            .tokens(5),
    )
    .await;
    let b1 = mock(MockConfig::new("b1").models(["qwen"]).tokens(3)).await;
    // Drops every generation: its circuit opens. Its pool has no active
    // checks, whose passing would close the circuit again at once.
    let b2 = mock(
        MockConfig::new("b2")
            .models(["mistral"])
            .failure(Failure::DropMidStream { after_tokens: 0 }),
    )
    .await;
    let running = start(|addr| {
        Fleet::new(addr)
            .pool(
                Pool::new("chat")
                    .http_checks("200ms")
                    .backend(
                        Backend::of(&b0)
                            .set("models", vec!["llama3"])
                            .set("max_in_flight", 2),
                    )
                    .backend(Backend::of(&b1).set("models", vec!["qwen"])),
            )
            .pool(
                Pool::new("batch")
                    .set("circuit.consecutive_failures", 2)
                    .set("circuit.cooldown", "60s")
                    .set("retries", 0)
                    .backend(Backend::of(&b2).set("models", vec!["mistral"])),
            )
            .route("batch", &[("model", "mistral")])
            .route("chat", &[])
    })
    .await;
    let (proxy, admin) = (&running.proxy, running.admin);
    let client = client();

    // The JSON needs the token; the page, which holds no data, does not.
    let (code, _) = fetch(&client, admin, "/status", None).await.unwrap();
    assert_eq!(code, 401);
    let (code, _) = fetch(&client, admin, "/status", Some("wrong-token-wrong-token"))
        .await
        .unwrap();
    assert_eq!(code, 401);
    let (code, page) = fetch(&client, admin, "/status/", None).await.unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<title>Switchyard status</title>"));

    // The shape: pools, backends, routes, configuration.
    let s = status_until(admin, "the first health checks", |s| {
        backend(s, "b0")["last_check"].is_object() && backend(s, "b1")["last_check"].is_object()
    })
    .await;
    let names: Vec<&str> = s["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["batch", "chat"], "pools in name order");
    let pool = &s["pools"][1];
    assert_eq!(
        (&pool["strategy"], &pool["health_check"], &pool["queued"]),
        (&"round_robin".into(), &"http".into(), &0.into())
    );
    for (name, m) in [("b0", &b0), ("b1", &b1)] {
        let b = backend(&s, name);
        assert_eq!(b["url"], m.url());
        assert_eq!((&b["state"], &b["healthy"]), (&"up".into(), &true.into()));
        assert_eq!(b["last_check"]["error"], Value::Null);
        assert_eq!(b["circuit"]["state"], "closed");
        assert_eq!((&b["weight"], &b["in_flight"]), (&1.into(), &0.into()));
    }
    assert_eq!(backend(&s, "b0")["max_in_flight"], 2);
    assert_eq!(backend(&s, "b0")["models"], serde_json::json!(["llama3"]));
    assert_eq!(s["routes"][0]["model"], "mistral");
    assert_eq!(s["routes"][0]["pool"], "batch");
    assert_eq!(s["routes"][1]["pool"], "chat");
    assert_eq!(s["config"]["generation"], 1);
    assert_eq!(
        s["config"]["path"],
        proxy.config.display().to_string().as_str()
    );
    assert_eq!(s["config"]["last_reload"], Value::Null);

    // Known traffic: three streams to b0, two answers from b1.
    for _ in 0..3 {
        assert_eq!(stream(&client, proxy, "llama3").await, 200);
    }
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..2 {
        assert_eq!(
            chat(&client, &url, "qwen").await.unwrap(),
            (200, "b1".to_string())
        );
    }
    let s = status_until(admin, "five requests in the windows", |s| {
        backend(s, "b0")["last_minute"]["requests"] == 3
            && backend(s, "b1")["last_minute"]["requests"] == 2
    })
    .await;
    let w0 = &backend(&s, "b0")["last_minute"];
    let w1 = &backend(&s, "b1")["last_minute"];
    assert_eq!((&w0["errors"], &w0["error_rate"]), (&0.into(), &0.0.into()));
    let p50 = w0["ttft_p50_ms"].as_f64().unwrap();
    let p95 = w0["ttft_p95_ms"].as_f64().unwrap();
    // The mock waits 60 ms before its first token; a bucket is 26% wide.
    assert!((45.0..5000.0).contains(&p50) && p95 >= p50, "{w0}");
    assert_eq!(w1["ttft_p50_ms"], Value::Null, "b1 streamed nothing");
    let rate = w0["requests_per_s"].as_f64().unwrap();
    let seconds = w0["seconds"].as_f64().unwrap();
    assert!((rate - 3.0 / seconds).abs() < 1e-9, "{w0}");
    // Tokens: what the metrics counted for each backend, exactly.
    let m = scrape(&client, admin, Some(TOKEN)).await;
    for (name, w) in [("b0", w0), ("b1", w1)] {
        let counted = m.sum(
            "switchyard_tokens_total",
            &[("backend", name), ("kind", "completion")],
        );
        assert!(counted > 0.0, "{}", m.text);
        assert_eq!(w["tokens"].as_f64(), Some(counted), "{name}: {w}");
    }
    assert_eq!(w0["tokens"], 15, "five tokens a stream");

    // In flight: a slow stream holds one of b0's two slots.
    b0.set_timing(Duration::from_secs(30), Duration::ZERO, 1);
    let slow = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            post_json(
                &client,
                &url,
                r#"{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            )
            .await
        })
    };
    let s = status_until(admin, "b0 to hold a request", |s| {
        backend(s, "b0")["in_flight"] == 1
    })
    .await;
    assert_eq!(s["requests_in_flight"], 1);
    slow.abort();
    status_until(admin, "the slot back", |s| {
        backend(s, "b0")["in_flight"] == 0
    })
    .await;

    // A circuit opened by failed requests: ejected, with when it may close.
    for _ in 0..2 {
        let (code, _) = chat(&client, &url, "mistral").await.unwrap();
        assert_eq!(code, 502);
    }
    let s = status_until(admin, "b2 ejected", |s| {
        backend(s, "b2")["state"] == "ejected"
    })
    .await;
    let b = backend(&s, "b2");
    assert_eq!(b["circuit"]["state"], "open");
    let closes = b["circuit"]["closes_in_s"].as_f64().unwrap();
    assert!((0.0..=60.0).contains(&closes), "{b}");
    assert_eq!(b["healthy"], true, "its pool has no active checks");
    assert_eq!(
        (&b["last_minute"]["errors"], &b["last_minute"]["error_rate"]),
        (&2.into(), &1.0.into())
    );

    // A killed backend turns down within a few checks, with the error.
    let killed = Instant::now();
    b1.shutdown().await;
    let s = status_until(admin, "b1 down", |s| backend(s, "b1")["state"] == "down").await;
    let took = killed.elapsed();
    // Within a few checks; the bound leaves room for a loaded machine.
    assert!(took < CHECK_EVERY * 50, "down after {took:?}");
    let b = backend(&s, "b1");
    assert!(
        b["last_check"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{b}"
    );
    assert_eq!(b["last_failed_check"]["error"], b["last_check"]["error"]);
    assert_eq!(backend(&s, "b0")["state"], "up");

    // A reload refused, with every error; then one applied.
    reload(proxy, |doc| doc["pools"]["chat"]["retries"] = 99.into());
    let s = status_until(admin, "the failed reload", |s| {
        s["config"]["last_failed_reload"].is_object()
    })
    .await;
    let errors = &s["config"]["last_failed_reload"]["errors"];
    assert!(
        errors[0].as_str().unwrap().contains("pools.chat.retries"),
        "{errors}"
    );
    assert_eq!(s["config"]["generation"], 1);
    reload(proxy, |doc| {
        doc["pools"]["chat"]["retries"] = 1.into();
        doc["pools"]["chat"]["backends"][0]["weight"] = 3.into();
    });
    let s = status_until(admin, "the reload", |s| s["config"]["generation"] == 2).await;
    let r = &s["config"]["last_reload"];
    assert_eq!(r["generation"], 2);
    assert!(r["summary"].as_str().unwrap().contains("chat"), "{r}");
    assert_eq!(r["needs_restart"], serde_json::json!([]));
    let b = backend(&s, "b0");
    assert_eq!(b["weight"], 3);
    assert_eq!(
        b["last_minute"]["requests"], 4,
        "the last minute follows the backend through the reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_retried_elsewhere_counts_against_its_backend() {
    let bad = mock(MockConfig::new("bad").models(["llama3"]).fail_with(503)).await;
    let good = mock(MockConfig::new("good").models(["llama3"]).tokens(2)).await;
    let running = start(|addr| {
        Fleet::new(addr).pool(
            Pool::new("chat")
                .backend(Backend::of(&bad).set("models", vec!["llama3"]))
                .backend(Backend::of(&good).set("models", vec!["llama3"])),
        )
    })
    .await;
    let client = client();
    let url = running.proxy.url("/v1/chat/completions");
    // One of the two goes to `bad` first, whose 503 is retried on `good`.
    for _ in 0..2 {
        assert_eq!(
            chat(&client, &url, "llama3").await.unwrap(),
            (200, "good".to_string())
        );
    }
    let s = status_until(running.admin, "both requests in the windows", |s| {
        backend(s, "good")["last_minute"]["requests"] == 2
    })
    .await;
    let (bad, good) = (
        &backend(&s, "bad")["last_minute"],
        &backend(&s, "good")["last_minute"],
    );
    assert_eq!(
        (&bad["requests"], &bad["errors"]),
        (&1.into(), &1.into()),
        "{s:#}"
    );
    assert_eq!((&good["requests"], &good["errors"]), (&2.into(), &0.into()));
}

/// The Chromium to drive: `SWITCHYARD_CHROMIUM`, or `chromium` on the
/// `PATH`. Missing, the test fails saying what to install.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_CHROMIUM") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let exe = dir.join(name);
            if exe.is_file() {
                return exe;
            }
        }
    }
    panic!(
        "the status page test needs a headless Chromium: install Debian's `chromium` \
         package (apt-get install --no-install-recommends chromium), or set \
         SWITCHYARD_CHROMIUM to a Chromium or Chrome binary"
    );
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`,
/// `--screenshot=...`) after its scripts have had `budget` of virtual
/// time; returns what it printed. Killed if it takes longer than a minute.
async fn headless(profile: &Path, url: &str, args: &[&str], budget: Duration) -> String {
    let run = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("chromium finished within a minute")
        .expect("chromium started");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each backend row of a dumped page: its name and state, from the
/// row's `data-backend` and `data-state`.
fn rows(dom: &str) -> Vec<(String, String)> {
    let attr = |text: &str, name: &str| -> Option<String> {
        let start = text.find(&format!("{name}=\""))? + name.len() + 2;
        let len = text[start..].find('"')?;
        Some(text[start..start + len].to_string())
    };
    dom.split("<tr ")
        .skip(1)
        .filter_map(|row| {
            let tag = &row[..row.find('>')?];
            Some((attr(tag, "data-backend")?, attr(tag, "data-state")?))
        })
        .collect()
}

/// The markup of `backend`'s row.
fn row_of<'a>(dom: &'a str, backend: &str) -> &'a str {
    let start = dom
        .find(&format!("data-backend=\"{backend}\""))
        .unwrap_or_else(|| panic!("no row of {backend}: {dom}"));
    let len = dom[start..].find("</tr>").unwrap_or(dom.len() - start);
    &dom[start..start + len]
}

/// Dumps the page until `done` holds for its rows; returns that dump.
async fn page_until(
    profile: &Path,
    url: &str,
    what: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> String {
    let end = Instant::now() + DEADLINE * 3;
    loop {
        let dom = headless(profile, url, &["--dump-dom"], Duration::from_secs(3)).await;
        if done(&rows(&dom)) {
            return dom;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what} on the page; last rows {:?}, page:\n{dom}",
            rows(&dom)
        );
    }
}

const QWEN: &str = "Qwen/Qwen2.5-7B-Instruct";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_every_backend_and_a_killed_one_goes_down() {
    // Fail at once, saying what to install, rather than after the setup.
    chromium();
    // An Ollama pool with health checks, and a vLLM-like pool without,
    // where a backend that drops its requests gets its circuit opened.
    let models = [
        vec!["llama3.1:8b", "qwen2.5-coder:7b"],
        vec!["llama3.1:8b", "mistral:7b"],
        vec!["qwen2.5-coder:7b"],
    ];
    let mut ollama = Vec::new();
    for (i, list) in models.iter().enumerate() {
        let cfg = MockConfig::new(format!("gpu-{}", i + 1))
            .models(list.iter().copied())
            .ttft(Duration::from_millis(40 + 120 * i as u64))
            .token_gap(Duration::from_millis(2))
            .tokens(24);
        ollama.push(mock(cfg).await);
    }
    let vllm = [
        mock(
            MockConfig::new("vllm-1")
                .models([QWEN])
                .ttft(Duration::from_millis(90))
                .tokens(40),
        )
        .await,
        mock(
            MockConfig::new("vllm-2")
                .models([QWEN])
                .failure(Failure::DropMidStream { after_tokens: 0 }),
        )
        .await,
    ];
    let running = start(|addr| {
        let pool = ollama.iter().enumerate().fold(
            Pool::new("ollama").http_checks("200ms"),
            |pool, (i, m)| {
                let mut b = Backend::of(m).set("max_in_flight", 4);
                if i == 0 {
                    b = b.set("weight", 2);
                }
                pool.backend(b)
            },
        );
        let batch = vllm.iter().fold(
            Pool::new("vllm")
                .set("circuit.consecutive_failures", 1)
                .set("circuit.cooldown", "5m"),
            |pool, m| {
                pool.backend(
                    Backend::of(m)
                        .set("models", vec![QWEN])
                        .set("max_in_flight", 16),
                )
            },
        );
        Fleet::new(addr)
            .pool(pool.set("strategy", "least_connections"))
            .pool(batch)
            .route("vllm", &[("model", "Qwen/*")])
            .route("ollama", &[])
    })
    .await;
    let (proxy, admin) = (&running.proxy, running.admin);
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{admin}/status/#token={TOKEN}");

    // Every backend, up, as soon as the page has drawn.
    let names: Vec<String> = ollama
        .iter()
        .chain(&vllm)
        .map(|m| m.name().to_string())
        .collect();
    let dom = page_until(profile.path(), &url, "every backend up", |rows| {
        names
            .iter()
            .all(|n| rows.iter().any(|(b, state)| b == n && state == "up"))
    })
    .await;
    assert!(
        dom.contains("Pool ollama") && dom.contains("Pool vllm"),
        "{dom}"
    );
    assert!(dom.contains(r#"id="live" class="ok""#), "{dom}");

    // Without the token the page asks for it, and shows nothing.
    let bare = format!("http://{admin}/status/");
    let dom = headless(
        profile.path(),
        &bare,
        &["--dump-dom"],
        Duration::from_secs(2),
    )
    .await;
    assert!(dom.contains(r#"<section id="login">"#), "{dom}");
    assert!(rows(&dom).is_empty(), "{dom}");

    // vllm-2 drops what it is sent (a 502 for its client): ejected.
    let client = client();
    let url_chat = proxy.url("/v1/chat/completions");
    let mut codes = Vec::new();
    for _ in 0..2 {
        codes.push(chat(&client, &url_chat, QWEN).await.unwrap().0);
    }
    codes.sort();
    assert_eq!(codes, [200, 502], "one to each in turn");
    page_until(profile.path(), &url, "vllm-2 ejected", |rows| {
        rows.iter()
            .any(|(b, state)| b == "vllm-2" && state == "ejected")
    })
    .await;

    // Some traffic, three at a time, so the figures have something to show.
    for round in 0..5 {
        let streams =
            ["llama3.1:8b", "qwen2.5-coder:7b", QWEN].map(|model| stream(&client, proxy, model));
        for code in futures_util::future::join_all(streams).await {
            assert_eq!(code, 200, "round {round}");
        }
    }

    // A backend killed while the page is open goes down on it.
    let killed = ollama.pop().unwrap();
    let gone = killed.name().to_string();
    killed.shutdown().await;
    let dom = page_until(profile.path(), &url, "the killed backend down", |rows| {
        rows.iter().any(|(b, state)| *b == gone && state == "down")
            && rows.iter().filter(|(_, state)| state == "up").count() == ollama.len() + 1
    })
    .await;
    let row = row_of(&dom, &gone);
    assert!(
        row.to_lowercase().contains("refused"),
        "the check's error is shown: {row}"
    );
    assert!(row_of(&dom, "vllm-2").contains("circuit open"), "{dom}");

    // A picture of it, for the README when asked for, with requests in
    // flight: the backends left answer slowly for a while.
    for m in ollama.iter().chain(&vllm[..1]) {
        m.set_timing(Duration::from_secs(30), Duration::ZERO, 1);
    }
    let held: Vec<_> = ["llama3.1:8b", "llama3.1:8b", "qwen2.5-coder:7b", QWEN, QWEN]
        .into_iter()
        .map(|model| {
            let (client, url) = (client.clone(), url_chat.clone());
            let body = format!(
                r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#
            );
            tokio::spawn(async move { post_json(&client, &url, &body).await })
        })
        .collect();
    status_until(admin, "five requests held", |s| {
        s["requests_in_flight"] == 5
    })
    .await;
    let shot = profile.path().join("status.png");
    headless(
        profile.path(),
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,800",
            "--hide-scrollbars",
        ],
        Duration::from_secs(3),
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    if let Some(to) = std::env::var_os("SWITCHYARD_STATUS_SCREENSHOT") {
        std::fs::write(&to, &png).unwrap();
    }
    for request in held {
        request.abort();
    }
}
