//! A minute under attack: 500 slowloris connections and 20 clients that
//! stop reading, while 50 ordinary clients stream. The ordinary clients
//! must see no error, and the proxy's memory must stay bounded.
//!
//! It takes a minute and most of a small machine, so it is not part of the
//! default run:
//! `cargo test --release --test soak -- --ignored --nocapture`.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SLOWLORIS: usize = 500;
const STALLED: usize = 20;
const NORMAL: usize = 50;
const SOAK: Duration = Duration::from_secs(60);

/// Resident memory of `pid`, KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Opens a connection and trickles a header into it, a byte a second,
/// opening another whenever the proxy closes it.
async fn slowloris(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, closed: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut conn) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = conn
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n")
            .await;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if conn.write_all(b"X").await.is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await
            {
                break;
            }
        }
        closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts a long stream and never reads it; after 15 s (the proxy drops
/// it after `client_send`, 10 s here) gives up and does it again.
async fn stalled(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, rounds: Arc<AtomicU64>) {
    let body = r#"{"model":"big","stream":true,"messages":[]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    while !stop.load(Ordering::Relaxed) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let Ok(mut conn) = socket.connect(addr).await else {
            continue;
        };
        let _ = conn.write_all(request.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute long; run with --ignored"]
async fn the_fleet_serves_normal_clients_through_an_attack() {
    let normal = mock(
        MockConfig::new("normal")
            .models(["llama3"])
            .ttft(Duration::from_millis(20))
            .token_gap(Duration::from_millis(20))
            .tokens(50),
    )
    .await;
    let big = mock(flood("big").models(["big"])).await;
    let proxy = Proxy::start(|addr| {
        format!(
            "server:\n  listen: [\"{addr}\"]\n  threads: 2\n  timeouts: {{ client_send: 10s }}\n\
             pools:\n  chat:\n    health_check: {{ type: none }}\n\
             \x20   backends:\n      - {{ name: normal, url: \"{}\", models: [llama3] }}\n\
             \x20 big:\n    health_check: {{ type: none }}\n\
             \x20   backends:\n      - {{ name: big, url: \"{}\", models: [big], max_in_flight: 20 }}\n\
             routes:\n  - {{ model: big, pool: big }}\n  - {{ pool: chat }}\n",
            normal.url(),
            big.url()
        )
    })
    .await;
    let pid = proxy.pid();
    let rss_start = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let (closed, dropped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut attackers = Vec::new();
    for _ in 0..SLOWLORIS {
        attackers.push(tokio::spawn(slowloris(
            proxy.addr,
            stop.clone(),
            closed.clone(),
        )));
    }
    for _ in 0..STALLED {
        attackers.push(tokio::spawn(stalled(
            proxy.addr,
            stop.clone(),
            dropped.clone(),
        )));
    }
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    let started = Instant::now();
    for _ in 0..NORMAL {
        let (url, ok, failed) = (
            proxy.url("/v1/chat/completions"),
            ok.clone(),
            failed.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = client();
            let body = r#"{"model":"llama3","stream":true,"messages":[]}"#;
            while started.elapsed() < SOAK {
                let (status, chunks) = stream_chunks(&client, &url, body).await;
                let text = body_text(&chunks);
                if status == 200
                    && text.ends_with("data: [DONE]\n\n")
                    && !text.contains("\"error\"")
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed: {status} {}", &text[..text.len().min(200)]);
                }
            }
        }));
    }
    let mut rss_max = 0;
    while started.elapsed() < SOAK {
        rss_max = rss_max.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for c in clients {
        c.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.abort();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "soak {SOAK:?}: {ok} streams ok, {failed} failed; slowloris connections closed by the \
         proxy: {}; stalled-reader rounds: {}; proxy RSS {} KiB at start, {} KiB at most",
        closed.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        rss_start,
        rss_max
    );
    assert_eq!(failed, 0, "ordinary clients saw errors");
    assert!(ok > NORMAL as u64, "ordinary clients were served ({ok})");
    assert!(rss_max < 512 * 1024, "RSS reached {rss_max} KiB");
}
