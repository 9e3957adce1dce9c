//! Model-aware routing through the real binary: discovery, routing on the
//! body's model, aliases and fallbacks, and the fleet's model list.

mod common;

use common::*;
use std::time::Duration;

fn fleet_yaml(addr: std::net::SocketAddr, backends: &str, extra: &str) -> String {
    format!(
        "server:\n  listen: [\"{addr}\"]\n  threads: 2\n  max_request_body: 4MiB\n\
         models:\n  refresh: 300ms\n{extra}\
         pools:\n  chat:\n    health_check: {{ type: http, path: /health, interval: 200ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1 }}\n    backends:\n{backends}"
    )
}

async fn three() -> Vec<MockServer> {
    let quick = |name: &str, models: &[&str]| {
        MockConfig::new(name)
            .models(models.iter().copied())
            .ttft(Duration::ZERO)
            .tokens(1)
    };
    vec![
        mock(quick("A", &["llama3", "qwen"])).await,
        mock(quick("B", &["llama3"])).await,
        mock(quick("C", &["codestral"])).await,
    ]
}

/// The three mocks of [`three`] behind a proxy, `extra` under `models:`.
async fn three_behind_proxy(extra: &str) -> (Vec<MockServer>, Proxy) {
    let m = three().await;
    let backends = backends_yaml(&[&m[0], &m[1], &m[2]], &[]);
    let proxy = Proxy::start(|addr| fleet_yaml(addr, &backends, extra)).await;
    (m, proxy)
}

fn chats(m: &MockServer) -> u64 {
    m.stats().requests_to("/v1/chat/completions") + m.stats().requests_to("/api/chat")
}

/// Waits until the proxy's `/v1/models` lists exactly `want`.
async fn wait_models(proxy: &Proxy, want: &[&str]) {
    let url = proxy.url("/v1/models");
    let client = client();
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    wait_until(DEADLINE, &format!("models {want:?}"), || {
        let (client, url, want) = (client.clone(), url.clone(), want.clone());
        async move { listed(&client, &url, "data", "id").await == want }
    })
    .await;
}

