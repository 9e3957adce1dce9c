//! API keys through the real binary: 401 without a valid key, 403 for a
//! model the key may not use, model lists filtered by key, the key kept
//! from the backend and every log, `-t` refusing a key written in plain
//! text, and `switchyard key hash`.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const ALICE: &str = "sk-alice-0123456789abcdef";
const BOB: &str = "sk-bob-fedcba9876543210";

fn sha256(key: &str) -> String {
    let out = key_command("hash", key);
    out.trim().strip_prefix("sha256: ").unwrap().to_string()
}

/// Runs `switchyard key ACTION` with `stdin`; its standard output.
fn key_command(action: &str, stdin: &str) -> String {
    let mut child = Command::new(binary())
        .args(["key", action])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

/// Alice may use `llama3*` only; Bob may use anything.
fn alice_and_bob() -> serde_yaml::Value {
    yaml(&format!(
        "[{{ name: alice, sha256: {}, models: [\"llama3*\"] }},\n \
         {{ name: bob, sha256: {} }}]",
        sha256(ALICE),
        sha256(BOB)
    ))
}

async fn chat_as(url: &str, model: &str, key: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = client()
        .post(url)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
        ));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, json_of(resp).await)
}

async fn json_of(resp: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default()
}

async fn model_ids(url: &str, key: &str) -> Vec<String> {
    let v = json_of(client().get(url).bearer_auth(key).send().await.unwrap()).await;
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn keys_let_in_refuse_and_filter_and_never_travel_or_show() {
    let m = mock(
        MockConfig::new("b0")
            .ttft(Duration::ZERO)
            .token_gap(Duration::ZERO)
            .tokens(2),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bob_file = dir.path().join("bob.key");
    std::fs::write(&bob_file, format!("{BOB}\n")).unwrap();
    let access_log = dir.path().join("access.log");
    let keys = yaml(&format!(
        "[{{ name: alice, sha256: {}, models: [\"llama3*\"] }},\n \
         {{ name: bob, file: \"{}\" }}]",
        sha256(ALICE),
        bob_file.display()
    ));
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .set("auth.keys", keys.clone())
            .set("access_log.path", access_log.display().to_string())
            .pool(
                Pool::new("chat").backend(Backend::of(&m).set("models", yaml("[llama3, qwen2.5]"))),
            )
            .yaml()
    })
    .await;
    let chat_url = proxy.url("/v1/chat/completions");

    // No key, a wrong key: 401 in OpenAI's shape.
    for key in [None, Some("sk-wrong"), Some(&ALICE[..ALICE.len() - 1])] {
        let (status, body) = chat_as(&chat_url, "llama3", key).await;
        assert_eq!(status, 401, "{key:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    // Each 401 carries RFC 6750's challenge: an error code only when a key
    // came and was wrong.
    let challenge = |resp: &reqwest::Response| {
        let value = resp.headers().get("www-authenticate");
        value.map(|v| v.to_str().unwrap().to_string())
    };
    let body = r#"{"model":"llama3","messages":[]}"#;
    let resp = post_json(&client(), &chat_url, body).await;
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        challenge(&resp).as_deref(),
        Some(r#"Bearer realm="switchyard""#)
    );
    let resp = client()
        .post(&chat_url)
        .header("x-api-key", "sk-wrong")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let wrong = challenge(&resp).unwrap_or_default();
    assert!(
        wrong.starts_with(r#"Bearer realm="switchyard", error="invalid_token""#),
        "{wrong}"
    );
    // Ollama's API gets its own shape, and the same challenge.
    let resp = post_json(&client(), &proxy.url("/api/chat"), body).await;
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        challenge(&resp).as_deref(),
        Some(r#"Bearer realm="switchyard""#)
    );
    let body = json_of(resp).await;
    assert!(
        body["error"].as_str().unwrap().contains("API key"),
        "{body}"
    );

    // The right keys, each as its clients send it.
    let (status, body) = chat_as(&chat_url, "llama3", Some(ALICE)).await;
    assert_eq!(status, 200, "{body}");
    let resp = client()
        .post(&chat_url)
        .header("x-api-key", BOB)
        .header("content-type", "application/json")
        .body(r#"{"model":"qwen2.5","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let headers = m.stats().last_headers();
    assert!(
        headers.get("authorization").is_none() && headers.get("x-api-key").is_none(),
        "the key reached the backend: {headers:?}"
    );

    // A key limited to llama3* asking for qwen: 403, no challenge (the key
    // is good; another would not help).
    let resp = client()
        .post(&chat_url)
        .bearer_auth(ALICE)
        .body(r#"{"model":"qwen2.5","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(challenge(&resp), None);
    let (status, body) = chat_as(&chat_url, "qwen2.5", Some(ALICE)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");

    // Each key sees the models it may use.
    let models = proxy.url("/v1/models");
    assert_eq!(model_ids(&models, ALICE).await, ["llama3"]);
    assert_eq!(model_ids(&models, BOB).await, ["llama3", "qwen2.5"]);
    let resp = client()
        .get(proxy.url("/v1/models/qwen2.5"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    // The access log names the keys; no log holds a key.
    wait_until(DEADLINE, "the access log", || async {
        std::fs::read_to_string(&access_log).is_ok_and(|t| t.contains("\"key\":\"bob\""))
    })
    .await;
    let logged = std::fs::read_to_string(&access_log).unwrap();
    assert!(logged.contains("\"key\":\"alice\""), "{logged}");
    for text in [logged, proxy.log_text()] {
        assert!(
            !text.contains(ALICE) && !text.contains(BOB),
            "a key in a log:\n{text}"
        );
        assert!(
            !text.contains("sk-wrong"),
            "a presented key in a log:\n{text}"
        );
    }
}

/// The `name` of each entry of an Ollama list (`/api/tags`, `/api/ps`).
async fn ollama_names(url: &str, key: &str) -> Vec<String> {
    let v = json_of(client().get(url).bearer_auth(key).send().await.unwrap()).await;
    v["models"]
        .as_array()
        .unwrap_or_else(|| panic!("{url}: {v}"))
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn ollama_lists_of_models_held_and_loaded_are_filtered_by_key() {
    // Each mock has its first model loaded: llama3 on one, qwen2.5 on the
    // other.
    let a = mock(MockConfig::new("a").models(["llama3", "qwen2.5"])).await;
    let b = mock(MockConfig::new("b").models(["qwen2.5"])).await;
    let keys = alice_and_bob();
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .set("auth.keys", keys.clone())
            .pool(
                Pool::new("chat")
                    .backend(Backend::of(&a).set("models", yaml("[llama3, qwen2.5]")))
                    .backend(Backend::of(&b).set("models", yaml("[qwen2.5]"))),
            )
            .yaml()
    })
    .await;
    let ps = proxy.url("/api/ps");
    assert_eq!(ollama_names(&ps, BOB).await, ["llama3", "qwen2.5"]);
    assert_eq!(ollama_names(&ps, ALICE).await, ["llama3"]);
    let tags = proxy.url("/api/tags");
    assert_eq!(ollama_names(&tags, BOB).await, ["llama3", "qwen2.5"]);
    assert_eq!(ollama_names(&tags, ALICE).await, ["llama3"]);
    let resp = client().get(&ps).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn model_management_is_held_to_the_models_of_the_key() {
    let m = mock(MockConfig::new("b0").models(["llama3", "qwen2.5"])).await;
    let keys = alice_and_bob();
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .set("auth.keys", keys.clone())
            .pool(
                Pool::new("one").backend(Backend::of(&m).set("models", yaml("[llama3, qwen2.5]"))),
            )
            .yaml()
    })
    .await;
    let send = |method: &str, path: &str, key: &str, body: &'static str| {
        client()
            .request(method.parse().unwrap(), proxy.url(path))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Every management path counts in the mock's bucket of other paths,
    // where health checks and discovery never land.
    let managed = || m.stats().requests_to("/api/pull");
    let before = managed();
    for (method, path, body) in [
        ("DELETE", "/api/delete", r#"{"model":"qwen2.5"}"#),
        ("DELETE", "/api/delete", r#"{"name":"qwen2.5"}"#),
        ("POST", "/api/pull", r#"{"model":"qwen2.5"}"#),
        ("POST", "/api/push", r#"{"model":"qwen2.5"}"#),
        // Under a name the key may use, it would be the same model.
        (
            "POST",
            "/api/copy",
            r#"{"source":"qwen2.5","destination":"llama3-q"}"#,
        ),
        (
            "POST",
            "/api/copy",
            r#"{"source":"llama3","destination":"qwen2.5"}"#,
        ),
        (
            "POST",
            "/api/create",
            r#"{"model":"llama3-q","from":"qwen2.5"}"#,
        ),
        (
            "POST",
            "/api/create",
            r#"{"model":"llama3-q","modelfile":"FROM qwen2.5\n"}"#,
        ),
    ] {
        let resp = send(method, path, ALICE, body).await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{method} {path} {body}");
        let v = json_of(resp).await;
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains("may not use the model 'qwen2.5'"), "{v}");
    }
    // A body that names nothing is not a way around the check.
    for body in ["", "{}", "not json"] {
        let resp = send("DELETE", "/api/delete", ALICE, body).await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body:?}");
    }
    assert_eq!(managed(), before, "a refused request reached the backend");

    // Its own models, and any model for a key without a models list, go
    // through with their bodies as sent.
    let body = r#"{"model":"llama3.1:8b","stream":false}"#;
    send("POST", "/api/pull", ALICE, body).await.unwrap();
    assert_eq!(m.stats().last_body(), body);
    let body = r#"{"model":"qwen2.5","stream":false}"#;
    send("POST", "/api/pull", BOB, body).await.unwrap();
    assert_eq!(m.stats().last_body(), body);
    assert_eq!(managed(), before + 2);
}

#[tokio::test]
async fn forward_passes_the_key_on() {
    let m = mock(MockConfig::new("b0").ttft(Duration::ZERO).tokens(1)).await;
    let keys = yaml(&format!("[{{ name: alice, sha256: {} }}]", sha256(ALICE)));
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .set("auth.keys", keys.clone())
            .set("auth.forward", true)
            .pool(Pool::new("chat").backend(Backend::of(&m).set("models", yaml("[llama3]"))))
            .yaml()
    })
    .await;
    let (status, _) = chat_as(&proxy.url("/v1/chat/completions"), "llama3", Some(ALICE)).await;
    assert_eq!(status, 200);
    let auth = m.stats().last_headers().get("authorization").cloned();
    assert_eq!(auth.unwrap(), format!("Bearer {ALICE}").as_str());
}

#[test]
fn check_refuses_keys_in_plain_text_and_names_every_problem() {
    let yaml = "auth:\n  keys:\n    - { name: a, key: sk-plain-text-key }\n    \
                - { name: b, sha256: nothex }\n    - { name: c, sha256: 00, env: X }\n    \
                - { name: d, sha256: \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\", pools: [nope] }\n\
                limits:\n  per_key: { requests: { per: 0s, limit: 0 }, concurrent: 0 }\n\
                pools:\n  chat:\n    backends:\n      - { url: \"http://127.0.0.1:9\" }\n";
    let (code, out) = check_config(yaml, &[]);
    assert_eq!(code, 64, "{out}");
    for needle in [
        "auth.keys[0].key: a key is never written in the file",
        "auth.keys[1].sha256: is not a SHA-256",
        "auth.keys[2]: give one of sha256, env and file",
        "auth.keys[3].pools[0]: \"nope\" is not a pool",
        "limits.per_key.requests.per: \"0s\" is less than the minimum 1ms",
        "limits.per_key.requests.limit: 0 is less than the minimum 1",
        "limits.per_key.concurrent: 0 is less than the minimum 1",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(!out.contains("sk-plain-text-key"), "{out}");
}

#[test]
fn key_hash_prints_the_line_and_key_new_a_usable_key() {
    assert_eq!(
        key_command("hash", "abc\n").trim(),
        "sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let out = key_command("new", "");
    let key = out.split_whitespace().nth(1).unwrap();
    let line = out.lines().find(|l| l.starts_with("config: ")).unwrap();
    assert_eq!(
        line.trim_start_matches("config: "),
        key_command("hash", key).trim()
    );
}
