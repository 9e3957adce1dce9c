//! What a SIGHUP reload does to the edge's guards, through the real binary:
//! API keys (added, removed, re-read from their file; a broken `auth`
//! refused with the old keys kept), local limits (buckets kept for a scope
//! whose limits did not change, full ones for a scope whose limits did or
//! whose key was renamed), and `server.allow` / `server.deny` (applied to
//! the next connection; connections already open stay open). Each claim is
//! one of the README's "What a reload applies".

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE: &str = "sk-alice-0123456789abcdef";
const BOB: &str = "sk-bob-fedcba9876543210";
const FILE_OLD: &str = "sk-file-old-0123456789";
const FILE_NEW: &str = "sk-file-new-9876543210";

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

/// The `sha256:` of `key`.
fn sha256(key: &str) -> String {
    hex::encode(switchyard::auth::key::digest(key.as_bytes()))
}

/// Rewrites the configuration, sends SIGHUP and waits until the snapshot
/// of `generation` (1 at start, one more per applied reload) is published:
/// its log line comes after it.
async fn reload(proxy: &Proxy, yaml: &str, generation: u64) {
    std::fs::write(&proxy.config, proxy.with_paths(yaml)).unwrap();
    proxy.signal("HUP");
    proxy.wait_log(&format!("reload {generation}:")).await;
}

/// Rewrites the configuration, sends SIGHUP and waits for the reload to be
/// refused; the refusal's line must name `why`.
async fn reload_refused(proxy: &Proxy, yaml: &str, why: &str) {
    let failures = |log: &str| log.matches("reload failed:").count();
    let before = failures(&proxy.log_text());
    std::fs::write(&proxy.config, proxy.with_paths(yaml)).unwrap();
    proxy.signal("HUP");
    wait_until(DEADLINE, "the reload to be refused", || async {
        failures(&proxy.log_text()) > before
    })
    .await;
    let log = proxy.log_text();
    let line = log.lines().rfind(|l| l.contains("reload failed:"));
    assert!(line.is_some_and(|l| l.contains(why)), "{log}");
}

/// A chat for `model` with `key` as its bearer token: the status and the
/// error code, if any.
async fn chat_as(url: &str, model: &str, key: &str) -> (u16, String) {
    let resp = client()
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code)
}

/// The statuses of `n` chats in a row with `key`.
async fn statuses(url: &str, key: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(chat_as(url, "llama3", key).await.0);
    }
    out
}

