//! Shared harness for the integration tests: mock backends started in the
//! test's runtime, and the real `switchyard` binary started as a child
//! process on a port picked by binding `127.0.0.1:0`.
//!
//! Nothing here sleeps to synchronise: [`wait_until`] polls a condition
//! against a deadline.

#![allow(dead_code)]

pub mod config;
pub mod scrape;
pub mod tls;

#[allow(unused_imports)]
pub use config::{Backend, Fleet, Pool};
use std::future::Future;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
#[allow(unused_imports)]
pub use switchyard::mock::{Failure, MockConfig, MockServer, MockTls};

/// Generous: CI runs on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns true or `within` passes.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a mock backend named `name` on a fresh loopback port.
pub async fn mock(cfg: MockConfig) -> MockServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    MockServer::start(listener, cfg)
}

/// Starts a mock backend serving HTTPS with `tls` on a fresh loopback port.
pub async fn mock_tls(cfg: MockConfig, tls: &MockTls) -> MockServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    MockServer::start_tls(
        listener,
        cfg,
        tls.acceptor().expect("the mock's certificate"),
    )
}

/// A mock that streams `tokens` tokens: the first after `ttft`, the rest
/// `gap` apart.
pub fn paced(name: &str, ttft: Duration, gap: Duration, tokens: usize) -> MockConfig {
    MockConfig::new(name)
        .ttft(ttft)
        .token_gap(gap)
        .tokens(tokens)
}

/// A mock whose streams are megabytes long and sent as fast as it can:
/// more than the socket buffers between it and a client hold.
pub fn flood(name: &str) -> MockConfig {
    MockConfig::new(name)
        .ttft(Duration::ZERO)
        .token_gap(Duration::ZERO)
        .tokens(60_000)
}

/// A streamed response's chunks joined as text.
pub fn body_text(chunks: &[(Duration, bytes::Bytes)]) -> String {
    chunks
        .iter()
        .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// One pool without active health checks (so only what the test does
/// changes a backend's state), `extra` pool keys inserted as given.
pub fn unchecked_pool(addr: SocketAddr, strategy: &str, backends: &str, extra: &str) -> String {
    format!(
        "server:\n  listen: [\"{addr}\"]\n  threads: 2\n\
         pools:\n  chat:\n    strategy: {strategy}\n    health_check: {{ type: none }}\n{extra}\
         \x20   backends:\n{backends}"
    )
}

/// Sends raw bytes on a new connection and returns all that comes back
/// before the server closes it.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    use std::io::Write;
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Connects from `source` to `addr`, sends a request, and returns what
/// comes back before the connection closes.
pub async fn exchange_from(source: &str, addr: std::net::SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    let mut stream = socket.connect(addr).await?;
    let _ = stream
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was left open");
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A backend speaking plain HTTP/1.1 from fixed bytes: it answers every
/// request with `answer` and keeps the head of each POST it gets, for what
/// the mock cannot do (headers of any kind, in any case, on a response).
pub struct RawBackend {
    pub url: String,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RawBackend {
    pub async fn start(answer: &'static str) -> RawBackend {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = vec![0; 64 << 10];
                    let head_end = loop {
                        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&seen[..head_end]).into_owned();
                    let lower = head.to_ascii_lowercase();
                    let length: usize = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = seen.len() - head_end;
                    while body < length {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => body += n,
                        }
                    }
                    if lower.starts_with("post") {
                        kept.lock().unwrap().push(head);
                    }
                    let _ = sock.write_all(answer.as_bytes()).await;
                });
            }
        });
        RawBackend { url, heads }
    }

    /// The heads of the POSTs received, as they came.
    pub fn posts(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Starts `n` mock backends named b0, b1, ... that answer at once, for
/// tests that count requests rather than time them.
pub async fn mocks(n: usize) -> Vec<MockServer> {
    let mut out = Vec::new();
    for i in 0..n {
        let cfg = MockConfig::new(format!("b{i}"))
            .ttft(Duration::ZERO)
            .tokens(1);
        out.push(mock(cfg).await);
    }
    out
}

/// The `backends:` list of a pool over `mocks`, one flow mapping per line,
/// indented for a pool at the usual depth.
pub fn backends_yaml(mocks: &[&MockServer], weights: &[usize]) -> String {
    mocks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let weight = weights
                .get(i)
                .map(|w| format!(", weight: {w}"))
                .unwrap_or_default();
            format!(
                "      - {{ name: {}, url: \"{}\"{weight} }}\n",
                m.name(),
                m.url()
            )
        })
        .collect()
}

/// A one-pool configuration over `mocks` with fast HTTP health checks.
pub fn one_pool(listen: SocketAddr, strategy: &str, backends: &str) -> String {
    format!(
        "server:\n  listen: [\"{listen}\"]\n  threads: 2\n  grace_period: 30s\n  graceful_shutdown_timeout: 5s\n\
         pools:\n  chat:\n    strategy: {strategy}\n    retries: 2\n\
         \x20   timeouts: {{ connect: 1s, first_byte: 10s, idle: 10s }}\n\
         \x20   health_check: {{ type: http, path: /health, interval: 200ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 2 }}\n\
         \x20   circuit: {{ cooldown: 500ms }}\n\
         \x20   backends:\n{backends}\
         routes:\n  - {{ pool: chat }}\n"
    )
}

/// The path of the built `switchyard` binary.
/// `switchyard -t` on `yaml`, with `env` set: its exit code, and what it
/// printed on stdout and stderr together.
pub fn check_config(yaml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(binary())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}

