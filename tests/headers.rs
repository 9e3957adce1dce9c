//! Request ids, the headers naming the backend, and `X-Forwarded-*`: what
//! the backend receives (read from the mock's record of the last POST) and
//! what the client gets back, on proxied responses and on errors Switchyard
//! writes itself.

mod common;

use common::*;
use reqwest::header::HeaderMap;
use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const CHAT: &str = r#"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#;

/// A mock that answers at once.
fn quick(name: &str) -> MockConfig {
    MockConfig::new(name).ttft(Duration::ZERO).tokens(1)
}

/// What came back for one request.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// POSTs `body` to `url` with extra `headers`, or GETs when `body` is empty.
async fn send(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    headers: &[(&str, &[u8])],
) -> Answer {
    let mut req = get_or_post(client, url, body);
    for (name, value) in headers {
        let value = reqwest::header::HeaderValue::from_bytes(value).unwrap();
        req = req.header(*name, value);
    }
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

/// The form of an id Switchyard makes: 32 hex digits.
fn is_new_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The one `x-request-id` the backend received with the last POST.
fn backend_id(m: &MockServer) -> String {
    let headers = m.stats().last_headers();
    let ids: Vec<_> = headers.get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1, "the backend got {ids:?}");
    ids[0].to_str().unwrap().to_string()
}

