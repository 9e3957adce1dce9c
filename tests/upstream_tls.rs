//! HTTPS backends, end to end: the real binary in front of mocks that
//! serve TLS with certificates this test's own CA signs, on loopback.
//!
//! - requests, streams, health checks and model discovery reach an HTTPS
//!   backend behind a base path, with its `Host`, its key (never the
//!   client's) and its own model name; connections are reused;
//! - the key appears in no output: log, `-t`, `/status`, `/metrics`,
//!   error bodies;
//! - a certificate from another CA makes the backend unhealthy, and the
//!   log says which backend and why;
//! - `tls.verify: false` works and is warned about at start and by `-t`;
//! - mutual TLS: a backend that wants a client certificate gets one from
//!   `tls.cert`/`tls.key`, and without one fails its checks, saying so;
//! - a `model_map` renames the model for its backend only: a retry on
//!   another backend sends the client's name.

mod common;

use common::tls::{Leaf, TestCa};
use common::*;
use serde_yaml::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// The key the cloud backend wants; grepped for in every output.
const SECRET: &str = "sk-upstream-SECRET-4242";

/// What the cloud mock calls its model.
const SERVED: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// A YAML value written as flow YAML.
fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

/// A test's CA, a server certificate for `localhost` and 127.0.0.1, and
/// the directory they are in.
struct Certs {
    dir: tempfile::TempDir,
    ca: TestCa,
    ca_file: std::path::PathBuf,
    server: MockTls,
}

fn certs(name: &str) -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&format!("{name} test CA"));
    let ca_file = ca.write(dir.path(), "ca");
    let leaf = ca.issue(dir.path(), "server", Leaf::default());
    let server = MockTls::new(&leaf.cert, &leaf.key);
    Certs {
        dir,
        ca,
        ca_file,
        server,
    }
}

/// An admin listener's address on a free port.
fn admin_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

