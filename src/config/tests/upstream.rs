//! How a backend is reached: HTTPS and its TLS files, base paths, `Host`,
//! credentials from the environment or a file, and model maps.

use super::*;

/// A one-pool file whose pool has `pool` keys and one backend `backend`
/// (a flow mapping's inside).
fn one(pool: &str, backend: &str) -> String {
    format!("pools:\n  cloud:\n    health_check: {{ type: none }}\n{pool}    backends:\n      - {{ {backend} }}\n")
}

fn backend(yaml: &str) -> BackendSpec {
    Config::from_yaml(yaml).unwrap().pools[0].backends[0].clone()
}

#[test]
fn https_urls_have_a_default_port_a_base_path_and_the_backends_host() {
    let b = backend(&one(
        "",
        "url: \"https://localhost/openai/\", tls: { verify: false }",
    ));
    assert_eq!(b.addr.port(), 443);
    assert!(b.addr.is_ipv4(), "localhost prefers its IPv4 address");
    assert_eq!(b.authority, "localhost");
    assert_eq!(b.base_path, "/openai");
    assert_eq!(b.path("/v1/models"), "/openai/v1/models");
    assert_eq!(b.host_header, HostHeader::Backend);
    assert_eq!(b.tls.as_ref().unwrap().sni, "localhost");
    let b = backend(&one("", "url: \"http://127.0.0.1:8000/vllm\""));
    assert_eq!(
        (b.authority.as_str(), b.base_path.as_str()),
        ("127.0.0.1:8000", "/vllm")
    );
    assert_eq!(
        b.host_header,
        HostHeader::Client,
        "plain HTTP keeps the client's"
    );
    assert!(b.tls.is_none());
    let b = backend(&one(
        "    host_header: backend\n",
        "url: \"http://127.0.0.1:8000\"",
    ));
    assert_eq!(b.host_header, HostHeader::Backend);
}

#[test]
fn verify_false_is_allowed_and_warned_about() {
    let c = Config::from_yaml(&one(
        "",
        "url: \"https://127.0.0.1:8443\", tls: { verify: false }",
    ))
    .unwrap();
    let warnings = c.warnings(std::time::SystemTime::now());
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("pools.cloud.backends[0].tls.verify: false: the certificate of backend 127.0.0.1:8443 is not checked"),
        "{warnings:?}"
    );
    assert!(
        Config::from_yaml(&one("", "url: \"http://127.0.0.1:8000\""))
            .unwrap()
            .warnings(std::time::SystemTime::now())
            .is_empty()
    );
}

#[test]
fn tls_files_are_read_and_their_problems_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let all = errors(&one(
        "",
        &format!(
            "url: \"https://127.0.0.1:8443\", tls: {{ ca: {}, cert: {}, key: {} }}",
            junk.display(),
            missing.display(),
            junk.display()
        ),
    ));
    let want = [
        format!("pools.cloud.backends[0].tls.ca: {:?} holds no PEM certificate", junk.display()),
        format!("pools.cloud.backends[0].tls.cert: cannot read {:?}: No such file or directory (os error 2)", missing.display()),
        format!("pools.cloud.backends[0].tls.key: {:?} holds no PEM private key", junk.display()),
    ];
    for w in &want {
        assert!(all.contains(w), "wanted {w:?} in {all:#?}");
    }
    assert_error(
        &one("", "url: \"https://127.0.0.1:8443\", tls: { cert: /x.crt }"),
        "pools.cloud.backends[0].tls.key: is required with tls.cert",
    );
    assert_error(
        &one("", "url: \"http://127.0.0.1:8000\", tls: { verify: false }"),
        "pools.cloud.backends[0].tls: is only for https:// backends",
    );
}

#[test]
fn credentials_come_from_the_environment_or_a_file_never_the_file_itself() {
    assert_error(
        &one("", "url: \"http://127.0.0.1:8000\", headers: { Authorization: \"Bearer sk-123\" }"),
        "pools.cloud.backends[0].headers.Authorization: Authorization carries a credential, which is never written in the file: use { env: VARIABLE } or { file: PATH } (with prefix: \"Bearer \" if the backend wants one)",
    );
    assert_error(
        &one("    headers: { x-api-key: { env: SWITCHYARD_NOT_SET_ANYWHERE } }\n", "url: \"http://127.0.0.1:8000\""),
        "pools.cloud.headers.x-api-key.env: environment variable SWITCHYARD_NOT_SET_ANYWHERE is not set",
    );
    assert_error(
        &one("", "url: \"http://127.0.0.1:8000\", headers: { api-key: { file: /nonexistent/key } }"),
        "pools.cloud.backends[0].headers.api-key.file: cannot read \"/nonexistent/key\": No such file or directory (os error 2)",
    );
    assert_error(
        &one("", "url: \"http://127.0.0.1:8000\", headers: { Host: x }"),
        "pools.cloud.backends[0].headers.Host: Host is set by Switchyard for each request, not per backend",
    );
    assert_error(
        &one("", "url: \"http://127.0.0.1:8000\", headers: { Authorization: { prefix: \"Bearer \" } }"),
        "pools.cloud.backends[0].headers.Authorization: needs env: VARIABLE or file: PATH (and an optional prefix)",
    );
}

#[test]
fn a_secret_read_from_a_file_is_trimmed_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-very-secret-value\n").unwrap();
    let yaml = one(
        &format!("    headers:\n      Authorization: {{ file: {}, prefix: \"Bearer \" }}\n      OpenAI-Organization: org-1\n", key.display()),
        "url: \"http://127.0.0.1:8000\", headers: { OpenAI-Organization: org-2 }",
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let b = &c.pools[0].backends[0];
    let values: Vec<(&str, &str)> = b
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.value()))
        .collect();
    assert_eq!(
        values,
        [
            ("authorization", "Bearer sk-very-secret-value"),
            ("openai-organization", "org-2")
        ],
        "the pool's header is inherited, the backend's own wins"
    );
    assert!(b.has_credentials());
    assert!(
        !format!("{c:?}").contains("sk-very-secret"),
        "Debug of the config hides it"
    );
    // A value with a newline inside cannot be sent, and the error says
    // where it came from, not what it is.
    std::fs::write(&key, "sk-very\nsecret\n").unwrap();
    let all = errors(&yaml);
    assert!(all.iter().all(|e| !e.contains("sk-very")), "{all:?}");
    assert!(
        all[0].contains("has characters an HTTP header cannot carry"),
        "{all:?}"
    );
}

#[test]
fn model_maps_name_a_model_on_both_sides() {
    let b = backend(&one("", "url: \"http://127.0.0.1:8000\", model_map: { \"llama3.1:8b\": meta-llama/Llama-3.1-8B-Instruct }"));
    assert_eq!(
        b.served_name("llama3.1:8b"),
        "meta-llama/Llama-3.1-8B-Instruct"
    );
    assert_eq!(b.served_name("qwen2.5"), "qwen2.5");
    assert_error(
        &one("", "url: \"http://127.0.0.1:8000\", model_map: { a: \"\" }"),
        "pools.cloud.backends[0].model_map.a: \"\": a model name is empty",
    );
}

#[test]
fn wrong_types_are_named() {
    assert_error(
        &one("", "url: \"http://127.0.0.1:8000\", headers: { x-a: [1] }"),
        "pools.cloud.backends[0].headers.x-a: has a value of a type this key does not take",
    );
}
