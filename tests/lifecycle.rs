//! Zero-loss lifecycle with real processes and real signals: SIGHUP reload,
//! SIGTERM graceful shutdown, binary upgrade with `-u` and SIGQUIT.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rewrites the proxy's configuration file and sends SIGHUP, then waits for
/// the reload's log line (the `n`th reload).
async fn reload(proxy: &Proxy, yaml: &str, n: usize) {
    std::fs::write(&proxy.config, proxy.with_paths(yaml)).unwrap();
    proxy.signal("HUP");
    proxy.wait_log(&format!("reload {}:", n + 1)).await;
}

fn pool_of(addr: std::net::SocketAddr, m: &[&MockServer]) -> String {
    one_pool(addr, "round_robin", &backends_yaml(m, &[]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_traffic_to_the_new_backend() {
    let m = mocks(2).await;
    let proxy = Proxy::start(|addr| pool_of(addr, &[&m[0]])).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(chat(&client, &url, "llama3").await.unwrap().1, "b0");

    let pid = proxy.pid();
    let sent = Instant::now();
    reload(&proxy, &pool_of(proxy.addr, &[&m[1]]), 1).await;
    wait_until(Duration::from_secs(5), "traffic on b1", || async {
        chat(&client, &url, "llama3").await.unwrap().1 == "b1"
    })
    .await;
    let moved = sent.elapsed();
    assert!(moved < Duration::from_secs(3), "took {moved:?}");
    for _ in 0..20 {
        assert_eq!(chat(&client, &url, "llama3").await.unwrap().1, "b1");
    }
    assert_eq!(proxy.pid(), pid);
    assert!(proxy.log_text().contains("+chat/b1") && proxy.log_text().contains("-chat/b0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_stream_survives_the_reload_that_removes_its_backend() {
    let slow = mock(paced(
        "slow",
        Duration::from_millis(50),
        Duration::from_millis(300),
        10,
    ))
    .await;
    let other = mocks(1).await;
    let proxy = Proxy::start(|addr| pool_of(addr, &[&slow])).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    let stream = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move { stream_chunks(&client, &url, r#"{"model":"llama3","stream":true}"#).await }
    });
    wait_until(DEADLINE, "the stream to start", || async {
        slow.stats().in_flight() == 1
    })
    .await;
    reload(&proxy, &pool_of(proxy.addr, &[&other[0]]), 1).await;
    // The new backend serves once its first check has passed.
    wait_until(
        DEADLINE,
        "new requests to reach the new backend",
        || async { chat(&client, &url, "llama3").await.unwrap().1 == "b0" },
    )
    .await;

    let (status, chunks) = stream.await.unwrap();
    assert_eq!(status, 200);
    let body = body_text(&chunks);
    for i in 0..10 {
        assert!(body.contains(&format!("tok{i} ")), "token {i} missing");
    }
    assert!(body.trim_end().ends_with("data: [DONE]"));
}

/// Sends requests from `clients` tasks until `stop`; returns (ok, failed).
fn hammer(
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let ok = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (url, stop, ok) = (url.clone(), stop.clone(), ok.clone());
            tasks.push(tokio::spawn(async move {
                // A fresh connection per request: what is measured is the
                // proxy losing requests, not the HTTP/1.1 race of a client
                // reusing an idle connection the server is closing.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut result = chat(&client, &url, "llama3").await;
                    // What every HTTP/1.1 client must do anyway: a connection
                    // the server closed before reading the request (Pingora
                    // drops connections still waiting for their request line
                    // when shutdown begins) is retried once. Any other error,
                    // or an error status, is a failure.
                    let unread = |e: &String| {
                        e.contains("IncompleteMessage") || e.contains("ConnectionReset")
                    };
                    if matches!(&result, Err(e) if unread(e)) {
                        result = chat(&client, &url, "llama3").await;
                    }
                    match result {
                        Ok((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.push(format!("{other:?}")),
                    }
                }
                failures
            }));
        }
        let mut failures = Vec::new();
        for t in tasks {
            failures.extend(t.await.unwrap());
        }
        (ok.load(Ordering::Relaxed), failures)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_nothing() {
    let m = mocks(3).await;
    let proxy = Proxy::start(|addr| pool_of(addr, &[&m[0], &m[1]])).await;
    let a = pool_of(proxy.addr, &[&m[0], &m[1]]);
    let b = pool_of(proxy.addr, &[&m[1], &m[2]]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = hammer(proxy.url("/v1/chat/completions"), 8, stop.clone());
    let start = Instant::now();
    for i in 0..20 {
        reload(&proxy, if i % 2 == 0 { &b } else { &a }, i + 1).await;
    }
    while start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_changes_nothing_until_fixed() {
    let m = mocks(2).await;
    let proxy = Proxy::start(|addr| pool_of(addr, &[&m[0]])).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");

    std::fs::write(&proxy.config, "pools:\n\tchat: {}\n").unwrap();
    proxy.signal("HUP");
    proxy.wait_log("reload failed: YAML").await;
    assert_eq!(chat(&client, &url, "llama3").await.unwrap().1, "b0");

    let semantic = Fleet::new(proxy.addr)
        .pool(Pool::new("chat").set("strategy", "fastest").mocks(&[&m[1]]))
        .route("chat", &[])
        .route("nope", &[])
        .yaml();
    std::fs::write(&proxy.config, proxy.with_paths(&semantic)).unwrap();
    proxy.signal("HUP");
    proxy.wait_log("reload failed: pools.chat.strategy").await;
    let log = proxy.log_text();
    assert!(
        log.contains(r#"routes[1].pool: "nope" is not a pool defined under pools"#),
        "every error is logged:\n{log}"
    );
    assert_eq!(chat(&client, &url, "llama3").await.unwrap().1, "b0");

    reload(&proxy, &pool_of(proxy.addr, &[&m[1]]), 1).await;
    wait_until(DEADLINE, "the fixed file to apply", || async {
        chat(&client, &url, "llama3").await.unwrap().1 == "b1"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_pools_and_routes() {
    let m = mocks(2).await;
    let two_pools = |addr: std::net::SocketAddr, with_code: bool| {
        let mut yaml = format!(
            "server:\n  listen: [\"{addr}\"]\n  threads: 2\npools:\n  chat:\n    health_check: {{ type: none }}\n    backends: [{{ url: \"{}\" }}]\n",
            m[0].url()
        );
        if with_code {
            yaml += &format!(
                "  code:\n    health_check: {{ type: none }}\n    backends: [{{ url: \"{}\" }}]\n",
                m[1].url()
            );
        }
        yaml += "routes:\n";
        if with_code {
            yaml += "  - { path_prefix: /code, pool: code }\n";
        }
        yaml += "  - { path_prefix: /v1, pool: chat }\n";
        yaml
    };
    let proxy = Proxy::start(|addr| two_pools(addr, false)).await;
    let client = client();
    assert_eq!(
        chat(&client, &proxy.url("/code/v1/chat/completions"), "llama3")
            .await
            .unwrap()
            .0,
        404
    );

    reload(&proxy, &two_pools(proxy.addr, true), 1).await;
    assert_eq!(
        chat(&client, &proxy.url("/code/v1/chat/completions"), "llama3")
            .await
            .unwrap()
            .1,
        "b1"
    );
    assert!(proxy.log_text().contains("+pool code"));

    reload(&proxy, &two_pools(proxy.addr, false), 2).await;
    assert_eq!(
        chat(&client, &proxy.url("/code/v1/chat/completions"), "llama3")
            .await
            .unwrap()
            .0,
        404
    );
    assert_eq!(
        chat(&client, &proxy.url("/v1/chat/completions"), "llama3")
            .await
            .unwrap()
            .1,
        "b0"
    );
    assert!(proxy.log_text().contains("-pool code"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_added_by_reload_waits_for_its_first_health_check() {
    let m = mocks(2).await;
    m[1].set_failure(Failure::Status(503));
    let proxy = Proxy::start(|addr| pool_of(addr, &[&m[0]])).await;
    reload(&proxy, &pool_of(proxy.addr, &[&m[0], &m[1]]), 1).await;
    let client = client();
    for _ in 0..30 {
        assert_eq!(
            chat(&client, &proxy.url("/v1/chat/completions"), "llama3")
                .await
                .unwrap()
                .1,
            "b0"
        );
    }
    assert_eq!(
        m[1].stats().requests_to("/v1/chat/completions"),
        0,
        "a new backend got traffic before passing a check"
    );
    m[1].set_failure(Failure::None);
    proxy.wait_log("backend b1 is healthy").await;
    wait_until(DEADLINE, "b1 to get traffic", || async {
        chat(&client, &proxy.url("/v1/chat/completions"), "llama3")
            .await
            .unwrap()
            .1
            == "b1"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_stream_finish_then_exits_zero() {
    let slow = mock(paced(
        "slow",
        Duration::from_millis(50),
        Duration::from_millis(200),
        10,
    ))
    .await;
    let mut proxy = Proxy::start(|addr| pool_of(addr, &[&slow])).await;
    let url = proxy.url("/v1/chat/completions");
    let stream = tokio::spawn(async move {
        stream_chunks(&client(), &url, r#"{"model":"llama3","stream":true}"#).await
    });
    wait_until(DEADLINE, "the stream to start", || async {
        slow.stats().in_flight() == 1
    })
    .await;
    proxy.signal("TERM");
    let (status, chunks) = stream.await.unwrap();
    assert_eq!(status, 200);
    let body = body_text(&chunks);
    assert!(
        body.trim_end().ends_with("data: [DONE]"),
        "stream cut by shutdown: {body}"
    );
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < end,
            "the process did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_under_load_loses_nothing() {
    let m = mocks(2).await;
    let mut old = Proxy::start(|addr| pool_of(addr, &[&m[0], &m[1]])).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = hammer(old.url("/v1/chat/completions"), 8, stop.clone());
    wait_until(DEADLINE, "load to flow", || async {
        m[0].stats().requests_to("/v1/chat/completions") > 20
    })
    .await;

    // The new process waits on the upgrade socket for the old one's listeners.
    let new_log = old.dir.path().join("new.log");
    let mut new = spawn(&old.config, &new_log, &["-u"]);
    old.signal("QUIT");
    let end = Instant::now() + DEADLINE;
    while old.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < end,
            "the old process did not hand over and exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    new_process_serves(&m).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = load.await.unwrap();
    let _ = new.kill();
    let _ = new.wait();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// Waits until 50 more requests reach the backends: the process that took
/// over the listeners is serving.
async fn new_process_serves(m: &[MockServer]) {
    let chats = || -> u64 {
        m.iter()
            .map(|b| b.stats().requests_to("/v1/chat/completions"))
            .sum()
    };
    let before = chats();
    wait_until(DEADLINE, "the new process to serve", || async {
        chats() > before + 50
    })
    .await;
}

/// Reads a PID file once it names a live process other than `not`.
async fn pid_from(file: &std::path::Path, not: Option<i32>) -> i32 {
    let mut pid = 0;
    wait_until(DEADLINE, "the PID file", || {
        pid = std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let alive =
            pid > 0 && Some(pid) != not && std::path::Path::new(&format!("/proc/{pid}")).exists();
        async move { alive }
    })
    .await;
    pid
}

/// Stops a daemon when the test ends, whatever happens.
struct Daemon(std::path::PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_upgrades_a_daemon_in_place_under_load() {
    let m = mocks(2).await;
    let proxy = Proxy::start_with(|addr| pool_of(addr, &[&m[0], &m[1]]), &["-d"]).await;
    let pid_file = proxy.dir.path().join("switchyard.pid");
    let _cleanup = Daemon(pid_file.clone());
    let old = pid_from(&pid_file, None).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = hammer(proxy.url("/v1/chat/completions"), 8, stop.clone());
    wait_until(DEADLINE, "load to flow", || async {
        m[0].stats().requests_to("/v1/chat/completions") > 20
    })
    .await;

    signal(old, "USR2");
    let new = pid_from(&pid_file, Some(old)).await;
    wait_until(DEADLINE, "the old process to exit", || async move {
        !std::path::Path::new(&format!("/proc/{old}")).exists()
            || std::fs::read_to_string(format!("/proc/{old}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    })
    .await;
    new_process_serves(&m).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(proxy.log_text().contains("handing them over"));

    // An upgrade whose configuration no longer validates is refused, and the
    // running process keeps serving.
    std::fs::write(&proxy.config, "pools: {}\n").unwrap();
    signal(new, "USR2");
    proxy.wait_log("upgrade aborted, still serving").await;
    assert_eq!(pid_from(&pid_file, None).await, new);
    assert_eq!(
        chat(&client(), &proxy.url("/v1/chat/completions"), "llama3")
            .await
            .unwrap()
            .0,
        200
    );
    signal(new, "TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_replaces_every_backend_serves_from_the_first_request() {
    let m = mocks(2).await;
    // Checks every 10 s: the new backend must not wait for the next round.
    let slow_checks = |addr, b: &MockServer| {
        Fleet::new(addr)
            .pool(Pool::new("chat").http_checks("10s").mocks(&[b]))
            .yaml()
    };
    let proxy = Proxy::start(|addr| slow_checks(addr, &m[0])).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(
        chat(&client, &url, "llama3").await.unwrap(),
        (200, "b0".into())
    );
    reload(&proxy, &slow_checks(proxy.addr, &m[1]), 1).await;
    for _ in 0..10 {
        assert_eq!(
            chat(&client, &url, "llama3").await.unwrap(),
            (200, "b1".into())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_slot_survives_a_reload_of_the_queue_settings() {
    let slow = mock(
        MockConfig::new("slow")
            .ttft(Duration::from_secs(2))
            .tokens(1),
    )
    .await;
    // The models are fixed in the file so that model discovery sends the
    // mock nothing: its in-flight count is then the test's requests alone.
    let capped = |addr, queue: &str| {
        format!(
            "server:\n  listen: [\"{addr}\"]\n  threads: 2\n\
             pools:\n  chat:\n    health_check: {{ type: none }}\n    queue: {{ {queue} }}\n\
             \x20   backends: [{{ name: slow, url: \"{}\", max_in_flight: 1, models: [llama3] }}]\n",
            slow.url()
        )
    };
    let proxy = Proxy::start(|addr| capped(addr, "timeout: 30s")).await;
    let url = proxy.url("/v1/chat/completions");
    let first = {
        let url = url.clone();
        tokio::spawn(async move { chat(&client(), &url, "llama3").await })
    };
    let stats = slow.stats();
    wait_until(DEADLINE, "the first request to hold the slot", || {
        let stats = stats.clone();
        async move { stats.in_flight() == 1 }
    })
    .await;
    reload(&proxy, &capped(proxy.addr, "timeout: 20s"), 1).await;
    proxy.wait_log("~pool chat (queue)").await;
    // A second request waits for the slot the first still holds.
    let second = {
        let url = url.clone();
        tokio::spawn(async move { chat(&client(), &url, "llama3").await })
    };
    let mut peak = 0;
    while !second.is_finished() {
        peak = peak.max(stats.in_flight());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(peak, 1, "the cap of 1 was exceeded after the reload");
    assert_eq!(first.await.unwrap().unwrap().0, 200);
    assert_eq!(second.await.unwrap().unwrap().0, 200);
}
