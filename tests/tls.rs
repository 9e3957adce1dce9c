//! TLS termination against the real binary, with certificates made by the
//! test's own CA: chat and a stream over TLS 1.3 and over HTTP/2 (chunk by
//! chunk), the certificate chosen by SNI, certificates replaced by SIGHUP
//! under an open stream, a broken one refused by a reload and by `-t`, and
//! clients that do not speak TLS 1.2 or 1.3 turned away at once.

mod common;

use common::scrape::scrape;
use common::tls::{handshake, https_client, Issued, Leaf, TestCa};
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const CHAT: &str = r#"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str =
    r#"{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// One TLS listener at `addr` with `tls` (a YAML mapping) in front of
/// `backend`, without health checks.
fn tls_config(addr: SocketAddr, tls: &str, backend: &MockServer) -> String {
    format!(
        "server:\n  listen:\n    - {{ addr: \"{addr}\", tls: {tls} }}\n  threads: 2\n\
         pools:\n  chat:\n    health_check: {{ type: none }}\n\
         \x20   backends: [{{ url: \"{}\" }}]\n",
        backend.url()
    )
}

/// `{ cert: ..., key: ... }` for `issued`.
fn pair(issued: &Issued) -> String {
    format!(
        "{{ cert: \"{}\", key: \"{}\" }}",
        issued.cert.display(),
        issued.key.display()
    )
}

