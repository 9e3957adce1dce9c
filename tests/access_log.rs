//! The access log through the real binary and mock backends: a line per
//! request with the right fields, rotation by rename and SIGUSR1, a move by
//! SIGHUP, and a disk that refuses every write, which costs lines and
//! never a request's time.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHAT: &str = r#"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#;

/// A mock that serves llama3 and answers at once with `tokens` tokens.
fn quick(name: &str, tokens: usize) -> MockConfig {
    MockConfig::new(name)
        .models(["llama3"])
        .ttft(Duration::ZERO)
        .token_gap(Duration::ZERO)
        .tokens(tokens)
}

/// A backend with its models given, so no discovery is waited for.
fn known(m: &MockServer) -> Backend {
    Backend::of(m).set("models", llama3())
}

fn llama3() -> serde_yaml::Value {
    serde_yaml::Value::Sequence(vec!["llama3".into()])
}

/// `pool` behind a proxy with the access log at `log`.
async fn proxy_logging_to(log: &str, pool: Pool) -> Proxy {
    Proxy::start(|addr| {
        Fleet::new(addr)
            .set("access_log.path", log)
            .pool(pool.clone())
            .yaml()
    })
    .await
}

/// The lines of the log at `path`, each parsed; a line that is not JSON
/// fails the test.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// Waits until the log at `path` has `n` lines, and returns them.
async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    wait_until(
        DEADLINE,
        &format!("{n} lines in {}", path.display()),
        || {
            let path = path.to_path_buf();
            async move { lines(&path).len() >= n }
        },
    )
    .await;
    let all = lines(path);
    assert_eq!(all.len(), n, "more lines than requests: {all:#?}");
    all
}

/// The lines by request id.
fn by_id(lines: Vec<Value>) -> HashMap<String, Value> {
    lines
        .into_iter()
        .map(|l| (l["request_id"].as_str().unwrap().to_string(), l))
        .collect()
}

/// Sends `body` (a GET when empty) with request id `id`; returns the status
/// and the `x-request-id` that came back.
async fn send(client: &reqwest::Client, url: &str, body: &str, id: &str) -> (u16, String) {
    let resp = get_or_post(client, url, body)
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let echoed = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    resp.bytes().await.unwrap();
    (status, echoed)
}