/// A running `switchyard` process. Killed when dropped.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Proxy {
    /// `yaml` with the temp-dir pid and upgrade paths `Proxy::start` put in
    /// the first file, for a file that replaces it on reload.
    pub fn with_paths(&self, yaml: &str) -> String {
        yaml.replace(
            "server:\n",
            &format!(
                "server:\n  pid_file: {}\n  upgrade_sock: {}\n",
                self.dir.path().join("switchyard.pid").display(),
                self.dir.path().join("upgrade.sock").display()
            ),
        )
    }

    /// Picks a port, writes the configuration `yaml_for(addr)` and starts the
    /// proxy on it; returns once it accepts connections.
    pub async fn start(yaml_for: impl Fn(SocketAddr) -> String) -> Proxy {
        Self::start_with(yaml_for, &[]).await
    }

    pub async fn start_with(yaml_for: impl Fn(SocketAddr) -> String, extra: &[&str]) -> Proxy {
        Self::start_with_env(yaml_for, extra, &[]).await
    }

    /// [`Proxy::start_with`], the process given the variables `env` too.
    pub async fn start_with_env(
        yaml_for: impl Fn(SocketAddr) -> String,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        // The port is picked by binding and releasing it, so another test
        // may take it before the proxy binds it; the proxy then exits at
        // once saying so, and it is started again on another port.
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("switchyard.yaml");
            let yaml = yaml_for(addr);
            let yaml = yaml.replace(
                "server:\n",
                &format!(
                    "server:\n  pid_file: {}\n  upgrade_sock: {}\n",
                    dir.path().join("switchyard.pid").display(),
                    dir.path().join("upgrade.sock").display()
                ),
            );
            std::fs::write(&config, yaml).unwrap();
            let log = dir.path().join("switchyard.log");
            let child = spawn_env(&config, &log, extra, env);
            let mut proxy = Proxy {
                child,
                addr,
                dir,
                config,
                log,
            };
            if proxy.wait_ready_or_exit().await {
                return proxy;
            }
            let text = proxy.log_text();
            assert!(
                text.contains("address already in use"),
                "the proxy exited:\n{text}"
            );
        }
        panic!("no free port for the proxy in five tries");
    }

    /// Waits until the proxy accepts connections (true) or fails (false).
    /// Its "listening on" line tells it from another process that took the
    /// port. A clean exit is the foreground half of `-d` handing over to
    /// the daemon, not a failure.
    async fn wait_ready_or_exit(&mut self) -> bool {
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if self.log_text().contains("listening on")
                && TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return true;
            }
            if self
                .child
                .try_wait()
                .ok()
                .flatten()
                .is_some_and(|status| !status.success())
            {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out after {DEADLINE:?} waiting for the proxy to listen");
    }

    /// Waits until the proxy accepts connections.
    pub async fn wait_ready(&self) {
        let addr = self.addr;
        wait_until(DEADLINE, "the proxy to listen", || async move {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the process has logged so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        wait_until(DEADLINE, &format!("log line {needle:?}"), || async {
            self.log_text().contains(needle)
        })
        .await;
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test's proxy logs (and those of processes it started
        // beside them, such as an upgrade's new binary) go with its
        // temporary directory: show their ends in the test's output first.
        if std::thread::panicking() {
            let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
                return;
            };
            for path in entries.flatten().map(|e| e.path()) {
                if path.extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(40)..];
                    eprintln!("--- last lines of {}:\n{}", path.display(), tail.join("\n"));
                }
            }
        }
    }
}

/// Starts the binary with `-c config`, logging to `log`.
pub fn spawn(config: &Path, log: &Path, extra: &[&str]) -> Child {
    spawn_env(config, log, extra, &[])
}

/// [`spawn`] with the variables `env` set.
pub fn spawn_env(config: &Path, log: &Path, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(binary())
        .arg("-c")
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start switchyard")
}

/// Sends a signal with kill(1), which every Debian machine has.
pub fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {pid}");
}

/// An HTTP client that does not pool connections across tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A small non-streaming chat request; returns (status, serving backend or "").
pub async fn chat(
    client: &reqwest::Client,
    url: &str,
    model: &str,
) -> Result<(u16, String), String> {
    chat_with(client, url, model, &[]).await
}

pub async fn chat_with(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
        ));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let backend = resp
        .headers()
        .get("x-mock-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    resp.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, backend))
}

/// POSTs a JSON `body` to `url`.
pub async fn post_json(client: &reqwest::Client, url: &str, body: &str) -> reqwest::Response {
    json_post(client, url, body).send().await.unwrap()
}

/// A POST of `body` as JSON.
fn json_post(client: &reqwest::Client, url: &str, body: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
}

/// A GET of `url` when `body` is empty, else a POST of `body` as JSON; for
/// tests that send both kinds with headers of their own.
pub fn get_or_post(client: &reqwest::Client, url: &str, body: &str) -> reqwest::RequestBuilder {
    if body.is_empty() {
        client.get(url)
    } else {
        json_post(client, url, body)
    }
}

/// A streamed response: each body chunk with its arrival time since the
/// request was sent.
pub async fn stream_chunks(
    client: &reqwest::Client,
    url: &str,
    body: &str,
) -> (u16, Vec<(Duration, bytes::Bytes)>) {
    let start = Instant::now();
    let mut resp = post_json(client, url, body).await;
    let status = resp.status().as_u16();
    let mut chunks = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        chunks.push((start.elapsed(), chunk));
    }
    (status, chunks)
}

/// Parses an OpenAI-style error body, returning (message, type, code).
pub fn error_fields(body: &[u8]) -> (String, String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let e = &v["error"];
    let s = |k: &str| {
        e[k].as_str()
            .unwrap_or_else(|| panic!("error.{k} missing in {v}"))
            .to_string()
    };
    (s("message"), s("type"), s("code"))
}