/// One pool over `m` behind a proxy with `server` keys set.
async fn proxy_over(m: &MockServer, server: &[(&str, Yaml)]) -> Proxy {
    Proxy::start(|addr| {
        server
            .iter()
            .fold(Fleet::new(addr), |f, (k, v)| f.server(k, v.clone()))
            .pool(Pool::new("chat").mocks(&[m]))
            .route("chat", &[("path_prefix", "/v1")])
            .route("chat", &[("path_prefix", "/api")])
            .yaml()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sane_request_id_is_kept_and_any_other_replaced() {
    let m = mock(quick("b0")).await;
    let proxy = proxy_over(&m, &[]).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");

    let kept = send(&client, &url, CHAT, &[("x-request-id", b"client-id-42")]).await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.header("x-request-id"), Some("client-id-42"));
    assert_eq!(backend_id(&m), "client-id-42");

    let too_long = "r".repeat(129);
    let replaced: [(&str, &[u8]); 5] = [
        ("none", b""),
        ("129 bytes", too_long.as_bytes()),
        // The one control character HTTP lets through in a header value.
        ("a tab", b"id\twith-tab"),
        ("a space", b"id with space"),
        ("not ASCII", "caf\u{e9}".as_bytes()),
    ];
    for (what, value) in replaced {
        let headers: &[(&str, &[u8])] = if value.is_empty() {
            &[]
        } else {
            &[("x-request-id", value)]
        };
        let a = send(&client, &url, CHAT, headers).await;
        assert_eq!(a.status, 200, "{what}");
        let id = a.header("x-request-id").unwrap_or_default();
        assert!(is_new_id(id), "{what}: {id:?} is not a new id");
        assert_eq!(backend_id(&m), id, "{what}: the backend got another id");
    }
    // Two ids: the backend gets one, a new one.
    let a = client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-request-id", "one")
        .header("x-request-id", "two")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    let id = a.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(is_new_id(&id), "{id}");
    assert_eq!(backend_id(&m), id);

    // Answers Switchyard makes itself carry one too.
    let list = send(
        &client,
        &proxy.url("/v1/models"),
        "",
        &[("x-request-id", b"list-1")],
    )
    .await;
    assert_eq!(list.status, 200);
    assert_eq!(list.header("x-request-id"), Some("list-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_switchyard_writes_name_the_request() {
    let m = mock(quick("b0")).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .pool(Pool::new("live").mocks(&[&m]))
            .pool(
                Pool::new("dead")
                    .set("retries", 0)
                    .backend(Backend::url(&dead)),
            )
            .route("dead", &[("path_prefix", "/dead")])
            .route("live", &[("path_prefix", "/v1")])
            .route("live", &[("path_prefix", "/api")])
            .yaml()
    })
    .await;
    let client = client();
    let id: (&str, &[u8]) = ("x-request-id", b"err-7");

    // OpenAI's shape: `error.request_id`.
    let no_route = send(&client, &proxy.url("/nowhere"), "", &[id]).await;
    assert_eq!(no_route.status, 404);
    assert_eq!(no_route.header("x-request-id"), Some("err-7"));
    let v = no_route.json();
    assert_eq!(
        (
            v["error"]["code"].as_str(),
            v["error"]["request_id"].as_str()
        ),
        (Some("no_route"), Some("err-7"))
    );

    let url = proxy.url("/v1/chat/completions");
    let no_model = send(&client, &url, r#"{"messages":[]}"#, &[id]).await;
    assert_eq!(no_model.status, 400);
    assert_eq!(no_model.header("x-request-id"), Some("err-7"));
    let v = no_model.json();
    assert_eq!(v["error"]["code"], "model_required");
    assert_eq!(v["error"]["request_id"], "err-7");

    // Ollama's and Anthropic's shapes: a top-level `request_id`.
    let ollama = send(&client, &proxy.url("/api/chat"), "{}", &[id]).await;
    assert_eq!(ollama.status, 400);
    let v = ollama.json();
    assert!(v["error"].is_string(), "{v}");
    assert_eq!(v["request_id"], "err-7");
    let anthropic = send(&client, &proxy.url("/v1/messages"), "{}", &[id]).await;
    assert_eq!(anthropic.status, 400);
    let v = anthropic.json();
    assert_eq!(
        (v["type"].as_str(), v["request_id"].as_str()),
        (Some("error"), Some("err-7"))
    );

    // The backend is down: the id Switchyard made is in header and body.
    let down = send(&client, &proxy.url("/dead/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(down.status, 502);
    let header = down.header("x-request-id").unwrap_or_default().to_string();
    assert!(is_new_id(&header), "{header:?}");
    let v = down.json();
    assert_eq!(v["error"]["code"], "backend_error");
    assert_eq!(v["error"]["request_id"], header.as_str());
}

/// A pool whose first choice refuses connections, so each request is
/// retried on the mock; and under `/dead` a pool of that one backend.
async fn retried_fleet(m: &MockServer, dead: &str, expose: Option<bool>) -> Proxy {
    Proxy::start(|addr| {
        let fleet = match expose {
            Some(expose) => Fleet::new(addr).server("expose_backend", expose),
            None => Fleet::new(addr),
        };
        fleet
            .pool(
                Pool::new("chat")
                    .set("strategy", "priority")
                    .set("circuit.consecutive_failures", 1000)
                    .backend(Backend::url(dead).set("name", "gone").set("priority", 9))
                    .backend(Backend::of(m)),
            )
            .pool(
                Pool::new("dead")
                    .set("retries", 0)
                    .backend(Backend::url(dead)),
            )
            .route("dead", &[("path_prefix", "/dead")])
            .route("chat", &[])
            .yaml()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_and_attempts_are_named_unless_hidden() {
    let m = mock(quick("gpu-2")).await;
    let port = free_port();
    let dead = format!("http://127.0.0.1:{port}");
    let client = client();

    let proxy = retried_fleet(&m, &dead, None).await;
    let a = send(&client, &proxy.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-switchyard-backend"), Some("gpu-2"));
    assert_eq!(a.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(a.header("x-switchyard-model"), Some("llama3"));
    assert!(a.header("x-request-id").is_some_and(is_new_id));
    let failed = send(&client, &proxy.url("/dead/x"), "", &[]).await;
    assert_eq!(failed.status, 502);
    let message = failed.json()["error"]["message"].to_string();
    assert!(message.contains(&format!(":{port}")), "{message}");
    drop(proxy);

    let proxy = retried_fleet(&m, &dead, Some(false)).await;
    let a = send(&client, &proxy.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-switchyard-backend"), None);
    assert_eq!(a.header("x-switchyard-attempts"), None);
    // The model served is not the fleet's layout: it stays.
    assert_eq!(a.header("x-switchyard-model"), Some("llama3"));
    assert!(a.header("x-request-id").is_some_and(is_new_id));
    // Nor does an error name the backend's address.
    let failed = send(&client, &proxy.url("/dead/x"), "", &[]).await;
    assert_eq!(failed.status, 502);
    let message = failed.json()["error"]["message"].to_string();
    assert!(!message.contains(&port.to_string()), "{message}");
}

/// What the backend got as `X-Forwarded-*` for the last POST.
fn forwarded(m: &MockServer) -> [Option<String>; 3] {
    let h = m.stats().last_headers();
    ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"].map(|name| {
        let all: Vec<_> = h.get_all(name).iter().collect();
        assert!(all.len() <= 1, "{name}: {all:?}");
        all.first().map(|v| v.to_str().unwrap().to_string())
    })
}

const CLAIMS: [(&str, &[u8]); 3] = [
    ("x-forwarded-for", b"203.0.113.7"),
    ("x-forwarded-proto", b"https"),
    ("x-forwarded-host", b"llm.example.com"),
];

fn some(values: [&str; 3]) -> [Option<String>; 3] {
    values.map(|v| Some(v.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_appended_for_a_trusted_peer() {
    let m = mock(quick("b0")).await;
    let trusted = Yaml::from(vec!["127.0.0.0/8"]);
    let proxy = proxy_over(&m, &[("trusted_proxies", trusted)]).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    let host = proxy.addr.to_string();

    send(&client, &url, CHAT, &CLAIMS).await;
    assert_eq!(
        forwarded(&m),
        some(["203.0.113.7, 127.0.0.1", "https", "llm.example.com"])
    );
    send(&client, &url, CHAT, &[]).await;
    assert_eq!(forwarded(&m), some(["127.0.0.1", "http", &host]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_replaced_for_an_untrusted_peer() {
    let m = mock(quick("b0")).await;
    let trusted = Yaml::from(vec!["10.0.0.0/8"]);
    let proxy = proxy_over(&m, &[("trusted_proxies", trusted)]).await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    let host = proxy.addr.to_string();

    send(&client, &url, CHAT, &CLAIMS).await;
    assert_eq!(forwarded(&m), some(["127.0.0.1", "http", &host]));
    // With no trusted_proxies at all, the same.
    drop(proxy);
    let proxy = proxy_over(&m, &[]).await;
    let url = proxy.url("/v1/chat/completions");
    send(&client, &url, CHAT, &CLAIMS).await;
    let host = proxy.addr.to_string();
    assert_eq!(forwarded(&m), some(["127.0.0.1", "http", &host]));
}

/// A client whose connections come from `source`, a loopback address.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The backend that served a chat from `client` with an
/// `X-Forwarded-For` of `xff`, if any.
async fn served_by(client: &reqwest::Client, proxy: &Proxy, xff: Option<&str>) -> String {
    let headers: Vec<(&str, &[u8])> = xff
        .map(|v| ("x-forwarded-for", v.as_bytes()))
        .into_iter()
        .collect();
    let a = send(client, &proxy.url("/v1/chat/completions"), CHAT, &headers).await;
    assert_eq!(a.status, 200);
    a.header("x-mock-backend").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_hashing_follows_the_first_untrusted_hop() {
    let ms = mocks(3).await;
    let refs: Vec<&MockServer> = ms.iter().collect();
    // Only 127.0.0.1 is a proxy; 127.0.0.10 and up are clients.
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .server("trusted_proxies", vec!["127.0.0.1/32"])
            .pool(
                Pool::new("chat")
                    .set("strategy", "consistent_hash")
                    .set("hash_key", "client_ip")
                    .mocks(&refs),
            )
            .yaml()
    })
    .await;

    // Where each client lands when it connects itself.
    let clients: Vec<String> = (10..34).map(|i| format!("127.0.0.{i}")).collect();
    let mut direct = HashMap::new();
    for c in &clients {
        direct.insert(c.clone(), served_by(&client_from(c), &proxy, None).await);
    }
    let spread: std::collections::HashSet<_> = direct.values().collect();
    assert!(
        spread.len() > 1,
        "24 clients all hashed to one backend: {direct:?}"
    );

    let trusted = client_from("127.0.0.1");
    let untrusted = client_from(&clients[0]);
    for c in &clients {
        // Through the trusted proxy, each client lands where it would alone;
        // what it claimed left of itself does not matter.
        assert_eq!(
            served_by(&trusted, &proxy, Some(c)).await,
            direct[c],
            "{c} via the proxy"
        );
        let chain = format!("198.51.100.1, {c}");
        assert_eq!(
            served_by(&trusted, &proxy, Some(&chain)).await,
            direct[c],
            "{chain}"
        );
        // From a client that is not trusted, its own claim changes nothing.
        assert_eq!(
            served_by(&untrusted, &proxy, Some(c)).await,
            direct[&clients[0]],
            "{} claiming {c}",
            clients[0]
        );
    }
}

#[test]
fn dash_t_names_each_bad_trusted_proxy() {
    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let yaml = Fleet::new(addr)
        .server(
            "trusted_proxies",
            vec!["10.0.0.0/8", "10.0.0.0/40", "cdn", "0.0.0.0/0"],
        )
        .server("expose_backend", false)
        .pool(Pool::new("chat").backend(Backend::url("http://127.0.0.1:9")))
        .yaml();
    let (code, out) = check_config(&yaml, &[]);
    assert_eq!(code, 64, "{out}");
    for expected in [
        "server.trusted_proxies[1]: \"10.0.0.0/40\" is not a network",
        "server.trusted_proxies[2]: \"cdn\" is not a network",
        "server.trusted_proxies[3]: \"0.0.0.0/0\" trusts every address",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("trusted_proxies[0]"), "{out}");
    let good = Fleet::new(addr)
        .server(
            "trusted_proxies",
            vec!["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"],
        )
        .pool(Pool::new("chat").backend(Backend::url("http://127.0.0.1:9")))
        .yaml();
    let (code, out) = check_config(&good, &[]);
    assert_eq!(code, 0, "{out}");
}

/// What one connection says stays with it, both ways. Pingora removes a
/// client's hop-by-hop headers, and those its `Connection` names, before
/// the request is passed on (Switchyard adds `Proxy`, which CGI-style
/// backends would read as their own proxy); Switchyard removes a
/// backend's from its response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stay_with_their_connection() {
    let backend = RawBackend::start(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
         Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Authenticate: Basic\r\nProxy-Connection: keep-alive\r\n\
         Trailer: x-sum\r\nX-Kept: 1\r\n\r\n{}",
    )
    .await;
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .pool(Pool::new("chat").backend(Backend::url(&backend.url)))
            .route("chat", &[("path_prefix", "/v1")])
            .yaml()
    })
    .await;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
         TE: trailers\r\nTrailer: x-sum\r\nProxy-Authorization: Basic eDp5\r\n\
         Proxy-Connection: keep-alive\r\nProxy: http://203.0.113.9\r\nX-Kept: 1\r\n\r\n{CHAT}",
        CHAT.len()
    );
    let addr = proxy.addr;
    let answer = tokio::task::spawn_blocking(move || raw_exchange(addr, request.as_bytes()))
        .await
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect(&answer);
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(body, "{}");

    let posts = backend.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    only_kept(
        "the backend",
        &posts[0],
        &[
            "x-secret",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-connection",
            "proxy",
        ],
    );
    only_kept(
        "the client",
        head,
        &[
            "x-hop",
            "keep-alive",
            "proxy-authenticate",
            "proxy-connection",
            "trailer",
        ],
    );
    // The client's own connection is Pingora's to describe: it asked to
    // close, and nothing of the backend's `keep-alive, X-Hop` is left.
    let lower = head.to_ascii_lowercase();
    let mut connection = lower.lines().filter(|l| l.starts_with("connection:"));
    assert!(connection.all(|l| !l.contains("x-hop")), "{head}");
}

/// Checks that `head`, as `who` got it, has none of the headers `gone` and
/// still has `x-kept`.
fn only_kept(who: &str, head: &str, gone: &[&str]) {
    let lower = head.to_ascii_lowercase();
    let has = |name: &str| lower.lines().any(|l| l.starts_with(&format!("{name}:")));
    for name in gone {
        assert!(!has(name), "{who} got {name}:\n{head}");
    }
    assert!(has("x-kept"), "{who} lost x-kept:\n{head}");
}