fn log_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_line_with_its_fields() {
    let m = mock(quick("b0", 5)).await;
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "access.log");
    let proxy = proxy_logging_to(log.to_str().unwrap(), Pool::new("chat").backend(known(&m))).await;
    let client = client();
    let chat = proxy.url("/v1/chat/completions");
    let streamed = r#"{"model":"llama3","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let ollama = r#"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#;
    let unknown = r#"{"model":"nope","messages":[]}"#;
    let sent = [
        ("stream", chat.as_str(), streamed, 200),
        ("ollama", &proxy.url("/api/chat"), ollama, 200),
        ("unknown", chat.as_str(), unknown, 404),
        ("plain", chat.as_str(), CHAT, 200),
        ("list", &proxy.url("/v1/models?limit=1&key=secret"), "", 200),
    ];
    for (id, url, body, status) in sent {
        assert_eq!(send(&client, url, body, id).await, (status, id.to_string()));
    }
    // One made-up id: the line has the one the client got.
    let (_, made) = send(&client, &chat, CHAT, "not an id").await;
    let lines = by_id(wait_lines(&log, sent.len() + 1).await);
    assert!(lines.contains_key(&made), "{made} in {lines:#?}");

    let time = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$").unwrap();
    for line in lines.values() {
        assert!(time.is_match(line["time"].as_str().unwrap()), "{line}");
        assert_eq!(line["client"], "127.0.0.1");
        assert!(line["duration_ms"].as_f64().unwrap() > 0.0, "{line}");
        assert_eq!(line["queue_ms"].as_f64().map(|q| q < 1000.0), Some(true));
    }

    let s = &lines["stream"];
    assert_eq!(s["method"], "POST");
    assert_eq!(s["path"], "/v1/chat/completions");
    assert_eq!(s["status"], 200);
    assert_eq!(s["pool"], "chat");
    assert_eq!(s["backend"], "b0");
    assert_eq!(
        (&s["model"], &s["served_model"]),
        (&"llama3".into(), &"llama3".into())
    );
    assert_eq!(
        (&s["attempts"], &s["failures"]),
        (&1.into(), &Value::Array(vec![]))
    );
    assert_eq!(s["completion_tokens"], 5);
    assert!(s["prompt_tokens"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["tokens_estimated"], false);
    assert_eq!(s["bytes_in"], streamed.len());
    assert!(s["bytes_out"].as_u64().unwrap() > 5 * 50, "{s}");
    let ttft = s["ttft_ms"].as_f64().unwrap();
    assert!(
        ttft > 0.0 && ttft <= s["duration_ms"].as_f64().unwrap(),
        "{s}"
    );
    assert_eq!(s["error"], Value::Null);

    let o = &lines["ollama"];
    assert_eq!(
        (&o["path"], &o["status"]),
        (&"/api/chat".into(), &200.into())
    );
    assert_eq!(o["completion_tokens"], 5, "Ollama's eval_count: {o}");
    assert!(o["prompt_tokens"].as_u64().unwrap() > 0, "{o}");

    let u = &lines["unknown"];
    assert_eq!(u["status"], 404);
    assert_eq!(u["error"], "model_not_found");
    assert_eq!(u["model"], "nope");
    assert_eq!((&u["backend"], &u["attempts"]), (&Value::Null, &0.into()));
    assert_eq!(u["ttft_ms"], Value::Null);
    assert!(
        u["bytes_out"].as_u64().unwrap() > 0,
        "the error body counts: {u}"
    );

    let p = &lines["plain"];
    assert_eq!(p["completion_tokens"], 5, "a JSON body's usage: {p}");
    let l = &lines["list"];
    assert_eq!(l["path"], "/v1/models", "no query string: {l}");
    assert_eq!((&l["pool"], &l["backend"]), (&Value::Null, &Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_says_why_each_attempt_failed() {
    let bad = mock(quick("bad", 1).fail_with(503)).await;
    let good = mock(quick("good", 1)).await;
    let dead = Backend::url(&format!("http://127.0.0.1:{}", free_port()))
        .set("name", "dead")
        .set("models", llama3())
        .set("priority", 9);
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "access.log");
    let pool = Pool::new("chat")
        .set("strategy", "priority")
        .set("retries", 2)
        .backend(known(&bad).set("priority", 9))
        .backend(dead)
        .backend(known(&good));
    let proxy = proxy_logging_to(log.to_str().unwrap(), pool).await;
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(send(&client(), &url, CHAT, "r").await.0, 200);
    let line = &wait_lines(&log, 1).await[0];
    assert_eq!(line["backend"], "good", "{line}");
    assert_eq!(line["attempts"], 3, "{line}");
    let mut failures: Vec<(String, String)> = line["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["backend"].to_string(), f["reason"].to_string()))
        .collect();
    failures.sort();
    assert_eq!(
        failures,
        [
            ("\"bad\"".into(), "\"status_503\"".into()),
            ("\"dead\"".into(), "\"connect_refused\"".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_stream_gets_its_line() {
    let m =
        mock(paced("b0", Duration::ZERO, Duration::from_millis(50), 200).models(["llama3"])).await;
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "access.log");
    let proxy = proxy_logging_to(log.to_str().unwrap(), Pool::new("chat").backend(known(&m))).await;
    let body = r#"{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-request-id", "gone")
        .body(body)
        .send()
        .await
        .unwrap();
    let mut received = 0;
    while received < 200 {
        received += resp.chunk().await.unwrap().unwrap().len();
    }
    let hung_up = Instant::now();
    drop(resp);
    let line = &wait_lines(&log, 1).await[0];
    assert!(hung_up.elapsed() < Duration::from_secs(5), "logged late");
    assert_eq!(line["request_id"], "gone");
    assert_eq!(line["status"], 200);
    let out = line["bytes_out"].as_u64().unwrap();
    assert!(out >= received as u64, "{out} < {received}");
    assert!(out < 200 * 100, "the whole stream was not sent: {out}");
    assert!(line["duration_ms"].as_f64().unwrap() < 5000.0, "{line}");
    assert_eq!(line["error"], Value::Null, "nobody was left to answer");
    assert_eq!(line["tokens_estimated"], true, "no usage came: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_paths_are_logged_as_one_line_of_json() {
    let m = mock(quick("b0", 1)).await;
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "access.log");
    let proxy = proxy_logging_to(log.to_str().unwrap(), Pool::new("chat").backend(known(&m))).await;
    // Quotes, a backslash, escaped newlines and bytes that are no UTF-8,
    // UTF-8 itself, and a query string that must not be logged. (Raw bytes
    // that are not UTF-8 make no request: Pingora answers 400 first.)
    let target = "/v1/\"quoted\"/%0A%0D/%FF%FE/\\/caf\u{e9}?key=secret".as_bytes();
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange(proxy.addr, &request);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    let line = &wait_lines(&log, 1).await[0];
    assert_eq!(
        line["path"], "/v1/\"quoted\"/%0A%0D/%FF%FE/\\/caf\u{e9}",
        "{line}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("secret"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_by_rename_and_sigusr1_loses_no_line() {
    let m = mock(quick("b0", 1)).await;
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "access.log");
    let rotated = log_in(&dir, "access.log.1");
    let proxy = proxy_logging_to(log.to_str().unwrap(), Pool::new("chat").backend(known(&m))).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    for i in 0..5 {
        send(&client, &url, CHAT, &format!("before-{i}")).await;
    }
    wait_lines(&log, 5).await;
    std::fs::rename(&log, &rotated).unwrap();
    // Until told, Switchyard writes on in the file it has open.
    for i in 0..3 {
        send(&client, &url, CHAT, &format!("between-{i}")).await;
    }
    wait_lines(&rotated, 8).await;
    proxy.signal("USR1");
    proxy
        .wait_log(&format!("access log: reopened {}", log.display()))
        .await;
    for i in 0..4 {
        send(&client, &url, CHAT, &format!("after-{i}")).await;
    }
    let new: Vec<String> = wait_lines(&log, 4)
        .await
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(new, ["after-0", "after-1", "after-2", "after-3"]);
    assert_eq!(lines(&rotated).len(), 8, "nothing more in the old file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_path_moves_the_log() {
    let m = mock(quick("b0", 1)).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (log_in(&dir, "a.log"), log_in(&dir, "b.log"));
    let yaml = |addr, log: &Path| {
        Fleet::new(addr)
            .set("access_log.path", log.to_str().unwrap())
            .pool(Pool::new("chat").backend(known(&m)))
            .yaml()
    };
    let proxy = Proxy::start(|addr| yaml(addr, &a)).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    send(&client, &url, CHAT, "to-a").await;
    wait_lines(&a, 1).await;
    let text = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(
        &proxy.config,
        text.replace(a.to_str().unwrap(), b.to_str().unwrap()),
    )
    .unwrap();
    proxy.signal("HUP");
    proxy.wait_log("reload 2:").await;
    send(&client, &url, CHAT, "to-b").await;
    let moved = wait_lines(&b, 1).await;
    assert_eq!(moved[0]["request_id"], "to-b");
    assert_eq!(lines(&a).len(), 1);
    assert!(
        proxy.log_text().contains(&format!(
            "access log: moving from {} to {}",
            a.display(),
            b.display()
        )),
        "{}",
        proxy.log_text()
    );
}

/// Sends `n` chats one after another; returns the slowest one's time.
async fn slowest_of(n: usize, proxy: &Proxy) -> Duration {
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let began = Instant::now();
        assert_eq!(send(&client, &url, CHAT, &format!("r{i}")).await.0, 200);
        slowest = slowest.max(began.elapsed());
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_costs_lines_not_time_and_warns_once() {
    let m = mock(quick("b0", 1)).await;
    let proxy = proxy_logging_to("/dev/full", Pool::new("chat").backend(known(&m))).await;
    // Spread over a few of the writer's rounds, so several batches fail.
    let mut slowest = Duration::ZERO;
    for _ in 0..4 {
        slowest = slowest.max(slowest_of(25, &proxy).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?}"
    );
    let warning = "access log: cannot write to /dev/full";
    proxy.wait_log(warning).await;
    assert_eq!(
        proxy.log_text().matches(warning).count(),
        1,
        "{}",
        proxy.log_text()
    );
    // What was lost is said at exit.
    proxy.signal("TERM");
    proxy.wait_log("lines were dropped since start").await;
    let text = proxy.log_text();
    let dropped = text
        .lines()
        .find_map(|l| {
            l.split_once("access log: ")?
                .1
                .strip_suffix(" lines were dropped since start")
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(dropped, "100", "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_costs_lines_until_it_is_back() {
    let m = mock(quick("b0", 1)).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("later/access.log");
    let proxy = proxy_logging_to(log.to_str().unwrap(), Pool::new("chat").backend(known(&m))).await;
    assert!(slowest_of(10, &proxy).await < Duration::from_secs(1));
    let warning = format!("access log: cannot open {}", log.display());
    proxy.wait_log(&warning).await;
    std::fs::create_dir(dir.path().join("later")).unwrap();
    // Lines flow again within a second of the directory's return.
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    wait_until(DEADLINE, "the log to be written again", || {
        let (client, url, log) = (client.clone(), url.clone(), log.clone());
        async move {
            send(&client, &url, CHAT, "again").await;
            !lines(&log).is_empty()
        }
    })
    .await;
    proxy.wait_log("lines were dropped").await;
    assert_eq!(proxy.log_text().matches(&warning).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_queued_says_for_how_long() {
    let m = mock(quick("b0", 1).ttft(Duration::from_millis(400))).await;
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(&dir, "access.log");
    let pool = Pool::new("chat").backend(known(&m).set("max_in_flight", 1));
    let proxy = proxy_logging_to(log.to_str().unwrap(), pool).await;
    let url = proxy.url("/v1/chat/completions");
    let first = tokio::spawn({
        let url = url.clone();
        async move { send(&client(), &url, CHAT, "first").await }
    });
    wait_until(DEADLINE, "the first request at the backend", || async {
        m.stats().in_flight() == 1
    })
    .await;
    assert_eq!(send(&client(), &url, CHAT, "second").await.0, 200);
    assert_eq!(first.await.unwrap().0, 200);
    let lines = by_id(wait_lines(&log, 2).await);
    assert_eq!(lines["first"]["queue_ms"], 0.0, "admitted at once");
    let waited = lines["second"]["queue_ms"].as_f64().unwrap();
    assert!(waited >= 200.0, "{}", lines["second"]);
    assert!(waited <= lines["second"]["duration_ms"].as_f64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_stuck_on_a_file_that_takes_nothing_slows_no_request() {
    // A pipe that is open for reading but never read: once its 64 KiB are
    // full, every write blocks, as on a disk or a network file system
    // that has stopped answering.
    use std::os::unix::fs::OpenOptionsExt;
    let m = mock(quick("b0", 1)).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success());
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let proxy =
        proxy_logging_to(fifo.to_str().unwrap(), Pool::new("chat").backend(known(&m))).await;
    // About 150 lines fill the pipe; the rest wait in the buffer.
    let slowest = slowest_of(400, &proxy).await;
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?}"
    );
    // Nor does it hold up the exit: the buffered lines are given up.
    let began = Instant::now();
    proxy.signal("TERM");
    proxy.wait_log("buffered lines are lost").await;
    let mut proxy = proxy;
    wait_until(DEADLINE, "the proxy to exit", || {
        let exited = proxy.child.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
}
