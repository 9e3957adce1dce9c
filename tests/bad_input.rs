//! Bad configurations, bad requests and dead backends get clear answers, and
//! the proxy keeps serving.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn dash_t_validates_and_lists_every_error() {
    let good = "pools:\n  chat:\n    backends: [{ url: \"http://127.0.0.1:9\" }]\n";
    let (code, out) = check_config(good, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is valid"));

    let bad = "server:\n  listn: []\npools:\n  chat:\n    timeouts: { connect: fast }\n    backends: [{ url: \"htp://x\" }]\nroutes:\n  - { pool: code }\n";
    let (code, out) = check_config(bad, &[]);
    assert_eq!(code, 64, "{out}");
    for expected in [
        "server.listn: unknown key",
        "pools.chat.timeouts.connect: \"fast\" is not a duration",
        "pools.chat.backends[0].url: \"htp://x\" is not an http or https URL",
        "routes[0].pool: \"code\" is not a pool defined under pools",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    let (code, out) = check_config("pools: [", &[]);
    assert_eq!(code, 64, "{out}");
    assert!(!out.contains("panicked"), "{out}");

    let missing = Command::new(binary())
        .args(["-t", "-c", "/nonexistent/switchyard.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("cannot read /nonexistent/switchyard.yaml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_malformed_http_and_dead_fleet() {
    let m = mocks(1).await;
    let live = m[0].url();
    // Two pools: one alive, one whose only backend refuses connections.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start(|addr| {
        format!(
            "server:\n  listen: [\"{addr}\"]\n  threads: 2\n\
             pools:\n  live:\n    health_check: {{ type: none }}\n    backends: [{{ url: \"{live}\" }}]\n\
             \x20 dead:\n    health_check: {{ type: none }}\n    backends: [{{ url: \"{dead}\" }}]\n\
             routes:\n  - {{ path_prefix: /v1, pool: live }}\n  - {{ path_prefix: /dead, pool: dead }}\n"
        )
    })
    .await;
    let client = client();

    // No route: 404 with a JSON error.
    let resp = client.get(proxy.url("/nowhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let (message, kind, code) = error_fields(&resp.bytes().await.unwrap());
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("invalid_request_error", "no_route")
    );
    assert!(message.contains("/nowhere"));

    // All backends down: a fast 502 with a JSON error, not a hang.
    let start = Instant::now();
    let resp = client
        .post(proxy.url("/dead/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(start.elapsed() < Duration::from_secs(5));
    let (_, kind, code) = error_fields(&resp.bytes().await.unwrap());
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("server_error", "backend_error")
    );

    // Malformed HTTP: 400, and the connection is closed.
    let bad_length = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n";
    let answer = raw_exchange(proxy.addr, bad_length);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    let answer = raw_exchange(proxy.addr, b"\x16\x03\x01garbage that is not http\r\n\r\n");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );

    // And it keeps serving.
    let (status, backend) = chat(&client, &proxy.url("/v1/chat/completions"), "llama3")
        .await
        .unwrap();
    assert_eq!((status, backend.as_str()), (200, "b0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_fleet_gets_503_with_retry_after() {
    let m = mocks(2).await;
    for b in &m {
        b.set_failure(Failure::Status(500));
    }
    let backends = backends_yaml(&[&m[0], &m[1]], &[]);
    let proxy = Proxy::start(|addr| one_pool(addr, "round_robin", &backends)).await;
    proxy.wait_log("backend b0 is unhealthy").await;
    proxy.wait_log("backend b1 is unhealthy").await;
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .body(r#"{"model":"llama3"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let (message, kind, code) = error_fields(&resp.bytes().await.unwrap());
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("server_error", "no_healthy_backend")
    );
    assert_eq!(
        message,
        "no healthy backend for model 'llama3' in pool 'chat'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_clients_get_ollama_shaped_errors() {
    let m = mocks(1).await;
    let backends = backends_yaml(&[&m[0]], &[]);
    let proxy = Proxy::start(|addr| one_pool(addr, "round_robin", &backends)).await;
    let client = client();
    for (path, body, status) in [
        ("/api/chat", r#"{"messages":[]}"#, 400),
        ("/api/generate", r#"{"model":"nope","prompt":"hi"}"#, 404),
        ("/v1/chat/completions", r#"{"messages":[]}"#, 400),
    ] {
        let resp = client
            .post(proxy.url(path))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        if path.starts_with("/api/") {
            // What the ollama CLI and its libraries read: a string.
            assert!(v["error"].is_string(), "{path}: {v}");
        } else {
            assert!(v["error"]["code"].is_string(), "{path}: {v}");
        }
    }
}

#[test]
fn a_busy_listen_address_fails_the_start_at_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!(
            "server:\n  listen: [\"{addr}\"]\npools:\n  chat:\n    backends: [{{ url: \"http://127.0.0.1:9\" }}]\n"
        ),
    )
    .unwrap();
    for args in [
        vec!["-c".to_string(), path.display().to_string()],
        vec![
            "--demo".to_string(),
            "--listen".to_string(),
            addr.to_string(),
        ],
    ] {
        let start = Instant::now();
        let out = Command::new(binary()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("listen {addr}: address already in use")),
            "{args:?}: {stderr}"
        );
        assert!(
            !stdout.contains("curl"),
            "no banner for a demo that cannot serve"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn a_daemon_that_could_not_write_its_pid_file_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let missing = dir.path().join("no-such-dir").join("switchyard.pid");
    std::fs::write(
        &path,
        format!(
            "server:\n  listen: [\"127.0.0.1:{}\"]\n  pid_file: {}\n\
             pools:\n  chat:\n    backends: [{{ url: \"http://127.0.0.1:9\" }}]\n",
            free_port(),
            missing.display()
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["-d", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("server.pid_file") && stderr.contains("does not exist"),
        "{stderr}"
    );
}