/// The names a model list at `url` holds, sorted: `field` of each entry of
/// the array `list` (OpenAI: `data`/`id`; Ollama: `models`/`name`).
async fn listed(client: &reqwest::Client, url: &str, list: &str, field: &str) -> Vec<String> {
    let Ok(resp) = client.get(url).send().await else {
        return Vec::new();
    };
    let v: serde_json::Value = resp.json_value().await;
    let mut names: Vec<String> = v[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m[field].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

trait JsonValue {
    async fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> serde_json::Value {
        let bytes = self.bytes().await.unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_only_backends_that_serve_their_model() {
    let (m, proxy) = three_behind_proxy("").await;
    wait_models(&proxy, &["codestral", "llama3", "qwen"]).await;

    // /api/tags lists each model once too.
    let names = listed(&client(), &proxy.url("/api/tags"), "models", "name").await;
    assert_eq!(names, ["codestral", "llama3", "qwen"]);

    // One model of the list, as the OpenAI SDK's models.retrieve asks.
    let one = client()
        .get(proxy.url("/v1/models/codestral"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status().as_u16(), 200);
    let v = one.json_value().await;
    assert_eq!(
        (v["id"].as_str(), v["object"].as_str()),
        (Some("codestral"), Some("model"))
    );
    let none = client()
        .get(proxy.url("/v1/models/gpt-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status().as_u16(), 404);
    assert_eq!(none.json_value().await["error"]["code"], "model_not_found");

    let client = client();
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..6 {
        assert_eq!(
            chat(&client, &url, "codestral").await.unwrap(),
            (200, "C".into())
        );
        assert_eq!(
            chat(&client, &url, "qwen").await.unwrap(),
            (200, "A".into())
        );
    }
    let mut llama = std::collections::HashSet::new();
    for _ in 0..10 {
        let (status, backend) = chat(&client, &url, "llama3").await.unwrap();
        assert_eq!(status, 200);
        llama.insert(backend);
    }
    assert_eq!(
        llama,
        ["A".to_string(), "B".to_string()].into_iter().collect()
    );

    // The Ollama API routes the same way.
    let resp = client
        .post(proxy.url("/api/chat"))
        .body(r#"{"model":"codestral","stream":false}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-mock-backend"], "C");

    // An unknown model reaches no backend.
    let before: Vec<u64> = m.iter().map(chats).collect();
    let resp = client
        .post(&url)
        .body(r#"{"model":"gpt-5","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let (message, _, code) = error_fields(&resp.bytes().await.unwrap());
    assert_eq!(code, "model_not_found");
    assert!(
        message.contains("gpt-5") && !message.contains("127.0.0.1"),
        "{message}"
    );
    assert_eq!(m.iter().map(chats).collect::<Vec<_>>(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_with_the_model_last_is_routed_and_forwarded_byte_for_byte() {
    let (m, proxy) = three_behind_proxy("").await;
    wait_models(&proxy, &["codestral", "llama3", "qwen"]).await;
    let client = client();
    for stream in [false, true] {
        // 2 MiB of prompt, then the model, as the OpenAI Python SDK orders it.
        let prompt: String = (0..(2 << 20))
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{prompt}"}}],"stream":{stream},"model":"codestral"}}"#
        );
        let resp = client
            .post(proxy.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-mock-backend"], "C");
        let text = resp.text().await.unwrap();
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        }
        let got = m[2].stats().last_body();
        assert_eq!(got.len(), body.len());
        assert!(
            got == body.as_bytes(),
            "the backend received other bytes than were sent"
        );
    }
    // The proxy keeps serving small requests normally afterwards.
    assert_eq!(
        chat(&client, &proxy.url("/v1/chat/completions"), "qwen")
            .await
            .unwrap(),
        (200, "A".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_models_appearing_and_disappearing() {
    let (m, proxy) = three_behind_proxy("").await;
    wait_models(&proxy, &["codestral", "llama3", "qwen"]).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(chat(&client, &url, "phi3").await.unwrap().0, 404);

    m[1].set_models(vec!["llama3".into(), "phi3".into()]);
    wait_until(DEADLINE, "phi3 to be routed", || async {
        chat(&client, &url, "phi3").await.unwrap() == (200, "B".into())
    })
    .await;

    m[2].set_models(vec![]);
    m[2].set_models(vec!["starcoder".into()]);
    wait_models(&proxy, &["llama3", "phi3", "qwen", "starcoder"]).await;
    let before = chats(&m[2]);
    assert_eq!(chat(&client, &url, "codestral").await.unwrap().0, 404);
    assert_eq!(
        chats(&m[2]),
        before,
        "a model that disappeared still got traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_and_fallbacks() {
    let extra = "  aliases: { gpt-4o: codestral }\n  fallbacks: { qwen: [mistral, llama3] }\n";
    let (m, proxy) = three_behind_proxy(extra).await;
    wait_models(&proxy, &["codestral", "gpt-4o", "llama3", "qwen"]).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");

    // The alias is routed as its target and the backend gets the target's name.
    let sent = r#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","stream":false}"#;
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(sent)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    assert_eq!(resp.headers()["x-mock-backend"], "C");
    assert_eq!(m[2].stats().last_model().as_deref(), Some("codestral"));
    assert_eq!(
        m[2].stats().last_body(),
        sent.replace("gpt-4o", "codestral").as_bytes()
    );

    // qwen's only backend goes down: the first fallback with a healthy
    // backend serves it, and the response says which model that was.
    m[0].set_failure(Failure::Status(503));
    proxy.wait_log("backend A is unhealthy").await;
    let resp = client
        .post(&url)
        .body(r#"{"model":"qwen"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    assert_eq!(resp.headers()["x-switchyard-model"], "llama3");
    assert_eq!(resp.headers()["x-mock-backend"], "B");
    assert_eq!(m[1].stats().last_model().as_deref(), Some("llama3"));

    // Without a fallback, a model whose backends are all down is a 503.
    let resp = client
        .post(&url)
        .body(r#"{"model":"codestral"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    m[2].set_failure(Failure::Status(503));
    proxy.wait_log("backend C is unhealthy").await;
    let resp = client
        .post(&url)
        .body(r#"{"model":"codestral"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_missing_and_oversized_bodies_reach_no_backend() {
    let (m, proxy) = three_behind_proxy("").await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    let before: Vec<u64> = m.iter().map(chats).collect();
    for (body, code) in [
        (
            r#"{"model": "llama3", "messages": [}"#.to_string(),
            "invalid_json",
        ),
        ("not json at all".to_string(), "invalid_json"),
        (r#"{"messages": []}"#.to_string(), "model_required"),
    ] {
        let resp = client.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        assert_eq!(error_fields(&resp.bytes().await.unwrap()).2, code, "{body}");
    }
    let huge = format!(
        r#"{{"model":"llama3","messages":"{}"}}"#,
        "x".repeat(5 << 20)
    );
    let resp = client.post(&url).body(huge).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        error_fields(&resp.bytes().await.unwrap()).1,
        "invalid_request_error"
    );
    assert_eq!(m.iter().map(chats).collect::<Vec<_>>(), before);
    assert_eq!(
        chat(&client, &url, "qwen").await.unwrap(),
        (200, "A".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_the_model_keeps_a_model_on_one_backend() {
    let quick = |name: &str| {
        MockConfig::new(name)
            .models(["llama3", "qwen", "phi3"])
            .ttft(Duration::ZERO)
            .tokens(1)
    };
    let m = [
        mock(quick("A")).await,
        mock(quick("B")).await,
        mock(quick("C")).await,
    ];
    let pool = Pool::new("chat")
        .http_checks("200ms")
        .set("strategy", "consistent_hash")
        .set("hash_key", "model")
        .mocks(&[&m[0], &m[1], &m[2]]);
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .server("max_request_body", "4MiB")
            .models("refresh", "300ms")
            .pool(pool.clone())
            .yaml()
    })
    .await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    for model in ["llama3", "qwen", "phi3"] {
        let (_, first) = chat(&client, &url, model).await.unwrap();
        for _ in 0..5 {
            assert_eq!(
                chat(&client, &url, model).await.unwrap().1,
                first,
                "{model} moved"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ps_lists_each_loaded_model_once() {
    let (_m, proxy) = three_behind_proxy("").await;
    let loaded = listed(&client(), &proxy.url("/api/ps"), "models", "name").await;
    // Each mock reports its first model as loaded: llama3 on A and B.
    assert_eq!(loaded, ["codestral", "llama3"]);
}

/// The entry named `name` in the array `list` of the JSON at `url`.
async fn entry(url: &str, list: &str, key: &str, name: &str) -> serde_json::Value {
    let v = client().get(url).send().await.unwrap().json_value().await;
    v[list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e[key] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {url}: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_lists_keep_what_the_backends_reported() {
    let (m, proxy) = three_behind_proxy("  aliases: { coder: codestral }\n").await;
    wait_models(&proxy, &["codestral", "coder", "llama3", "qwen"]).await;
    let direct = |path: &str| format!("http://{}{path}", m[2].addr());

    // /api/tags: sizes, digests, details as backend C listed them.
    let ours = entry(&proxy.url("/api/tags"), "models", "name", "codestral").await;
    let theirs = entry(&direct("/api/tags"), "models", "name", "codestral").await;
    let digest = theirs["digest"].clone();
    for field in ["size", "digest", "details"] {
        assert_eq!(ours[field], theirs[field], "{field}: {ours} vs {theirs}");
    }
    assert_ne!(ours["size"], 0, "{ours}");
    assert_ne!(ours["modified_at"], "1970-01-01T00:00:00Z", "{ours}");

    // /v1/models and /v1/models/{id}: created and owned_by as C said.
    let theirs = entry(&direct("/v1/models"), "data", "id", "codestral").await;
    assert_ne!(theirs["created"], 0);
    for ours in [
        entry(&proxy.url("/v1/models"), "data", "id", "codestral").await,
        client()
            .get(proxy.url("/v1/models/codestral"))
            .send()
            .await
            .unwrap()
            .json_value()
            .await,
    ] {
        assert_eq!(ours, theirs);
    }

    // An alias has its target's entries under its own name.
    let alias = entry(&proxy.url("/api/tags"), "models", "name", "coder").await;
    assert_eq!(alias["digest"], digest);
    assert_eq!(alias["model"], "coder");
    let alias = entry(&proxy.url("/v1/models"), "data", "id", "coder").await;
    assert_eq!(
        (&alias["created"], &alias["owned_by"]),
        (&theirs["created"], &theirs["owned_by"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_show_and_anthropic_messages_are_routed_on_their_model() {
    let (_m, proxy) = three_behind_proxy("").await;
    wait_models(&proxy, &["codestral", "llama3", "qwen"]).await;
    let client = client();
    for (path, body) in [
        ("/api/show", r#"{"name":"codestral"}"#),
        ("/api/show", r#"{"model":"codestral","verbose":true}"#),
        ("/api/show", r#"{"model":"","name":"codestral"}"#),
        (
            "/v1/messages",
            r#"{"model":"codestral","max_tokens":8,"messages":[]}"#,
        ),
        (
            "/v1/messages/count_tokens",
            r#"{"model":"codestral","messages":[]}"#,
        ),
    ] {
        for _ in 0..3 {
            let resp = post_json(&client, &proxy.url(path), body).await;
            assert_eq!(resp.headers()["x-mock-backend"], "C", "{path} {body}");
        }
    }
    // Without a model, refused in the path's own error shape.
    let resp = post_json(&client, &proxy.url("/api/show"), r#"{"verbose":true}"#).await;
    assert_eq!(resp.status(), 400);
    let v = resp.json_value().await;
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("model")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_management_reaches_no_backend_chosen_at_random() {
    let m = three().await;
    let pool = backends_yaml(&[&m[0], &m[1]], &[]);
    let single = backends_yaml(&[&m[2]], &[]);
    let proxy = Proxy::start(|addr| {
        format!(
            "server:\n  listen: [\"{addr}\"]\n\
             routes:\n  - {{ path_prefix: /api/pull, pool: one }}\n  - {{ path_prefix: /, pool: many }}\n\
             pools:\n  many:\n    health_check: {{ type: none }}\n    backends:\n{pool}\
             \x20 one:\n    health_check: {{ type: none }}\n    backends:\n{single}"
        )
    })
    .await;
    let client = client();
    // What the test sends, not model discovery's lists, which may still
    // be arriving on a loaded machine.
    let sent = |b: &MockServer| {
        let s = b.stats();
        let lists: u64 = ["/v1/models", "/api/tags", "/api/ps"]
            .iter()
            .map(|p| s.requests_to(p))
            .sum();
        s.requests() - lists - s.health_checks()
    };
    let before: Vec<u64> = m.iter().map(sent).collect();
    for (method, path) in [
        ("POST", "/api/push"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/copy"),
        ("POST", "/api/create"),
        ("HEAD", "/api/blobs/sha256:00"),
        ("POST", "/api/blobs/sha256:00"),
    ] {
        let resp = client
            .request(method.parse().unwrap(), proxy.url(path))
            .body(r#"{"model":"llama3"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{method} {path}");
        if method != "HEAD" {
            let v = resp.json_value().await;
            let e = v["error"].as_str().unwrap_or_default();
            assert!(e.contains("each backend"), "{v}");
        }
    }
    assert_eq!(m.iter().map(sent).collect::<Vec<_>>(), before);
    // A route to a pool of one backend passes it on.
    let resp = post_json(&client, &proxy.url("/api/pull"), r#"{"model":"x"}"#).await;
    assert_eq!(resp.headers()["x-mock-backend"], "C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_backend_could_read_as_another_model_reaches_no_backend() {
    let (m, proxy) = three_behind_proxy("").await;
    wait_models(&proxy, &["codestral", "llama3", "qwen"]).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    let before: Vec<u64> = m.iter().map(chats).collect();
    for body in [
        r#"{"model":"llama3","m\u006fdel":"qwen"}"#,
        r#"{"model":"llama3","model":"qwen"}"#,
        r#"{"model":"llama3","MODEL":"qwen"}"#,
    ] {
        let resp = client.post(&url).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let (message, _, code) = error_fields(&resp.bytes().await.unwrap());
        assert_eq!(code, "invalid_json", "{body}");
        assert!(message.contains("more than once"), "{message}");
    }
    assert_eq!(m.iter().map(chats).collect::<Vec<_>>(), before);

    // An escaped key alone is the model, routed as the backend reads it.
    let resp = client
        .post(&url)
        .body(r#"{"m\u006fdel":"codestral"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-mock-backend"], "C");
}

/// A backend that answers every request with 200 `{}`. Its model list
/// cannot be read, so Switchyard offers it any model, whatever the name.
async fn accepts_anything() -> RawBackend {
    RawBackend::start(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
         content-length: 2\r\nconnection: close\r\n\r\n{}",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_model_names_are_refused_before_forwarding() {
    let backend = accepts_anything().await;
    let backends = format!("      - {{ name: any, url: \"{}\" }}\n", backend.url);
    let proxy = Proxy::start(|addr| fleet_yaml(addr, &backends, "")).await;
    proxy.wait_log("backend any: cannot list models").await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    // The backend is reachable and takes a usable name.
    let resp = client
        .post(&url)
        .body(r#"{"model":"llama3"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-model"], "llama3");
    let huge = "m".repeat(900 << 10);
    for body in [
        r#"{"model":"llama3\u0000"}"#.to_string(),
        r#"{"model":"llama3\r\nx-injected: 1"}"#.to_string(),
        format!(r#"{{"model":"{huge}"}}"#),
    ] {
        let resp = client.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{}", &body[..body.len().min(40)]);
        assert!(resp.headers().get("x-switchyard-model").is_none());
        let (message, kind, code) = error_fields(&resp.bytes().await.unwrap());
        assert_eq!(
            (kind.as_str(), code.as_str()),
            ("invalid_request_error", "invalid_model")
        );
        assert!(message.len() < 200, "{message}");
    }
    assert_eq!(backend.posts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_listing_too_many_models_is_bounded_and_logged_short() {
    let names: Vec<String> = (0..10_050).map(|i| format!("m-{i:05}")).collect();
    let big = mock(
        MockConfig::new("big")
            .models(names)
            .ttft(Duration::ZERO)
            .tokens(1),
    )
    .await;
    let backends = backends_yaml(&[&big], &[]);
    let proxy = Proxy::start(|addr| fleet_yaml(addr, &backends, "")).await;
    proxy.wait_log("backend big: 10000 models: m-00000, ").await;
    assert!(proxy
        .log_text()
        .contains("backend big: its list leaves out 50 models beyond the first 10000"));
    let client = client();
    let ids = listed(&client, &proxy.url("/v1/models"), "data", "id").await;
    assert_eq!(ids.len(), 10_000);
    assert_eq!(ids.last().map(String::as_str), Some("m-09999"));
    let longest = proxy.log_text().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1000, "a log line of {longest} bytes");

    let url = proxy.url("/v1/chat/completions");
    assert_eq!(chat(&client, &url, "m-09999").await.unwrap().0, 200);
    assert_eq!(chat(&client, &url, "m-10049").await.unwrap().0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_api_ps_calls_ask_each_backend_once() {
    let (m, proxy) = three_behind_proxy("").await;
    let client = client();
    let url = proxy.url("/api/ps");
    let calls = (0..10).map(|_| listed(&client, &url, "models", "name"));
    for loaded in futures_util::future::join_all(calls).await {
        assert_eq!(loaded, ["codestral", "llama3"]);
    }
    // `/api/ps` is not among the mock's named paths: it counts as other.
    for backend in &m {
        let asked = backend.stats().requests_to("/api/ps");
        // One fetch for all ten, or two if the machine is so slow that the
        // first answer went stale while the calls were still arriving.
        assert!(
            (1..=2).contains(&asked),
            "{} asked {asked} times",
            backend.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_wants_an_api_key_is_named_in_a_warning() {
    let locked = mock(MockConfig::new("locked").fail_with(401)).await;
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .models("refresh", "300ms")
            .pool(Pool::new("chat").mocks(&[&locked]))
            .yaml()
    })
    .await;
    proxy
        .wait_log("HTTP 401: the backend wants an API key")
        .await;
    let log = proxy.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("wants an API key"))
        .unwrap_or_default();
    assert!(line.contains("WARN") && line.contains("locked"), "{line}");
}
