//! End-to-end tests of the mock over real sockets, with a raw HTTP/1.1
//! client so chunk boundaries and their timing are visible exactly.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

use super::*;

/// Upper bound on anything a test waits for; only reached when it fails.
const DEADLINE: Duration = Duration::from_secs(5);

async fn start(cfg: MockConfig) -> MockServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    MockServer::start(listener, cfg)
}

/// Fast timing for tests that are not about timing.
fn quick(name: &str) -> MockConfig {
    MockConfig::new(name)
        .ttft(Duration::ZERO)
        .token_gap(Duration::ZERO)
        .tokens(3)
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client on one connection.
struct Client {
    conn: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        Client {
            conn: BufReader::new(stream),
        }
    }

    async fn send(&mut self, method: &str, path: &str, body: Option<&str>) {
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.conn
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .expect("write request");
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_string())
    }

    async fn head(&mut self) -> Head {
        let status_line = within("status line", self.line())
            .await
            .expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut headers = Vec::new();
        loop {
            let line = within("header", self.line()).await.expect("header");
            if line.is_empty() {
                return Head { status, headers };
            }
            let (n, v) = line.split_once(':').expect("header colon");
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }

    /// The next chunk of a chunked body; `Ok(None)` at the terminating chunk,
    /// `Err` if the connection ends first.
    async fn chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let size_line = self.line().await?;
        let size = usize::from_str_radix(&size_line, 16).map_err(std::io::Error::other)?;
        let mut data = vec![0; size + 2];
        self.conn.read_exact(&mut data).await?;
        data.truncate(size);
        Ok((size > 0).then_some(data))
    }

    /// Sends a request and reads the whole response.
    async fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> (Head, Vec<u8>) {
        self.send(method, path, body).await;
        let head = self.head().await;
        let mut out = Vec::new();
        if let Some(len) = head.header("content-length") {
            out.resize(len.parse().expect("length"), 0);
            within("body", self.conn.read_exact(&mut out))
                .await
                .expect("body");
        } else {
            while let Some(c) = within("chunk", self.chunk()).await.expect("chunk") {
                out.extend(c);
            }
        }
        (head, out)
    }

    async fn json(&mut self, method: &str, path: &str, body: Option<Value>) -> (Head, Value) {
        let body = body.map(|b| b.to_string());
        let (head, bytes) = self.request(method, path, body.as_deref()).await;
        (head, serde_json::from_slice(&bytes).expect("JSON body"))
    }
}