/// Issues `file` with `serial` for localhost and 127.0.0.1.
fn leaf(ca: &TestCa, dir: &Path, file: &str, serial: u64) -> Issued {
    ca.issue(
        dir,
        file,
        Leaf {
            serial,
            ..Leaf::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_a_stream_over_tls_1_3_reach_the_backend_as_https() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = leaf(&ca, certs.path(), "server", 7);
    let backend = mock(paced(
        "b0",
        Duration::from_millis(20),
        Duration::from_millis(20),
        5,
    ))
    .await;
    let proxy = Proxy::start(|addr| tls_config(addr, &pair(&cert), &backend)).await;

    let seen = handshake(proxy.addr, "localhost", &ca).await.unwrap();
    assert_eq!(seen.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(seen.serial, 7);

    let client = https_client(&ca, &["localhost"], proxy.addr, true);
    let url = format!(
        "https://localhost:{}/v1/chat/completions",
        proxy.addr.port()
    );
    let resp = post_json(&client, &url, CHAT).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let body = resp.text().await.unwrap();
    assert!(body.contains("tok4"), "{body}");
    let headers = backend.stats().last_headers();
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");

    let (status, chunks) = stream_chunks(&client, &url, STREAM).await;
    assert_eq!(status, 200);
    let text = body_text(&chunks);
    assert!(
        text.contains("tok4") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_alpn_carries_a_stream_chunk_by_chunk() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = leaf(&ca, certs.path(), "server", 1);
    let backend = mock(paced(
        "b0",
        Duration::from_millis(50),
        Duration::from_millis(200),
        8,
    ))
    .await;
    let proxy = Proxy::start(|addr| tls_config(addr, &pair(&cert), &backend)).await;
    assert_eq!(
        handshake(proxy.addr, "localhost", &ca)
            .await
            .unwrap()
            .alpn
            .as_deref(),
        Some(&b"h2"[..])
    );
    let client = https_client(&ca, &["localhost"], proxy.addr, false);
    let url = format!(
        "https://localhost:{}/v1/chat/completions",
        proxy.addr.port()
    );
    // Warm the connection so the measured stream pays no handshake.
    let resp = post_json(&client, &url, CHAT).await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    resp.bytes().await.unwrap();

    let start = Instant::now();
    let mut resp = post_json(&client, &url, STREAM).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    // When each token first appeared at the client.
    let mut arrivals: Vec<Duration> = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        while text.contains(&format!("tok{}", arrivals.len())) {
            arrivals.push(start.elapsed());
        }
    }
    assert_eq!(arrivals.len(), 8, "every token: {text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // Eight tokens 200 ms apart arrive spread over the stream, not at once
    // at its end: seven gaps of 200 ms are 1.4 s.
    let spread = arrivals[7] - arrivals[0];
    assert!(
        spread > Duration::from_millis(1000),
        "tokens arrived at {arrivals:?}"
    );
    for pair in arrivals.windows(2) {
        assert!(
            pair[1] > pair[0],
            "two tokens arrived in one chunk: {arrivals:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_of_the_name_asked_for() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let issue = |file: &str, names: &[&str], serial: u64| {
        ca.issue(
            certs.path(),
            file,
            Leaf {
                names,
                serial,
                ..Leaf::default()
            },
        )
    };
    let first = issue("first", &["first.test", "127.0.0.1"], 11);
    let api = issue("api", &["api.test"], 22);
    let wild = issue("wild", &["*.chat.test"], 33);
    let backend = mock(MockConfig::new("b0").ttft(Duration::ZERO).tokens(1)).await;
    let tls = format!(
        "{{ certs: [{}, {}, {}] }}",
        pair(&first),
        pair(&api),
        pair(&wild)
    );
    let proxy = Proxy::start(|addr| tls_config(addr, &tls, &backend)).await;

    let serial = |sni: &'static str| {
        let ca = &ca;
        let addr = proxy.addr;
        async move { handshake(addr, sni, ca).await.map(|h| h.serial) }
    };
    assert_eq!(serial("api.test").await, Ok(22));
    assert_eq!(serial("eu.chat.test").await, Ok(33));
    assert_eq!(serial("first.test").await, Ok(11));
    // No SNI (an address): the first certificate.
    assert_eq!(serial("127.0.0.1").await, Ok(11));
    // A name no certificate has gets the first, which the client refuses.
    let unknown = serial("other.test").await.unwrap_err();
    assert!(unknown.contains("certificate"), "{unknown}");

    // A request by name goes through on the certificate for that name.
    let client = https_client(&ca, &["api.test"], proxy.addr, true);
    let url = format!("https://api.test:{}/v1/chat/completions", proxy.addr.port());
    assert_eq!(post_json(&client, &url, CHAT).await.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_new_certificates_to_new_handshakes_and_keeps_open_streams() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = leaf(&ca, certs.path(), "server", 1);
    let backend = mock(paced(
        "b0",
        Duration::from_millis(50),
        Duration::from_millis(50),
        40,
    ))
    .await;
    let proxy = Proxy::start(|addr| tls_config(addr, &pair(&cert), &backend)).await;
    assert_eq!(
        handshake(proxy.addr, "localhost", &ca)
            .await
            .unwrap()
            .serial,
        1
    );

    // A stream over HTTP/2, open across the reload.
    let client = https_client(&ca, &["localhost"], proxy.addr, false);
    let url = format!(
        "https://localhost:{}/v1/chat/completions",
        proxy.addr.port()
    );
    let mut resp = post_json(&client, &url, STREAM).await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let mut text = String::from_utf8_lossy(&resp.chunk().await.unwrap().unwrap()).into_owned();

    // certbot's renewal: new files in place of the old, then a reload.
    leaf(&ca, certs.path(), "server", 2);
    proxy.signal("HUP");
    proxy.wait_log("reload 2:").await;
    assert_eq!(
        handshake(proxy.addr, "localhost", &ca)
            .await
            .unwrap()
            .serial,
        2
    );
    assert!(
        proxy.log_text().contains("serial 02"),
        "the new certificate is logged"
    );

    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("tok39") && text.ends_with("data: [DONE]\n\n"),
        "the stream opened before the reload ends whole: {text}"
    );
    // The same connection still serves.
    assert_eq!(post_json(&client, &url, CHAT).await.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_broken_certificate_fails_and_the_old_one_serves() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = leaf(&ca, certs.path(), "server", 1);
    let backend = mock(MockConfig::new("b0").ttft(Duration::ZERO).tokens(1)).await;
    let admin = free_port();
    let proxy = Proxy::start(|addr| {
        tls_config(addr, &pair(&cert), &backend)
            + &format!("admin: {{ listen: \"127.0.0.1:{admin}\" }}\n")
    })
    .await;

    // A key that is not the certificate's: another certificate's key.
    let other = leaf(&ca, certs.path(), "other", 9);
    std::fs::copy(&other.key, &cert.key).unwrap();
    proxy.signal("HUP");
    proxy.wait_log("reload failed").await;
    let log = proxy.log_text();
    assert!(
        log.contains(&format!(
            "server.listen[0].tls: key {:?} is not the key of certificate {:?}",
            cert.key.display(),
            cert.cert.display()
        )),
        "{log}"
    );
    assert_eq!(
        handshake(proxy.addr, "localhost", &ca)
            .await
            .unwrap()
            .serial,
        1
    );

    // A certificate file that is not PEM.
    std::fs::write(&cert.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    proxy.signal("HUP");
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    wait_until(DEADLINE, "two failed reloads", || async {
        scrape(&client(), admin, None)
            .await
            .value("switchyard_reloads_total", &[("result", "failed")])
            == Some(2.0)
    })
    .await;
    assert!(proxy.log_text().contains(&format!(
        "server.listen[0].tls.cert: {:?}",
        cert.cert.display()
    )));
    assert_eq!(
        handshake(proxy.addr, "localhost", &ca)
            .await
            .unwrap()
            .serial,
        1
    );
    let client = https_client(&ca, &["localhost"], proxy.addr, true);
    let url = format!(
        "https://localhost:{}/v1/chat/completions",
        proxy.addr.port()
    );
    assert_eq!(post_json(&client, &url, CHAT).await.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_missing_and_mismatched_files_and_warns_of_expiry() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let good = leaf(&ca, certs.path(), "good", 1);
    let other = leaf(&ca, certs.path(), "other", 2);
    let soon = ca.issue(
        certs.path(),
        "soon",
        Leaf {
            valid_for: Duration::from_secs(5 * 24 * 3600),
            ..Leaf::default()
        },
    );
    let backend = mock(MockConfig::new("b0")).await;
    let at = |tls: &str| tls_config("127.0.0.1:8443".parse().unwrap(), tls, &backend);

    let missing = certs.path().join("missing.crt");
    let (code, out) = check_config(
        &at(&format!(
            "{{ cert: \"{}\", key: \"{}\" }}",
            missing.display(),
            good.key.display()
        )),
        &[],
    );
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains(&format!(
            "server.listen[0].tls.cert: {:?}: cannot read",
            missing.display()
        )),
        "{out}"
    );

    let (code, out) = check_config(
        &at(&format!(
            "{{ cert: \"{}\", key: \"{}\" }}",
            good.cert.display(),
            other.key.display()
        )),
        &[],
    );
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains(&format!(
            "server.listen[0].tls: key {:?} is not the key of certificate {:?}",
            other.key.display(),
            good.cert.display()
        )),
        "{out}"
    );

    let (code, out) = check_config(&at(&pair(&soon)), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "warning: server.listen[0].tls.cert: {:?} expires in 4 days",
            soon.cert.display()
        )),
        "{out}"
    );
    let (code, out) = check_config(&at(&pair(&good)), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_old_tls_on_the_tls_port_fail_at_once() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = leaf(&ca, certs.path(), "server", 1);
    let backend = mock(MockConfig::new("b0")).await;
    let proxy = Proxy::start(|addr| tls_config(addr, &pair(&cert), &backend)).await;

    let start = Instant::now();
    let answer = raw_bytes(proxy.addr, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(start.elapsed() < Duration::from_secs(5), "closed at once");
    assert_eq!(answer.first(), Some(&0x15), "a TLS alert: {answer:?}");

    // A ClientHello that offers TLS 1.1 and nothing later.
    let start = Instant::now();
    let answer = raw_bytes(proxy.addr, &client_hello_tls11());
    assert!(start.elapsed() < Duration::from_secs(5), "closed at once");
    assert_eq!(answer.first(), Some(&0x15), "a TLS alert: {answer:?}");

    // And the listener still serves.
    assert_eq!(
        handshake(proxy.addr, "localhost", &ca)
            .await
            .unwrap()
            .serial,
        1
    );
}

/// Sends `bytes` on a new connection; all that comes back before the
/// server closes it.
fn raw_bytes(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    answer
}

/// A TLS 1.1 ClientHello (RFC 4346): version 3.2 in the record and the
/// hello, two CBC suites, no extensions, so no later version is offered.
fn client_hello_tls11() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x02];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}
