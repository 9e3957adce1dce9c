//! The load generator: HTTP/1.1 keep-alive clients on hyper's low-level
//! connection API, one task per connection, no pool in between.
//!
//! hyper's `client::conn` is used rather than a pooling client so that the
//! generator does as little as possible per request (no pool lookups, no
//! header munging) and so that the connection count is exactly what the
//! workload says. Every workload is bounded twice: by its own deadline and
//! by a count, and only ever connects to the address it is given, which the
//! harness only ever makes `127.0.0.1`.
//!
//! Windows: each workload runs `warmup + measure`; only what completes
//! inside the measured window is recorded, so connection set-up, slow start
//! and the proxy's first upstream connections stay out of the figures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

use crate::samples::Latencies;

/// A request or connection that takes longer than this has failed: no
/// workload here should ever wait that long, and a bound keeps a wedged
/// proxy from wedging the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The error type of one request; only counted, never shown per request.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Sender = SendRequest<Full<Bytes>>;

/// Where to send and what: the same small chat completion for every
/// workload, streamed or not.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    host: String,
    plain: Bytes,
    stream: Bytes,
    /// TLS to the target (workloads 7 and 8), verified as `localhost`.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// A new connection for every request (workload 8).
    fresh: bool,
    /// `Authorization: Bearer KEY` on every request (workload 10).
    key: Option<http::HeaderValue>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        let body = |stream: bool| {
            Bytes::from(
                serde_json::json!({
                    "model": "llama3",
                    "messages": [{"role": "user", "content": "Say hello."}],
                    "stream": stream,
                })
                .to_string(),
            )
        };
        Client {
            addr,
            host: addr.to_string(),
            plain: body(false),
            stream: body(true),
            tls: None,
            fresh: false,
            key: None,
        }
    }

    /// The same requests, carrying the API key `key`.
    pub fn with_key(self, key: &str) -> Self {
        Client {
            key: http::HeaderValue::try_from(format!("Bearer {key}")).ok(),
            ..self
        }
    }

    /// The same requests over TLS with `config`; a new connection, and so a
    /// full handshake, for every request when `fresh`.
    pub fn tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>, fresh: bool) -> Self {
        Client {
            tls: Some(config),
            fresh,
            ..Client::new(addr)
        }
    }

    fn request(&self, stream: bool) -> Result<Request<Full<Bytes>>, BoxError> {
        let body = if stream { &self.stream } else { &self.plain };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/v1/chat/completions")
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json");
        if let Some(key) = &self.key {
            req = req.header(http::header::AUTHORIZATION, key);
        }
        Ok(req.body(Full::new(body.clone()))?)
    }

    /// Opens one keep-alive connection; its driver runs as its own task and
    /// ends when the returned sender is dropped.
    async fn connect(&self) -> Result<Sender, BoxError> {
        let tcp = timeout(REQUEST_TIMEOUT, TcpStream::connect(self.addr)).await??;
        tcp.set_nodelay(true)?;
        if let Some(config) = &self.tls {
            let name = rustls_pki_types::ServerName::try_from("localhost")?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = timeout(REQUEST_TIMEOUT, connector.connect(name, tcp)).await??;
            let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            return Ok(sender);
        }
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends a request and waits for its head.
    async fn send(
        &self,
        sender: &mut Sender,
        stream: bool,
    ) -> Result<http::Response<Incoming>, BoxError> {
        sender.ready().await?;
        let resp = sender.send_request(self.request(stream)?).await?;
        if resp.status() != StatusCode::OK {
            return Err(format!("status {}", resp.status()).into());
        }
        Ok(resp)
    }

    /// One whole non-streamed completion.
    async fn complete(&self, sender: &mut Sender) -> Result<(), BoxError> {
        let work = async {
            let resp = self.send(sender, false).await?;
            resp.into_body().collect().await?;
            Ok::<_, BoxError>(())
        };
        timeout(REQUEST_TIMEOUT, work).await?
    }

    /// Whether the address answers a completion at all.
    pub async fn probe(&self) -> Result<(), BoxError> {
        let mut sender = self.connect().await?;
        self.complete(&mut sender).await
    }

    /// The body of one non-streamed completion, as the address answers it:
    /// what the static backend is to answer with.
    pub async fn completion(&self) -> Result<Bytes, BoxError> {
        self.body_of(self.request(false)?).await
    }

    /// The body of `GET path`, such as the model list.
    pub async fn get(&self, path: &str) -> Result<Bytes, BoxError> {
        let req = Request::builder()
            .uri(path)
            .header(HOST, &self.host)
            .body(Full::new(Bytes::new()))?;
        self.body_of(req).await
    }

    async fn body_of(&self, req: Request<Full<Bytes>>) -> Result<Bytes, BoxError> {
        let work = async {
            let mut sender = self.connect().await?;
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            if resp.status() != StatusCode::OK {
                return Err(format!("status {}", resp.status()).into());
            }
            Ok::<_, BoxError>(resp.into_body().collect().await?.to_bytes())
        };
        timeout(REQUEST_TIMEOUT, work).await?
    }
}