fn sse_event(chunk: &[u8]) -> Value {
    let text = std::str::from_utf8(chunk).expect("utf8");
    let data = text
        .strip_prefix("data: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .expect("one SSE event");
    serde_json::from_str(data).expect("event JSON")
}

#[tokio::test]
async fn sse_stream_arrives_token_by_token() {
    let (ttft, gap) = (Duration::from_millis(40), Duration::from_millis(40));
    let mock = start(MockConfig::new("b1").ttft(ttft).token_gap(gap).tokens(4)).await;
    let mut c = Client::connect(mock.addr()).await;
    let t0 = Instant::now();
    c.send(
        "POST",
        "/v1/chat/completions",
        Some(r#"{"model":"llama3","stream":true}"#),
    )
    .await;
    let head = c.head().await;
    assert!(
        t0.elapsed() >= ttft * 3 / 4,
        "head came before the time to first token"
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header(BACKEND_HEADER), Some("b1"));

    let mut last = None::<Instant>;
    for i in 0..4 {
        let chunk = within("token", c.chunk())
            .await
            .expect("chunk")
            .expect("not the end");
        let now = Instant::now();
        if let Some(prev) = last {
            assert!(
                now - prev >= gap / 2,
                "token {i} came {:?} after the previous",
                now - prev
            );
        }
        last = Some(now);
        let ev = sse_event(&chunk);
        assert_eq!(ev["object"], "chat.completion.chunk");
        assert_eq!(ev["backend"], "b1");
        assert_eq!(ev["choices"][0]["delta"]["content"], format!("tok{i} "));
    }
    let fin = sse_event(
        &within("final", c.chunk())
            .await
            .expect("chunk")
            .expect("final"),
    );
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    assert_eq!(fin["usage"]["completion_tokens"], 4);
    let done = within("done", c.chunk())
        .await
        .expect("chunk")
        .expect("done");
    assert_eq!(done, b"data: [DONE]\n\n");
    assert_eq!(within("end", c.chunk()).await.expect("terminator"), None);
    let stats = mock.stats();
    wait_for("completed stream", || stats.streams_completed() == 1).await;
    assert_eq!(stats.streams_cancelled(), 0);
}

#[tokio::test]
async fn ollama_streams_ndjson_by_default() {
    let mock = start(quick("olla")).await;
    let mut c = Client::connect(mock.addr()).await;
    let body = r#"{"model":"llama3:latest","messages":[{"role":"user","content":"hi there"}]}"#;
    let (head, bytes) = c.request("POST", "/api/chat", Some(body)).await;
    assert_eq!(head.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = std::str::from_utf8(&bytes)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line JSON"))
        .collect();
    assert_eq!(lines.len(), 4);
    for (i, line) in lines[..3].iter().enumerate() {
        assert_eq!(line["done"], false);
        assert_eq!(line["message"]["content"], format!("tok{i} "));
        assert_eq!(line["backend"], "olla");
    }
    assert_eq!(lines[3]["done"], true);
    assert_eq!(lines[3]["eval_count"], 3);
    assert_eq!(lines[3]["prompt_eval_count"], 2);

    let (_, whole) = c
        .json(
            "POST",
            "/api/generate",
            Some(json!({"prompt": "x", "stream": false})),
        )
        .await;
    assert_eq!(whole["response"], "tok0 tok1 tok2 ");
    assert_eq!(whole["done"], true);
    assert_eq!(
        mock.stats().connections(),
        1,
        "keep-alive reuses the connection"
    );
}

#[tokio::test]
async fn lists_models_in_both_dialects() {
    let mock = start(quick("lists").models(["a", "b"])).await;
    let mut c = Client::connect(mock.addr()).await;
    let (_, list) = c.json("GET", "/v1/models", None).await;
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);

    mock.set_models(vec!["c".into()]);
    let (head, tags) = c.json("GET", "/api/tags", None).await;
    assert_eq!(head.header(BACKEND_HEADER), Some("lists"));
    assert_eq!(tags["models"][0]["name"], "c");
    assert_eq!(tags["models"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn answers_completions_and_rejects_bad_requests() {
    let mock = start(quick("c1")).await;
    let mut c = Client::connect(mock.addr()).await;
    let body = json!({"model": "qwen2.5", "messages": [{"role": "user", "content": "a b c"}]});
    let (head, resp) = c
        .json("POST", "/v1/chat/completions", Some(body.clone()))
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(resp["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(
        resp["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
    );
    assert_eq!(resp["system_fingerprint"], "c1");
    let stats = mock.stats();
    assert_eq!(stats.last_model().as_deref(), Some("qwen2.5"));
    assert_eq!(stats.last_body(), body.to_string().as_bytes());
    assert_eq!(stats.last_headers()["host"], "mock");
    assert_eq!(stats.last_headers()["content-type"], "application/json");

    let (head, err) = c
        .json("POST", "/v1/completions", Some(json!({"model": "gpt-9"})))
        .await;
    assert_eq!(head.status, 404);
    assert_eq!(err["error"]["code"], "model_not_found");
    let (head, _) = c
        .json(
            "POST",
            "/v1/completions",
            Some(json!({"prompt": "no model"})),
        )
        .await;
    assert_eq!(head.status, 200);
    let (head, bytes) = c
        .request("POST", "/v1/chat/completions", Some("{not json"))
        .await;
    assert_eq!(head.status, 400);
    assert!(serde_json::from_slice::<Value>(&bytes).expect("JSON")["error"]["message"].is_string());
    let (head, _) = c.json("GET", "/nowhere", None).await;
    assert_eq!(head.status, 404);
    let (_, emb) = c
        .json("POST", "/v1/embeddings", Some(json!({"input": ["x", "y"]})))
        .await;
    assert_eq!(emb["data"].as_array().map(Vec::len), Some(2));
    let (head, health) = c.json("GET", "/health", None).await;
    assert_eq!((head.status, &health["backend"]), (200, &json!("c1")));
    assert_eq!(stats.health_checks(), 1);
    assert_eq!(stats.api_requests(), 6);
}

#[tokio::test]
async fn status_failure_applies_to_api_and_health() {
    let mock = start(quick("sick").fail_with(503)).await;
    let mut c = Client::connect(mock.addr()).await;
    let (head, err) = c
        .json(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "llama3"})),
        )
        .await;
    assert_eq!(head.status, 503);
    assert_eq!(head.header("retry-after"), Some("1"));
    assert_eq!(err["error"]["type"], "server_error");
    let (head, _) = c.json("GET", "/health", None).await;
    assert_eq!(head.status, 503);

    mock.set_failure(Failure::None);
    let (head, _) = c.json("GET", "/health", None).await;
    assert_eq!(head.status, 200);
}

// Multi-threaded like the binary: the cut must still come after the flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mid_stream_ends_without_terminator() {
    let mock = start(
        quick("dropper")
            .tokens(5)
            .failure(Failure::DropMidStream { after_tokens: 2 }),
    )
    .await;
    let mut c = Client::connect(mock.addr()).await;
    c.send("POST", "/v1/chat/completions", Some(r#"{"stream":true}"#))
        .await;
    assert_eq!(c.head().await.status, 200);
    for i in 0..2 {
        let ev = sse_event(
            &within("token", c.chunk())
                .await
                .expect("chunk")
                .expect("token"),
        );
        assert_eq!(ev["choices"][0]["delta"]["content"], format!("tok{i} "));
    }
    assert!(
        within("cut", c.chunk()).await.is_err(),
        "the stream should be cut, not finished"
    );
    let stats = mock.stats();
    wait_for("dropped stream", || stats.streams_dropped() == 1).await;
    assert_eq!(
        (stats.streams_completed(), stats.streams_cancelled()),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hanging_up_cancels_the_stream() {
    let cfg = quick("cancel")
        .token_gap(Duration::from_millis(5))
        .tokens(100_000);
    let mock = start(cfg).await;
    let mut c = Client::connect(mock.addr()).await;
    c.send("POST", "/api/generate", Some(r#"{"prompt":"go"}"#))
        .await;
    c.head().await;
    within("token", c.chunk())
        .await
        .expect("chunk")
        .expect("token");
    drop(c);
    let stats = mock.stats();
    wait_for("cancelled stream", || stats.streams_cancelled() == 1).await;
    wait_for("request released", || stats.in_flight() == 0).await;
    assert_eq!(stats.streams_completed(), 0);
}

#[tokio::test]
async fn hang_reads_but_never_answers() {
    let mock = start(quick("wedged").failure(Failure::Hang)).await;
    let mut c = Client::connect(mock.addr()).await;
    c.send("GET", "/health", None).await;
    let stats = mock.stats();
    wait_for("request seen", || stats.requests() == 1).await;
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_millis(100), c.conn.read(&mut byte)).await;
    assert!(read.is_err(), "a hung backend must not answer");
    assert_eq!(stats.in_flight(), 1);
}

#[tokio::test]
async fn shutdown_aborts_connections_and_refuses_new_ones() {
    let cfg = quick("killed")
        .token_gap(Duration::from_millis(5))
        .tokens(100_000);
    let mock = MockServer::bind("127.0.0.1:0".parse().expect("addr"), cfg).expect("bind");
    let addr = mock.addr();
    let mut c = Client::connect(addr).await;
    c.send("POST", "/v1/completions", Some(r#"{"stream":true}"#))
        .await;
    c.head().await;
    within("token", c.chunk())
        .await
        .expect("chunk")
        .expect("token");

    within("shutdown", mock.shutdown()).await;
    let mut rest = Vec::new();
    let end = within("connection end", c.conn.read_to_end(&mut rest)).await;
    assert!(
        end.is_err() || !rest.ends_with(b"0\r\n\r\n"),
        "stream must end abruptly"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "port must refuse connections"
    );
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let mock = start(quick("dropped")).await;
    let addr = mock.addr();
    drop(mock);
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after drop");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A whole SSE body as (event name, data) pairs; unnamed events get "".
fn named_events(body: &[u8]) -> Vec<(String, Value)> {
    std::str::from_utf8(body)
        .expect("utf8")
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d).expect("event JSON"));
                }
            }
            (name, data.expect("a data line"))
        })
        .collect()
}

#[tokio::test]
async fn responses_api_streams_typed_events_and_answers_whole() {
    let mock = start(quick("resp")).await;
    let mut c = Client::connect(mock.addr()).await;
    let body = json!({"model": "llama3", "input": "why is the sky blue", "stream": true});
    let (head, bytes) = c
        .request("POST", "/v1/responses", Some(&body.to_string()))
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    let events = named_events(&bytes);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], *name);
        assert_eq!(data["sequence_number"], i);
        assert_eq!(data["backend"], "resp");
    }
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    let deltas: String = events[4..7]
        .iter()
        .map(|(_, d)| d["delta"].as_str().expect("delta"))
        .collect();
    assert_eq!(deltas, "tok0 tok1 tok2 ");
    let done = &events[10].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], deltas);
    assert_eq!(done["usage"]["input_tokens"], 5);
    assert_eq!(done["usage"]["output_tokens"], 3);
    assert!(!String::from_utf8_lossy(&bytes).contains("[DONE]"));

    let (head, whole) = c
        .json(
            "POST",
            "/v1/responses",
            Some(json!({"model": "qwen2.5", "input": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(whole["object"], "response");
    assert_eq!(whole["status"], "completed");
    assert_eq!(whole["model"], "qwen2.5");
    assert!(whole["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("resp_")));
    assert_eq!(whole["output"][0]["type"], "message");
    assert_eq!(whole["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(whole["output"][0]["content"][0]["text"], "tok0 tok1 tok2 ");
    assert_eq!(whole["usage"]["total_tokens"], 4);
    let stats = mock.stats();
    wait_for("completed stream", || stats.streams_completed() == 1).await;
    assert_eq!(stats.requests_to("/v1/responses"), 2);
}

#[tokio::test]
async fn anthropic_messages_stream_count_and_refuse_as_anthropic_does() {
    let mock = start(quick("claude")).await;
    let mut c = Client::connect(mock.addr()).await;
    let body = json!({
        "model": "llama3",
        "max_tokens": 64,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": true,
    });
    let (head, bytes) = c
        .request("POST", "/v1/messages", Some(&body.to_string()))
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    let events = named_events(&bytes);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], *name);
    }
    let start_msg = &events[0].1["message"];
    assert_eq!(start_msg["role"], "assistant");
    assert_eq!(start_msg["usage"]["input_tokens"], 4);
    assert_eq!(events[3].1["delta"]["type"], "text_delta");
    assert_eq!(events[5].1["delta"]["text"], "tok2 ");
    assert_eq!(events[7].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[7].1["usage"]["output_tokens"], 3);

    let mut whole_body = body.clone();
    whole_body["stream"] = json!(false);
    let (_, whole) = c.json("POST", "/v1/messages", Some(whole_body)).await;
    assert_eq!(whole["type"], "message");
    assert!(whole["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(
        whole["content"][0],
        json!({"type": "text", "text": "tok0 tok1 tok2 "})
    );
    assert_eq!(whole["stop_reason"], "end_turn");
    assert_eq!(
        whole["usage"],
        json!({"input_tokens": 4, "output_tokens": 3})
    );

    let (head, count) = c
        .json("POST", "/v1/messages/count_tokens", Some(body.clone()))
        .await;
    assert_eq!((head.status, &count["input_tokens"]), (200, &json!(4)));

    let (head, err) = c
        .json("POST", "/v1/messages", Some(json!({"model": "gpt-9"})))
        .await;
    assert_eq!(head.status, 404);
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "not_found_error");
    assert_eq!(err["error"]["message"], "model 'gpt-9' not found");
}

#[tokio::test]
async fn ollama_show_version_and_embeddings() {
    let mock = start(quick("olla").models(["llama3.1:8b", "nomic-embed-text"])).await;
    let mut c = Client::connect(mock.addr()).await;
    for key in ["model", "name"] {
        let (head, show) = c
            .json("POST", "/api/show", Some(json!({key: "llama3.1:8b"})))
            .await;
        assert_eq!(head.status, 200, "{key}");
        assert_eq!(show["details"]["family"], "llama");
        assert_eq!(show["details"]["parameter_size"], "8.0B");
        assert_eq!(show["details"]["quantization_level"], "Q4_K_M");
        assert_eq!(show["model_info"]["general.architecture"], "llama");
        assert_eq!(show["model_info"]["llama.context_length"], 131_072);
        assert_eq!(show["capabilities"], json!(["completion", "tools"]));
        assert!(show["modelfile"]
            .as_str()
            .is_some_and(|m| m.contains("FROM")));
        assert!(show["modified_at"].is_string());
    }
    let (_, show) = c
        .json(
            "POST",
            "/api/show",
            Some(json!({"model": "nomic-embed-text:latest"})),
        )
        .await;
    assert_eq!(show["capabilities"], json!(["embedding"]));
    let (head, err) = c.json("POST", "/api/show", Some(json!({}))).await;
    assert_eq!(
        (head.status, &err["error"]),
        (400, &json!("model is required"))
    );
    let (head, err) = c
        .json("POST", "/api/show", Some(json!({"model": "gpt-9"})))
        .await;
    assert_eq!(
        (head.status, &err["error"]),
        (404, &json!("model 'gpt-9' not found"))
    );

    let (head, version) = c.json("GET", "/api/version", None).await;
    assert_eq!(head.status, 200);
    assert!(version["version"]
        .as_str()
        .is_some_and(|v| v.split('.').count() == 3));

    let (_, one) = c
        .json(
            "POST",
            "/api/embed",
            Some(json!({"model": "nomic-embed-text", "input": "a b c"})),
        )
        .await;
    assert_eq!(one["model"], "nomic-embed-text");
    assert_eq!(one["embeddings"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["prompt_eval_count"], 3);
    let (_, two) = c
        .json(
            "POST",
            "/api/embed",
            Some(json!({"model": "nomic-embed-text", "input": ["a", "b"]})),
        )
        .await;
    assert_eq!(two["embeddings"].as_array().map(Vec::len), Some(2));
    assert_ne!(two["embeddings"][0], two["embeddings"][1]);
    let (_, legacy) = c
        .json(
            "POST",
            "/api/embeddings",
            Some(json!({"model": "nomic-embed-text", "prompt": "a"})),
        )
        .await;
    assert!(legacy["embedding"]
        .as_array()
        .is_some_and(|v| !v.is_empty()));
    let stats = mock.stats();
    assert_eq!(stats.requests_to("/api/show"), 5);
    assert_eq!(stats.requests_to("/api/embed"), 2);
}

#[tokio::test]
async fn model_lists_carry_what_real_servers_list() {
    let mock = start(quick("lists").models(["llama3.1:8b", "team/coder:7b"])).await;
    let mut c = Client::connect(mock.addr()).await;
    let (_, tags) = c.json("GET", "/api/tags", None).await;
    let first = &tags["models"][0];
    assert_eq!(
        (&first["name"], &first["model"]),
        (&json!("llama3.1:8b"), &json!("llama3.1:8b"))
    );
    assert_eq!(first["size"], 4_848_000_000u64);
    assert!(first["digest"].as_str().is_some_and(|d| d.len() == 64));
    assert_eq!(
        first["details"],
        json!({
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "8.0B",
            "quantization_level": "Q4_K_M",
        })
    );
    assert!(
        first.get("backend").is_none(),
        "entries are passed on as they are"
    );
    let (_, again) = c.json("GET", "/api/tags", None).await;
    assert_eq!(again["models"][0]["modified_at"], first["modified_at"]);

    let (_, ps) = c.json("GET", "/api/ps", None).await;
    let loaded = ps["models"].as_array().expect("models");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0]["name"], "llama3.1:8b");
    assert_eq!(loaded[0]["size_vram"], loaded[0]["size"]);
    assert_eq!(loaded[0]["digest"], first["digest"]);
    assert!(loaded[0]["expires_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(loaded[0]["context_length"], 4096);

    let (_, models) = c.json("GET", "/v1/models", None).await;
    let data = models["data"].as_array().expect("data");
    assert_eq!(data[0]["owned_by"], "library");
    assert_eq!(data[1]["owned_by"], "team");
    assert!(data[0]["created"]
        .as_u64()
        .is_some_and(|t| t > 1_700_000_000));
    let (head, one) = c.json("GET", "/v1/models/llama3.1%3A8b", None).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        (&one["id"], &one["object"]),
        (&json!("llama3.1:8b"), &json!("model"))
    );
    let (head, err) = c.json("GET", "/v1/models/gpt-9", None).await;
    assert_eq!(
        (head.status, &err["error"]["code"]),
        (404, &json!("model_not_found"))
    );
}

#[tokio::test]
async fn ollama_paths_refuse_in_ollamas_shape() {
    let mock = start(quick("shapes")).await;
    let mut c = Client::connect(mock.addr()).await;
    let (head, err) = c
        .json("POST", "/api/chat", Some(json!({"model": "gpt-9"})))
        .await;
    assert_eq!(
        (head.status, &err["error"]),
        (404, &json!("model 'gpt-9' not found"))
    );
    let (head, bytes) = c.request("POST", "/api/embed", Some("{nope")).await;
    assert_eq!(head.status, 400);
    let err: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert!(err["error"].is_string(), "{err}");
    let (head, err) = c.json("GET", "/api/show", None).await;
    assert_eq!(head.status, 405);
    assert!(err["error"].is_string(), "{err}");

    mock.set_failure(Failure::Status(503));
    let (head, err) = c.json("GET", "/api/version", None).await;
    assert_eq!((head.status, head.header("retry-after")), (503, Some("1")));
    assert!(err["error"].is_string(), "{err}");
    let (head, err) = c
        .json("POST", "/v1/messages", Some(json!({"model": "llama3"})))
        .await;
    assert_eq!(head.status, 503);
    assert_eq!(err["error"]["type"], "overloaded_error");
    let (_, err) = c.json("GET", "/v1/models", None).await;
    assert_eq!(err["error"]["type"], "server_error");
}

// Multi-threaded like the binary: the cut must still come after the flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_streams_keep_the_timing_and_failure_knobs() {
    let gap = Duration::from_millis(30);
    let mock = start(
        quick("knobs")
            .token_gap(gap)
            .tokens(4)
            .failure(Failure::DropMidStream { after_tokens: 2 }),
    )
    .await;
    let mut c = Client::connect(mock.addr()).await;
    let body = r#"{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    c.send("POST", "/v1/messages", Some(body)).await;
    let head = c.head().await;
    assert_eq!(head.header(BACKEND_HEADER), Some("knobs"));
    let mut got = Vec::new();
    while let Ok(Some(chunk)) = within("chunk", c.chunk()).await {
        got.push((Instant::now(), named_events(&chunk)));
    }
    let deltas: Vec<&(Instant, Vec<(String, Value)>)> = got
        .iter()
        .filter(|(_, evs)| evs.iter().any(|(n, _)| n == "content_block_delta"))
        .collect();
    assert_eq!(deltas.len(), 2, "two tokens, then the cut");
    assert!(deltas[1].0 - deltas[0].0 >= gap / 2, "tokens are paced");
    assert!(
        deltas[0].1[0].1["sent_us"].is_u64(),
        "token events are stamped"
    );
    assert!(!got
        .iter()
        .flat_map(|(_, e)| e)
        .any(|(n, _)| n == "message_stop"));
    let stats = mock.stats();
    wait_for("dropped stream", || stats.streams_dropped() == 1).await;

    mock.set_failure(Failure::None);
    let mut c = Client::connect(mock.addr()).await;
    let (_, bytes) = c
        .request(
            "POST",
            "/v1/responses",
            Some(r#"{"model":"llama3","input":"hi","stream":true}"#),
        )
        .await;
    let last = named_events(&bytes).pop().expect("events");
    assert_eq!(last.0, "response.completed");
    wait_for("completed stream", || stats.streams_completed() == 1).await;
}