async fn get_text(client: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = client.get(url).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_backend_behind_a_base_path_gets_its_key_host_and_model_name() {
    let c = certs("cloud");
    let key_file = c.dir.path().join("cloud.key");
    std::fs::write(&key_file, format!("{SECRET}\n")).unwrap();
    let cloud = mock_tls(
        MockConfig::new("cloud")
            .models([SERVED])
            .base_path("/openai")
            .ttft(Duration::ZERO),
        &c.server,
    )
    .await;
    let port = cloud.addr().port();
    let url = format!("https://localhost:{port}/openai");
    let admin = admin_addr();
    let fleet = |addr| {
        Fleet::new(addr)
            .admin("listen", admin.to_string())
            .models("refresh", "1s")
            .pool(
                Pool::new("cloud")
                    .http_checks("200ms")
                    .set(
                        "headers",
                        yaml(&format!(
                            "{{ Authorization: {{ file: {}, prefix: \"Bearer \" }} }}",
                            key_file.display()
                        )),
                    )
                    .backend(
                        Backend::url(&url)
                            .set("name", "cloud")
                            .set("tls.ca", c.ca_file.display().to_string())
                            .set(
                                "model_map",
                                yaml(&format!("{{ \"llama3.1:8b\": {SERVED} }}")),
                            ),
                    ),
            )
            .route("cloud", &[])
            .yaml()
    };
    let proxy = Proxy::start(fleet).await;
    let client = client();

    // Discovery over TLS, with the key and the base path: the mapped name
    // is listed, and routed on.
    wait_until(DEADLINE, "the mapped model in /v1/models", || async {
        get_text(&client, &proxy.url("/v1/models"))
            .await
            .1
            .contains("\"llama3.1:8b\"")
    })
    .await;
    let stats = cloud.stats();
    wait_until(DEADLINE, "a health check", || async {
        stats.headers_to("/openai/health").is_some()
    })
    .await;
    for path in ["/openai/v1/models", "/openai/health"] {
        let seen = stats
            .headers_to(path)
            .unwrap_or_else(|| panic!("no request to {path}: {:?}", stats.paths()));
        assert_eq!(seen["authorization"], format!("Bearer {SECRET}"), "{path}");
        assert_eq!(seen["host"], format!("localhost:{port}"), "{path}");
    }

    let resp = client
        .post(proxy.url("/v1/chat/completions"))
        .header("authorization", "Bearer client-key-for-switchyard")
        .header("x-api-key", "client-key-for-switchyard")
        .header("content-type", "application/json")
        .body(r#"{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body["model"], SERVED,
        "the response's model is the backend's"
    );
    let seen = stats.last_headers();
    assert_eq!(seen["authorization"], format!("Bearer {SECRET}"));
    assert!(
        seen.get("x-api-key").is_none(),
        "the client's key stays with Switchyard"
    );
    assert_eq!(seen["host"], format!("localhost:{port}"));
    assert_eq!(stats.last_model().as_deref(), Some(SERVED));
    let sent: serde_json::Value = serde_json::from_slice(&stats.last_body()).unwrap();
    assert_eq!(
        sent["messages"][0]["content"], "hi",
        "the rest of the body is as sent"
    );
    assert!(stats
        .paths()
        .contains(&"/openai/v1/chat/completions".to_string()));

    // A stream over TLS arrives whole.
    let (status, chunks) = stream_chunks(
        &client,
        &proxy.url("/v1/chat/completions"),
        r#"{"model":"llama3.1:8b","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body_text(&chunks).contains("data: [DONE]"));

    // Connections to the HTTPS backend are reused as plain ones are.
    for _ in 0..200 {
        assert_eq!(
            chat(&client, &proxy.url("/v1/chat/completions"), "llama3.1:8b")
                .await
                .unwrap()
                .0,
            200
        );
    }
    let metrics = get_text(&client, &format!("http://{admin}/metrics"))
        .await
        .1;
    let kind = |k: &str| {
        let line = format!("switchyard_upstream_connections_total{{kind=\"{k}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let (opened, reused) = (kind("opened"), kind("reused"));
    let share = reused / (opened + reused);
    eprintln!(
        "HTTPS upstream connections: {opened} opened, {reused} reused ({:.1}% reused)",
        share * 100.0
    );
    assert_eq!(opened + reused, 202.0, "{metrics}");
    assert!(share > 0.95, "{opened} opened, {reused} reused");

    // The key is in no output: an error body, /status, /metrics, -t, the log.
    let (status, missing) = get_text(&client, &proxy.url("/v1/models/not-there")).await;
    assert_eq!(status, 404);
    cloud.set_failure(Failure::Status(503));
    let failed = client
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(r#"{"model":"llama3.1:8b","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert!(failed.status().is_server_error());
    let failed = failed.text().await.unwrap();
    let status_json = get_text(&client, &format!("http://{admin}/status")).await.1;
    assert!(status_json.contains("cloud"), "{status_json}");
    let (code, checked) = check_config(&std::fs::read_to_string(&proxy.config).unwrap(), &[]);
    assert_eq!(code, 0, "{checked}");
    for (what, text) in [
        ("the 404 body", &missing),
        ("the 5xx body", &failed),
        ("/status", &status_json),
        ("/metrics", &metrics),
        ("-t", &checked),
        ("the log", &proxy.log_text()),
    ] {
        assert!(!text.contains(SECRET), "the key is in {what}:\n{text}");
        assert!(
            !text.contains("4242"),
            "a part of the key is in {what}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_makes_the_backend_unhealthy_saying_why() {
    let c = certs("real");
    let other = TestCa::new("another test CA");
    let other_file = other.write(c.dir.path(), "other");
    let cloud = mock_tls(MockConfig::new("cloud"), &c.server).await;
    let port = cloud.addr().port();
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .pool(
                Pool::new("cloud").http_checks("200ms").backend(
                    Backend::url(&format!("https://127.0.0.1:{port}"))
                        .set("name", "cloud")
                        .set("tls.ca", other_file.display().to_string()),
                ),
            )
            .yaml()
    })
    .await;
    proxy.wait_log("backend cloud is unhealthy").await;
    let log = proxy.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("backend cloud is unhealthy"))
        .unwrap();
    assert!(
        line.contains("UnknownIssuer") || line.contains("certificate"),
        "the line says why: {line}"
    );
    let resp = post_json(
        &client(),
        &proxy.url("/v1/chat/completions"),
        r#"{"model":"llama3","messages":[]}"#,
    )
    .await;
    assert_eq!(resp.status(), 503);
    let (_, _, code) = error_fields(&resp.bytes().await.unwrap());
    assert_eq!(code, "no_healthy_backend");
    assert_eq!(cloud.stats().health_checks(), 0, "no request got through");
    drop(c.ca);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_false_accepts_any_certificate_and_is_warned_about() {
    let c = certs("unknown");
    let cloud = mock_tls(MockConfig::new("cloud").ttft(Duration::ZERO), &c.server).await;
    let url = cloud.url();
    let fleet = |addr| {
        Fleet::new(addr)
            .pool(
                Pool::new("cloud").http_checks("200ms").backend(
                    Backend::url(&url)
                        .set("name", "cloud")
                        .set("tls.verify", false),
                ),
            )
            .yaml()
    };
    let warning = "tls.verify: false: the certificate of backend cloud is not checked";
    let (code, out) = check_config(&fleet(admin_addr()), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(warning), "-t warns: {out}");
    let proxy = Proxy::start(fleet).await;
    proxy.wait_log(warning).await;
    let stats = cloud.stats();
    wait_until(DEADLINE, "a health check over TLS", || async {
        stats.health_checks() > 0
    })
    .await;
    let (status, backend) = chat(&client(), &proxy.url("/v1/chat/completions"), "llama3")
        .await
        .unwrap();
    assert_eq!((status, backend.as_str()), (200, "cloud"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_works_with_a_client_certificate_and_fails_clearly_without() {
    let c = certs("mtls");
    let clients = TestCa::new("client test CA");
    let clients_file = clients.write(c.dir.path(), "clients");
    let client_cert = clients.issue(
        c.dir.path(),
        "switchyard",
        Leaf {
            names: &["switchyard"],
            client: true,
            ..Leaf::default()
        },
    );
    let wants_cert = c.server.clone().require_client_cert(&clients_file);
    let with = mock_tls(MockConfig::new("with").ttft(Duration::ZERO), &wants_cert).await;
    let without = mock_tls(MockConfig::new("without").ttft(Duration::ZERO), &wants_cert).await;
    let ca = c.ca_file.display().to_string();
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .pool(
                Pool::new("with").http_checks("200ms").backend(
                    Backend::url(&with.url())
                        .set("name", "with")
                        .set("tls.ca", ca.clone())
                        .set("tls.cert", client_cert.cert.display().to_string())
                        .set("tls.key", client_cert.key.display().to_string()),
                ),
            )
            .pool(
                Pool::new("without").http_checks("200ms").backend(
                    Backend::url(&without.url())
                        .set("name", "without")
                        .set("tls.ca", ca.clone()),
                ),
            )
            .route("without", &[("path_prefix", "/without")])
            .route("with", &[])
            .yaml()
    })
    .await;
    let stats = with.stats();
    wait_until(DEADLINE, "a health check over mutual TLS", || async {
        stats.health_checks() > 0
    })
    .await;
    let (status, backend) = chat(&client(), &proxy.url("/v1/chat/completions"), "llama3")
        .await
        .unwrap();
    assert_eq!((status, backend.as_str()), (200, "with"));
    proxy.wait_log("backend without is unhealthy").await;
    let log = proxy.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("backend without is unhealthy"))
        .unwrap();
    assert!(
        line.to_lowercase().contains("certificate"),
        "the line says why: {line}"
    );
    assert_eq!(with.stats().requests_to("/v1/chat/completions"), 1);
    assert_eq!(without.stats().requests(), 0, "no request got through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_backend_sends_the_clients_model_name() {
    let c = certs("retry");
    // The cloud backend is first and fails; the local one gets the retry.
    let cloud = mock_tls(
        MockConfig::new("cloud").models([SERVED]).fail_with(503),
        &c.server,
    )
    .await;
    let local = mock(
        MockConfig::new("local")
            .models(["llama3.1:8b"])
            .ttft(Duration::ZERO),
    )
    .await;
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .pool(
                Pool::new("chat")
                    .set("strategy", "priority")
                    .backend(
                        Backend::url(&cloud.url())
                            .set("name", "cloud")
                            .set("priority", 100)
                            .set("tls.ca", c.ca_file.display().to_string())
                            .set("models", yaml(&format!("[{SERVED}]")))
                            .set(
                                "model_map",
                                yaml(&format!("{{ \"llama3.1:8b\": {SERVED} }}")),
                            ),
                    )
                    .backend(
                        Backend::of(&local)
                            .set("priority", 10)
                            .set("models", yaml("[\"llama3.1:8b\"]")),
                    ),
            )
            .yaml()
    })
    .await;
    let (status, backend) = chat(&client(), &proxy.url("/v1/chat/completions"), "llama3.1:8b")
        .await
        .unwrap();
    assert_eq!((status, backend.as_str()), (200, "local"));
    assert_eq!(cloud.stats().last_model().as_deref(), Some(SERVED));
    assert_eq!(local.stats().last_model().as_deref(), Some("llama3.1:8b"));
    let sent = local.stats().last_body();
    let sent: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(sent["model"], "llama3.1:8b");
}