/// The measured window of a workload, relative to its start.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

impl Window {
    fn bounds(&self) -> (Instant, Instant, Instant) {
        let start = Instant::now();
        (
            start,
            start + self.warmup,
            start + self.warmup + self.measure,
        )
    }
}

/// What a request/response workload saw in its measured window.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    pub latencies: Latencies,
}

impl Outcome {
    /// Records one request that ended with `result` after `latency`, if it
    /// falls in the measured window. Returns whether the connection is
    /// still usable.
    fn record(
        &mut self,
        result: &Result<(), impl Sized>,
        counted: bool,
        latency: Duration,
    ) -> bool {
        match result {
            Ok(()) => {
                if counted {
                    self.ok += 1;
                    self.latencies.push(latency);
                }
                true
            }
            Err(_) => {
                self.errors += u64::from(counted);
                false
            }
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
    }
}

/// Closed loop: `conns` connections each send the next request as soon as
/// the previous one is answered, for the whole window. Saturation.
pub async fn closed_loop(client: &Client, conns: usize, window: Window) -> Outcome {
    let (_, measure_from, end) = window.bounds();
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let client = client.clone();
        tasks.spawn(async move {
            let mut out = Outcome::default();
            let mut sender = None;
            // With a new connection per request, its latency is the
            // client's: from before the TCP connect to the response's end.
            // Timed from the end of the client's handshake instead, it
            // would leave out whatever queueing the server does before
            // finishing its half (the kernel's accept queue for nginx,
            // which accepts one connection per event loop turn; the
            // runtime's task queue for a tokio server, which accepts them
            // all at once) and so compare where servers queue, not how
            // long a client waits.
            let mut connecting = None;
            while Instant::now() < end {
                if sender.is_none() {
                    connecting = Some(Instant::now());
                    match client.connect().await {
                        Ok(s) => sender = Some(s),
                        Err(_) => {
                            out.errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(s) = sender.as_mut() else { continue };
                let now = Instant::now();
                let sent = if client.fresh {
                    connecting.take().unwrap_or(now)
                } else {
                    now
                };
                let result = client.complete(s).await;
                let done = Instant::now();
                let counted = sent >= measure_from && done <= end;
                if !out.record(&result, counted, done - sent) || client.fresh {
                    sender = None;
                }
            }
            out
        });
    }
    gather(tasks).await
}

/// Open loop at `rate` requests per second over `conns` connections.
///
/// Request `i` is due at `start + i / rate`. A connection that takes it on
/// time waits for that moment and times from when it actually sends, so the
/// timer's millisecond granularity does not count as latency; a connection
/// that takes it late (all were busy) times from when it was due, so
/// queueing behind a slow proxy does count, instead of being hidden by the
/// loop slowing down (coordinated omission).
pub async fn fixed_rate(client: &Client, conns: usize, rate: f64, window: Window) -> Outcome {
    let (start, measure_from, end) = window.bounds();
    let total = (rate * (window.warmup + window.measure).as_secs_f64()).ceil() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let (client, next) = (client.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut out = Outcome::default();
            let mut sender = None;
            // A proxy that stops answering must not stretch the run by
            // one timeout per remaining request.
            let give_up = end + REQUEST_TIMEOUT;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > give_up {
                    break;
                }
                let due = start + period.mul_f64(i as f64);
                let from = if Instant::now() < due {
                    sleep_until(due).await;
                    Instant::now()
                } else {
                    due
                };
                let counted = due >= measure_from && due < end;
                if sender.is_none() {
                    sender = client.connect().await.ok();
                }
                let result = match sender.as_mut() {
                    Some(s) => client.complete(s).await,
                    None => Err("connect failed".into()),
                };
                if !out.record(&result, counted, from.elapsed()) {
                    sender = None;
                }
            }
            out
        });
    }
    gather(tasks).await
}