/// A quick pool `chat` for every model but `slow`, and a pool `slow` that
/// streams slowly, behind `auth.keys: keys`.
fn keyed(addr: SocketAddr, quick: &MockServer, slow: &MockServer, keys: &str) -> String {
    Fleet::new(addr)
        .set("auth.keys", yaml(keys))
        .pool(Pool::new("chat").backend(Backend::of(quick)))
        .pool(Pool::new("slow").backend(Backend::of(slow)))
        .route("slow", &[("model", "slow")])
        .route("chat", &[])
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_keys_and_rereads_a_key_file() {
    let quick = mock(MockConfig::new("b0").ttft(Duration::ZERO).tokens(1)).await;
    // 200 tokens 50 ms apart: a stream that outlasts a reload.
    let slow =
        mock(paced("slow", Duration::ZERO, Duration::from_millis(50), 200).models(["slow"])).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("ci.key");
    std::fs::write(&key_file, format!("{FILE_OLD}\n")).unwrap();
    let ci = format!("{{ name: ci, file: \"{}\" }}", key_file.display());
    let first = format!("[{{ name: alice, sha256: {} }}, {ci}]", sha256(ALICE));
    let proxy = Proxy::start(|addr| keyed(addr, &quick, &slow, &first)).await;
    let url = proxy.url("/v1/chat/completions");

    assert_eq!(chat_as(&url, "llama3", ALICE).await.0, 200);
    assert_eq!(chat_as(&url, "llama3", FILE_OLD).await.0, 200);
    let refused = chat_as(&url, "llama3", BOB).await;
    assert_eq!(refused, (401, "invalid_api_key".into()));

    // A stream under alice's key, running when her key is removed.
    let mut stream = client()
        .post(&url)
        .bearer_auth(ALICE)
        .header("content-type", "application/json")
        .body(r#"{"model":"slow","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);

    // Bob instead of alice; the file's key rotated: written, then reloaded.
    std::fs::write(&key_file, format!("{FILE_NEW}\n")).unwrap();
    let second = format!("[{{ name: bob, sha256: {} }}, {ci}]", sha256(BOB));
    reload(&proxy, &keyed(proxy.addr, &quick, &slow, &second), 2).await;
    assert_eq!(
        slow.stats().in_flight(),
        1,
        "the stream was still running when the reload was applied"
    );
    for (key, want) in [(ALICE, 401), (FILE_OLD, 401), (BOB, 200), (FILE_NEW, 200)] {
        let (status, code) = chat_as(&url, "llama3", key).await;
        assert_eq!(status, want, "{key}: {code}");
    }
    // The stream finishes under the key it started with.
    let mut text = String::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "the stream was cut");

    // A key in plain text, or a key file gone: the reload is refused whole
    // and the keys in force keep working.
    let plain = format!("[{{ name: bob, key: \"{BOB}\" }}, {ci}]");
    let plain = keyed(proxy.addr, &quick, &slow, &plain);
    reload_refused(&proxy, &plain, "auth.keys[0].key").await;
    std::fs::remove_file(&key_file).unwrap();
    let gone = keyed(proxy.addr, &quick, &slow, &second);
    reload_refused(&proxy, &gone, "auth.keys[1].file").await;
    for (key, want) in [(ALICE, 401), (BOB, 200), (FILE_NEW, 200)] {
        let (status, code) = chat_as(&url, "llama3", key).await;
        assert_eq!(status, want, "{key}: {code}");
    }
}

/// One pool over `m` (and, with `spare`, a second pool routed by model),
/// alice and bob with `requests` limits of their own.
fn limited(addr: SocketAddr, m: &MockServer, alice: &str, bob: &str, spare: bool) -> String {
    let keys = format!(
        "[{{ name: alice, sha256: {}, limits: {{ requests: {alice} }} }},\n \
         {{ name: {bob}, sha256: {}, limits: {{ requests: {{ per: 1h, limit: 2, burst: 2 }} }} }}]",
        sha256(ALICE),
        sha256(BOB)
    );
    let mut fleet = Fleet::new(addr)
        .set("auth.keys", yaml(&keys))
        .pool(Pool::new("chat").backend(Backend::of(m)));
    if spare {
        fleet = fleet
            .pool(Pool::new("spare").backend(Backend::of(m)))
            .route("spare", &[("model", "spare*")])
            .route("chat", &[]);
    }
    fleet.yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_unchanged_buckets_and_refills_changed_ones() {
    let m = mock(MockConfig::new("b0").ttft(Duration::ZERO).tokens(1)).await;
    // An hour's window: a request's room comes back after 20 minutes, so
    // nothing refills while the test runs, however loaded the machine.
    let three = "{ per: 1h, limit: 3, burst: 3 }";
    let five = "{ per: 1h, limit: 3, burst: 5 }";
    let proxy = Proxy::start(|addr| limited(addr, &m, three, "bob", false)).await;
    let url = proxy.url("/v1/chat/completions");

    assert_eq!(statuses(&url, ALICE, 4).await, [200, 200, 200, 429]);
    let refused = chat_as(&url, "llama3", ALICE).await;
    assert_eq!(refused, (429, "rate_limit_exceeded".into()));
    assert_eq!(statuses(&url, BOB, 1).await, [200]);

    // A pool and a route added: no scope's limits changed, so no one gets
    // a fresh burst.
    reload(&proxy, &limited(proxy.addr, &m, three, "bob", true), 2).await;
    proxy.wait_log("+pool spare").await;
    assert_eq!(statuses(&url, ALICE, 1).await, [429]);
    assert_eq!(statuses(&url, BOB, 2).await, [200, 429]);

    // Alice's burst raised: her scope starts with a full bucket of the new
    // size; bob's, unchanged, stays empty.
    reload(&proxy, &limited(proxy.addr, &m, five, "bob", true), 3).await;
    assert_eq!(
        statuses(&url, ALICE, 6).await,
        [200, 200, 200, 200, 200, 429]
    );
    assert_eq!(statuses(&url, BOB, 1).await, [429]);

    // Bob renamed, his key and limits the same: a new scope, full buckets.
    reload(&proxy, &limited(proxy.addr, &m, five, "robert", true), 4).await;
    assert_eq!(statuses(&url, BOB, 3).await, [200, 200, 429]);
    assert_eq!(statuses(&url, ALICE, 1).await, [429]);
}

/// A client connection from `source` kept open across requests.
struct KeptAlive {
    stream: tokio::net::TcpStream,
    /// What was read past the last response.
    buf: Vec<u8>,
}

impl KeptAlive {
    async fn connect(source: &str, addr: SocketAddr) -> KeptAlive {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        KeptAlive {
            stream,
            buf: Vec::new(),
        }
    }

    /// `GET /v1/models` on this connection: the response's status line, or
    /// what went wrong.
    async fn get(&mut self) -> Result<String, String> {
        let request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
        self.stream
            .write_all(request)
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(10), self.response())
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
    }

    async fn response(&mut self) -> Result<String, String> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_lowercase();
        let status = head.lines().next().unwrap_or("").to_string();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|n| n.trim().parse::<usize>().unwrap());
        let end = match length {
            Some(n) => {
                while self.buf.len() < head_end + n {
                    self.fill().await?;
                }
                head_end + n
            }
            // Chunked: up to the last chunk's end.
            None => loop {
                if let Some(at) = find(&self.buf[head_end..], b"\r\n0\r\n\r\n") {
                    break head_end + at + 7;
                }
                self.fill().await?;
            },
        };
        self.buf.drain(..end);
        Ok(status)
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) => Err("closed".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One pool over `m`, `server.allow` and `server.deny` as given (YAML
/// lists).
fn guarded(addr: SocketAddr, m: &MockServer, allow: &str, deny: &str) -> String {
    Fleet::new(addr)
        .server("allow", yaml(allow))
        .server("deny", yaml(deny))
        .pool(Pool::new("chat").backend(Backend::of(m)))
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_allow_and_deny_to_the_next_connection() {
    let m = mock(MockConfig::new("b0").ttft(Duration::ZERO).tokens(1)).await;
    let denied = "[\"127.0.0.2/32\"]";
    let proxy = Proxy::start(|addr| guarded(addr, &m, "[]", denied)).await;
    let answer = |source: &'static str| {
        let addr = proxy.addr;
        async move { exchange_from(source, addr).await.unwrap_or_default() }
    };
    assert_eq!(answer("127.0.0.2").await, "", "a denied peer got an answer");
    assert!(answer("127.0.0.1").await.starts_with("HTTP/1.1 200"));

    reload(&proxy, &guarded(proxy.addr, &m, "[]", "[]"), 2).await;
    let reply = answer("127.0.0.2").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    // Opened while 127.0.0.2 may connect, and kept alive.
    let mut open = KeptAlive::connect("127.0.0.2", proxy.addr).await;
    assert_eq!(open.get().await.unwrap(), "http/1.1 200 ok");

    // Denied again: new connections are closed unanswered, the one
    // already open keeps being served.
    reload(&proxy, &guarded(proxy.addr, &m, "[]", denied), 3).await;
    assert_eq!(answer("127.0.0.2").await, "", "a denied peer got an answer");
    assert_eq!(open.get().await.unwrap(), "http/1.1 200 ok");
    assert_eq!(open.get().await.unwrap(), "http/1.1 200 ok");

    // An allow list that leaves 127.0.0.1 out shuts it out next.
    let only_two = "[\"127.0.0.2/32\"]";
    reload(&proxy, &guarded(proxy.addr, &m, only_two, "[]"), 4).await;
    assert_eq!(
        answer("127.0.0.1").await,
        "",
        "a peer not allowed got an answer"
    );
    let reply = answer("127.0.0.2").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
}
