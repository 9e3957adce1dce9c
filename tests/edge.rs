//! What slow, idle and hostile clients can do to the proxy: each is held to
//! a limit and answered clearly, and the fleet keeps serving everyone else.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Reads until the server closes the connection, for at most `within`;
/// returns what came and how long it took.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

/// The error fields of an answer written on the connection itself, as
/// (message, type, code); it must name itself by a request id, in its
/// header and its body alike.
fn raw_error(answer: &str) -> (String, String, String) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no body in {answer:?}"));
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no x-request-id in {head:?}"));
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["request_id"], id, "{answer}");
    error_fields(body.as_bytes())
}

fn chat_request(stream: bool) -> String {
    let body = format!(
        r#"{{"model":"llama3","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A client with a tiny receive buffer that sends a streaming request and
/// then reads nothing.
async fn stalled_reader(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(chat_request(true).as_bytes())
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_dropped_and_do_not_bench_the_backend() {
    // Long streams (megabytes), sent as fast as the mock can.
    let m = mock(flood("big")).await;
    let pool = Pool::new("chat")
        .set("timeouts.idle", "1s")
        .set("queue.timeout", "60s")
        .set("circuit.consecutive_failures", 1)
        .set("circuit.cooldown", "60s")
        .backend(Backend::of(&m).set("max_in_flight", 3));
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .server("timeouts.client_send", "2s")
            .pool(pool.clone())
            .yaml()
    })
    .await;
    // Three clients take every slot and stop reading.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_reader(proxy.addr).await);
    }
    let stats = m.stats();
    wait_until(DEADLINE, "three streams to start", || {
        let stats = stats.clone();
        async move { stats.api_requests() >= 3 }
    })
    .await;
    // A fourth client is served once the stalled ones are dropped after
    // client_send, well before its queue timeout; the backend's circuit
    // (open after one failure, for a minute) was never blamed.
    let client = client();
    let start = Instant::now();
    let (status, chunks) = stream_chunks(
        &client,
        &proxy.url("/v1/chat/completions"),
        r#"{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let waited = start.elapsed();
    let text = body_text(&chunks);
    assert_eq!(status, 200);
    assert!(text.ends_with("data: [DONE]\n\n"), "the stream finished");
    assert!(!text.contains("\"error\""), "no error event");
    assert!(
        waited < Duration::from_secs(40),
        "served after {waited:?}, not after the queue timeout"
    );
    for _ in 0..3 {
        let (status, _) = chat(&client, &proxy.url("/v1/chat/completions"), "llama3")
            .await
            .unwrap();
        assert_eq!(status, 200, "the backend is still in service");
    }
    // The stalled clients were cut: their connections ended without the
    // stream's end, and without an error blamed on the backend.
    for mut s in stalled {
        let (text, _) = read_to_close(&mut s, DEADLINE).await;
        assert!(!text.contains("data: [DONE]"), "a stalled client was cut");
        assert!(
            !text.contains("backend_timeout"),
            "{}",
            &text[text.len().saturating_sub(300)..]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_not_a_silent_backend() {
    let m = mock(flood("big")).await;
    let pool = Pool::new("chat").set("timeouts.idle", "1s").mocks(&[&m]);
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .server("timeouts.client_send", "30s")
            .pool(pool.clone())
            .yaml()
    })
    .await;
    let mut reader = stalled_reader(proxy.addr).await;
    // Longer than the backend's idle allowance: the proxy stops reading the
    // backend because the client does not read, which is not the backend
    // falling silent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (text, _) = read_to_close_or_done(&mut reader).await;
    assert!(
        !text.contains("\"error\""),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    assert!(text.ends_with("data: [DONE]\r\n\r\n0\r\n\r\n") || text.contains("data: [DONE]"));
}

/// Reads a chunked streaming response until its last chunk (the connection
/// stays open).
async fn read_to_close_or_done(stream: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while start.elapsed() < Duration::from_secs(60) {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        if out.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_timed_out() {
    let m = mocks(1).await;
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .server("timeouts.client_header", "1s")
            .server("timeouts.keepalive", "1s")
            .server("timeouts.client_body", "1s")
            .pool(Pool::new("chat").mocks(&[&m[0]]))
            .yaml()
    })
    .await;

    // A header trickled a byte at a time never completes in time: 408.
    let mut trickle = TcpStream::connect(proxy.addr).await.unwrap();
    trickle
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if trickle.write_all(b"X").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(300), trickle.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        assert!(start.elapsed() < DEADLINE, "trickled header still held");
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert_eq!(raw_error(&answer).2, "request_timeout");

    // A connection that sends nothing is closed without an answer.
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let (text, took) = read_to_close(&mut silent, DEADLINE).await;
    assert_eq!(text, "");
    assert!(took < DEADLINE);

    // An idle kept-alive connection is closed after `keepalive`.
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (text, took) = read_to_close(&mut idle, DEADLINE).await;
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert!(took < DEADLINE, "idle connection held for {took:?}");

    // A second request sent by half, then stalled: 408.
    let mut half = TcpStream::connect(proxy.addr).await.unwrap();
    half.write_all(b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 65536];
    let n = half.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200 "));
    half.write_all(b"GET /v1/models HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let (text, _) = read_to_close(&mut half, DEADLINE).await;
    assert!(text.contains("HTTP/1.1 408 "), "{text:?}");

    // A body that stops arriving is the client's timeout (408), not the
    // backend's (504), on a routed path and on a passed-through one.
    for path in ["/v1/chat/completions", "/v1/audio/speech"] {
        let mut upload = TcpStream::connect(proxy.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
        );
        upload.write_all(head.as_bytes()).await.unwrap();
        let (text, _) = read_to_close(&mut upload, DEADLINE).await;
        assert!(text.starts_with("HTTP/1.1 408 "), "{path}: {text:?}");
        assert_eq!(raw_error(&text).2, "request_timeout", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_bounded_and_pingora_errors_are_json() {
    let m = mocks(1).await;
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .server("max_header_size", "16KiB")
            .pool(Pool::new("chat").mocks(&[&m[0]]))
            .yaml()
    })
    .await;

    let big = "x".repeat(20 << 10);
    let answer = raw_exchange(
        proxy.addr,
        format!("GET /v1/models HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert!(
        answer.starts_with("HTTP/1.1 431 "),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(raw_error(&answer).2, "header_too_large");

    let fits = "x".repeat(12 << 10);
    let answer = raw_exchange(
        proxy.addr,
        format!("GET /v1/models HTTP/1.1\r\nHost: a\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(
        answer.starts_with("HTTP/1.1 200 "),
        "{}",
        &answer[..answer.len().min(200)]
    );

    // Errors Pingora would answer itself, before any of Switchyard's code
    // runs, come as Switchyard's JSON too.
    for (request, status) in [
        (&b"GET / HTTP/1.1\r\nBad header line\r\n\r\n"[..], "400"),
        (&b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"[..], "405"),
    ] {
        let answer = raw_exchange(proxy.addr, request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer:?}"
        );
        assert!(
            !answer.to_ascii_lowercase().contains("server: pingora"),
            "{answer:?}"
        );
        raw_error(&answer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_cleanly() {
    let m = mocks(1).await;
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .server("max_connections", 3)
            .server("timeouts.client_header", "30s")
            .pool(Pool::new("chat").mocks(&[&m[0]]))
            .yaml()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    // The proxy accepts the held connections in its own time: until it
    // has, a fourth is still served.
    let addr = proxy.addr;
    let refused = Arc::new(std::sync::Mutex::new(String::new()));
    wait_until(
        DEADLINE,
        "a connection beyond the limit to be refused",
        || {
            let refused = refused.clone();
            async move {
                let answer = tokio::task::spawn_blocking(move || {
                    raw_exchange(
                        addr,
                        b"GET /v1/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                    )
                })
                .await
                .unwrap();
                let done = answer.starts_with("HTTP/1.1 503 ");
                *refused.lock().unwrap() = answer;
                done
            }
        },
    )
    .await;
    let answer = refused.lock().unwrap().clone();
    assert!(answer.contains("retry-after: 1"), "{answer:?}");
    assert_eq!(raw_error(&answer).2, "too_many_connections");
    drop(held);
    let client = client();
    wait_until(DEADLINE, "a connection to be accepted again", || {
        let client = client.clone();
        let url = proxy.url("/v1/models");
        async move {
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let m = mocks(1).await;
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .pool(Pool::new("chat").mocks(&[&m[0]]))
            .yaml()
    })
    .await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    let mut batch = String::new();
    batch.push_str(&chat_request(false));
    batch.push_str("GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n");
    batch.push_str(&chat_request(false).replace("Host: a\r\n", "Host: a\r\nConnection: close\r\n"));
    conn.write_all(batch.as_bytes()).await.unwrap();
    let (text, _) = read_to_close(&mut conn, DEADLINE).await;
    let statuses: Vec<&str> = text.matches("HTTP/1.1 200 OK").collect();
    assert_eq!(statuses.len(), 3, "{text}");
    let first_models = text.find("\"object\":\"list\"").expect("the model list");
    let completions: Vec<usize> = text
        .match_indices("chat.completion\"")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(completions.len(), 2, "{text}");
    assert!(
        completions[0] < first_models && first_models < completions[1],
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_held_to_http_as_nginx_holds_them() {
    let m = mocks(1).await;
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .server("max_request_body", "1KiB")
            .pool(Pool::new("chat").mocks(&[&m[0]]))
            .yaml()
    })
    .await;
    let addr = proxy.addr;
    let exchange = |bytes: Vec<u8>| tokio::task::spawn_blocking(move || raw_exchange(addr, &bytes));

    for (request, status, code) in [
        (
            "get /v1/models HTTP/1.1\r\nHost: a\r\n\r\n",
            "400",
            "invalid_method",
        ),
        (
            "TRACE / HTTP/1.1\r\nHost: a\r\n\r\n",
            "405",
            "method_not_allowed",
        ),
        ("GET /v1/models HTTP/1.1\r\n\r\n", "400", "invalid_host"),
        (
            "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
            "400",
            "invalid_request_line",
        ),
        (
            "POST /v1/audio HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n",
            "413",
            "request_too_large",
        ),
    ] {
        let answer = exchange(request.as_bytes().to_vec()).await.unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?}: {answer:?}"
        );
        let (_, _, got) = raw_error(&answer);
        if !code.is_empty() {
            assert_eq!(got, code, "{request:?}");
        }
    }
    // A chunked body on a path Switchyard does not read is held to the
    // same limit.
    let chunk = "x".repeat(800);
    let answer = exchange(
        format!(
            "POST /v1/audio HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
             320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
        )
        .into_bytes(),
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer:?}");

    // `Expect: 100-continue` is answered: by Switchyard on a body it reads
    // itself, by the backend on one passed through.
    for (path, answered) in [("/v1/chat/completions", "200 OK"), ("/v1/other", "404")] {
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        let body = r#"{"model":"llama3","messages":[]}"#;
        conn.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut interim = [0u8; 64];
        let n = tokio::time::timeout(DEADLINE, conn.read(&mut interim))
            .await
            .expect("an interim answer before the body")
            .unwrap();
        assert!(
            String::from_utf8_lossy(&interim[..n]).starts_with("HTTP/1.1 100 Continue"),
            "{path}: {:?}",
            String::from_utf8_lossy(&interim[..n])
        );
        conn.write_all(body.as_bytes()).await.unwrap();
        let (text, _) = read_to_close(&mut conn, DEADLINE).await;
        assert!(
            text.contains(&format!("HTTP/1.1 {answered}")),
            "{path}: {text}"
        );
    }

    // HTTP/1.0 gets no chunked encoding: the stream ends with the
    // connection.
    let body = r#"{"model":"llama3","stream":true,"messages":[]}"#;
    let answer = exchange(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nHost: a\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
    .await
    .unwrap();
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(
        rest.starts_with("data: ") && rest.ends_with("data: [DONE]\n\n"),
        "{rest:?}"
    );
}

/// A TCP relay on a loopback port of its own to `to`: a hop the
/// configuration cannot see through.
async fn relay(to: Arc<std::sync::OnceLock<SocketAddr>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let Some(target) = to.get().copied() else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_loops_back_is_refused() {
    // The pool's backend leads back to the proxy itself through another
    // hop: the request comes back once and is refused, instead of opening
    // connections until none are left.
    let target = Arc::new(std::sync::OnceLock::new());
    let hop = relay(target.clone()).await;
    let pool = Pool::new("loop")
        .set("retries", 0)
        .backend(Backend::url(&format!("http://{hop}")));
    let proxy = Proxy::start(move |addr| Fleet::new(addr).pool(pool.clone()).yaml()).await;
    target.set(proxy.addr).unwrap();
    let resp = client().get(proxy.url("/anything")).send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    // The looped request got 508, which the first pass hands back.
    assert_eq!(status, 508, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_fields(&body).2, "loop_detected");
}