async fn gather(mut tasks: JoinSet<Outcome>) -> Outcome {
    let mut total = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(out) => total.merge(out),
            Err(_) => total.errors += 1,
        }
    }
    total
}

/// What the streaming workload saw: per completed stream, its time to first
/// token, its SSE event count and how many body chunks carried them.
#[derive(Debug, Default)]
pub struct Streams {
    pub errors: u64,
    pub ttft: Latencies,
    pub events: Vec<u32>,
    pub chunks: Vec<u32>,
}

/// Closed loop of SSE streams over `conns` connections. A stream is counted
/// if it started inside the measured window; the last ones may finish after
/// it, which only adds one stream's length to the run.
pub async fn stream_loop(client: &Client, conns: usize, window: Window) -> Streams {
    let (_, measure_from, end) = window.bounds();
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let client = client.clone();
        tasks.spawn(async move {
            let mut out = Streams::default();
            let mut sender = None;
            while Instant::now() < end {
                if sender.is_none() {
                    sender = client.connect().await.ok();
                }
                let sent = Instant::now();
                let counted = sent >= measure_from;
                let result = match sender.as_mut() {
                    Some(s) => timeout(REQUEST_TIMEOUT, one_stream(&client, s)).await,
                    None => Ok(Err("connect failed".into())),
                };
                match result {
                    Ok(Ok((ttft, events, chunks))) if counted => {
                        out.ttft.push(ttft);
                        out.events.push(events);
                        out.chunks.push(chunks);
                    }
                    Ok(Ok(_)) => {}
                    _ => {
                        out.errors += u64::from(counted);
                        sender = None;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            out
        });
    }
    let mut total = Streams::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(s) => {
                total.errors += s.errors;
                total.ttft.extend(s.ttft);
                total.events.extend(s.events);
                total.chunks.extend(s.chunks);
            }
            Err(_) => total.errors += 1,
        }
    }
    total
}

/// Reads one SSE stream to its end: time to the first body chunk (the mock
/// sends the head with the first token), events (blank-line terminated, so
/// counted the same however a proxy re-chunks) and chunks.
async fn one_stream(
    client: &Client,
    sender: &mut Sender,
) -> Result<(Duration, u32, u32), BoxError> {
    let sent = Instant::now();
    let mut body = client.send(sender, true).await?.into_body();
    let (mut ttft, mut events, mut chunks, mut prev) = (None, 0u32, 0u32, 0u8);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        ttft.get_or_insert_with(|| sent.elapsed());
        chunks += 1;
        for &b in data.iter() {
            if b == b'\n' && prev == b'\n' {
                events += 1;
            }
            prev = b;
        }
    }
    Ok((ttft.ok_or("stream had no body")?, events, chunks))
}

/// Long streams held open, for the memory-per-stream workload. Dropping it
/// (or [`Held::release`]) closes them all.
pub struct Held {
    pub opened: u64,
    pub failed: u64,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Held {
    /// Closes every held stream and waits until their tasks are gone.
    pub async fn release(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Opens `n` streams, at most `parallel` connecting at once (so a proxy's
/// accept queue is not flooded), and returns once each has received its
/// first chunk or failed, or at `deadline`. Each then reads its stream until
/// released.
pub async fn hold_streams(client: &Client, n: u64, parallel: usize, deadline: Duration) -> Held {
    let (stop, stopped) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(parallel));
    let (opened, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (client, gate, mut stopped) = (client.clone(), Arc::clone(&gate), stopped.clone());
        let (opened, failed) = (Arc::clone(&opened), Arc::clone(&failed));
        tasks.spawn(async move {
            let open = async {
                let _permit = gate.acquire().await?;
                let mut sender = client.connect().await?;
                let mut body = client.send(&mut sender, true).await?.into_body();
                loop {
                    match body.frame().await {
                        Some(Ok(f)) if f.data_ref().is_some_and(|d| !d.is_empty()) => break,
                        Some(Ok(_)) => {}
                        _ => {
                            return Err::<_, BoxError>("stream ended before its first token".into())
                        }
                    }
                }
                Ok((sender, body))
            };
            let (_sender, mut body) = match timeout(REQUEST_TIMEOUT, open).await {
                Ok(Ok(held)) => held,
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => break,
                    frame = body.frame() => if !matches!(frame, Some(Ok(_))) { break },
                }
            }
        });
    }
    let until = Instant::now() + deadline;
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Held {
        opened: opened.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        stop,
        tasks,
    }
}
