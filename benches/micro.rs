//! Micro-benchmarks of the request hot path: choosing a backend, and finding
//! the `model` in request bodies of 1 KiB, 64 KiB and 2 MiB (model last, as
//! the OpenAI Python SDK sends it) and in a small body of twenty sampling
//! options (model first, so every key after it is still examined); and
//! reading token usage from response bodies as they stream past, per event
//! and per KiB; what recording a request in the metrics costs; and
//! building a request's access log line and queueing it.
//! `cargo bench --bench micro`.

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use switchyard::access_log::{AccessLog, Entry, Failure};
use switchyard::balance::pool::{Pick, Pool};
use switchyard::config::{AccessLogSpec, Config, LogFormat, LogPath};
use switchyard::metrics::{Metrics, Outcome, RequestRecord, SeriesHint, TokenSource, Usage};
use switchyard::models::scan;
use usage::{BodyKind, Source, UsageReader};

/// The usage reader belongs to the proxy, which the crate keeps to itself;
/// it uses nothing else of the crate, so its file is compiled here as is.
/// The benchmark uses only part of it.
#[allow(dead_code)]
#[path = "../src/proxy/usage/mod.rs"]
mod usage;

fn pool(strategy: &str, n: usize) -> Pool {
    let backends: String = (0..n)
        .map(|i| format!("      - {{ url: \"http://127.0.0.1:{}\" }}\n", 10000 + i))
        .collect();
    let yaml = format!("pools:\n  p:\n    strategy: {strategy}\n    health_check: {{ type: none }}\n    backends:\n{backends}");
    let spec = Config::from_yaml(&yaml)
        .expect("valid benchmark config")
        .pools[0]
        .clone();
    Pool::detached(spec)
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for n in [3, 32] {
        for strategy in [
            "round_robin",
            "random",
            "least_connections",
            "consistent_hash\n    hash_key: path",
        ] {
            let p = pool(strategy, n);
            let name = strategy.split('\n').next().unwrap_or(strategy);
            group.bench_with_input(BenchmarkId::new(name, n), &p, |b, p| {
                b.iter(|| {
                    match p.select(black_box(b"/v1/chat/completions"), &[], &[], Some("llama3")) {
                        Pick::Chosen(up) => black_box(up),
                        _ => unreachable!("every backend is usable"),
                    }
                })
            });
        }
    }
    group.finish();
}

fn model_extraction(c: &mut Criterion) {
    let mut group = c.benchmark_group("find_model");
    for (label, size) in [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("2MiB", 2 << 20)] {
        let content = "x".repeat(size);
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{content}"}}],"stream":true,"model":"llama3.1:70b"}}"#
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(label),
            body.as_bytes(),
            |b, body| b.iter(|| scan::find_model(black_box(body)).map(|f| f.model)),
        );
    }
    let options = r#"{"model":"llama3.1:70b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}],"temperature":0.7,"top_p":0.9,"n":1,"stream":true,"stream_options":{"include_usage":true},"stop":["\n\n"],"max_tokens":512,"presence_penalty":0,"frequency_penalty":0,"logit_bias":{},"user":"u-123","seed":42,"tools":[],"tool_choice":"auto","response_format":{"type":"text"},"logprobs":false,"parallel_tool_calls":true,"metadata":{"k":"v"}}"#;
    group.throughput(Throughput::Bytes(options.len() as u64));
    group.bench_with_input(
        BenchmarkId::from_parameter("20keys"),
        options.as_bytes(),
        |b, body| b.iter(|| scan::find_model(black_box(body)).map(|f| f.model)),
    );
    group.finish();
}

/// One chat chunk of one token, as vLLM and Ollama stream them: 180 bytes.
fn chat_event(token: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-7f3a9c\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,\
         \"model\":\"llama3.1:8b\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{token}\"}},\
         \"finish_reason\":null}}]}}\n\n"
    )
}

/// What the reader makes of `body`, to check a benchmark reads what it should.
fn read_usage(kind: BodyKind, body: &str) -> usage::Usage {
    let mut reader = UsageReader::new(kind);
    reader.feed(&Bytes::copy_from_slice(body.as_bytes()), true);
    reader.finish()
}

fn usage_reading(c: &mut Criterion) {
    let mut group = c.benchmark_group("usage");
    // Per event, as the body filter sees it: one event per chunk.
    let event = Bytes::from(chat_event(" the"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("sse_event", |b| {
        let mut reader = UsageReader::new(BodyKind::Sse);
        b.iter(|| reader.feed(black_box(&event), false))
    });
    let line = Bytes::from(r#"{"model":"llama3.1:8b","created_at":"2024-07-22T20:33:28.123648Z","message":{"role":"assistant","content":" the"},"done":false}"#.to_owned() + "\n");
    group.bench_function("ndjson_line", |b| {
        let mut reader = UsageReader::new(BodyKind::Ndjson);
        b.iter(|| reader.feed(black_box(&line), false))
    });
    // A whole stream in one chunk: 256 events, usage, `[DONE]`.
    let mut stream: String = (0..256).map(|_| chat_event(" the")).collect();
    stream += "data: {\"id\":\"chatcmpl-7f3a9c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\
               \"usage\":{\"prompt_tokens\":31,\"completion_tokens\":256,\"total_tokens\":287}}\n\ndata: [DONE]\n\n";
    let want = usage::Usage {
        prompt: Some(31),
        completion: Some(256),
        source: Source::Reported,
        events: 256,
    };
    assert_eq!(read_usage(BodyKind::Sse, &stream), want);
    group.throughput(Throughput::Bytes(stream.len() as u64));
    let stream = Bytes::from(stream);
    group.bench_function("sse_stream_256", |b| {
        b.iter(|| {
            let mut reader = UsageReader::new(BodyKind::Sse);
            reader.feed(black_box(&stream), true);
            reader.finish()
        })
    });
    // A 4 KiB chat completion, usage last.
    let content = "lorem ipsum dolor sit amet, \\\"quoted\\\" ".repeat(100);
    let body = format!(
        r#"{{"id":"chatcmpl-7f3a9c","object":"chat.completion","created":1731000000,"model":"llama3.1:8b","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":31,"completion_tokens":900,"total_tokens":931}}}}"#
    );
    let want = usage::Usage {
        completion: Some(900),
        events: 0,
        ..want
    };
    assert_eq!(read_usage(BodyKind::Json, &body), want);
    whole_and_in_two(&mut group, "json_4KiB", Bytes::from(body));
    // The benchmark harness's static answer: 316 bytes, usage last.
    let small = Bytes::from_static(br#"{"backend":"bench","choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"tok0 ","role":"assistant"}}],"created":1795660662,"id":"chatcmpl-bench-0","model":"llama3","object":"chat.completion","system_fingerprint":"bench","usage":{"completion_tokens":1,"prompt_tokens":2,"total_tokens":3}}"#);
    whole_and_in_two(&mut group, "json_316B", small);
    group.finish();
}

/// A whole JSON body read as it came in one chunk, from its end, and in
/// two, from the front.
fn whole_and_in_two(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, body: Bytes) {
    let (front, back) = (body.slice(..100), body.slice(100..));
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut reader = UsageReader::new(BodyKind::Json);
            reader.feed(black_box(&body), true);
            reader.finish()
        })
    });
    group.bench_function(format!("{name}_in_two_chunks"), |b| {
        b.iter(|| {
            let mut reader = UsageReader::new(BodyKind::Json);
            reader.feed(black_box(&front), false);
            reader.feed(black_box(&back), true);
            reader.finish()
        })
    });
}

/// The end of a request in the metrics: its series found (a model seen
/// before, the usual case) and its counter and histograms updated; for a
/// stream also its time to first token, time per token and tokens.
fn metrics(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    let m = Metrics::new();
    // As the proxy records: through the serving backend's hint.
    let hint = SeriesHint::default();
    let plain = RequestRecord {
        status: Some(200),
        outcome: Some(Outcome::Ok),
        duration: Duration::from_millis(30),
        ..RequestRecord::default()
    };
    let streamed = RequestRecord {
        ttft: Some(Duration::from_millis(120)),
        decode: Some(Duration::from_secs(2)),
        usage: Some(Usage {
            prompt: 40,
            completion: 200,
            source: TokenSource::Reported,
        }),
        ..plain.clone()
    };
    for (name, record) in [("request", &plain), ("stream_with_usage", &streamed)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                m.record_request(
                    black_box(("chat", "gpu-1", "llama3.1:70b")),
                    Some(&hint),
                    || true,
                    black_box(record),
                )
            })
        });
    }
    group.finish();
}

/// A chat request's line as the `logging` hook builds it: the times read
/// from the clock, the fields borrowed from the request.
fn chat_entry<'a>(start: Instant, failures: &'a [Failure]) -> Entry<'a> {
    let duration = start.elapsed();
    let now = SystemTime::now();
    Entry {
        time: now.checked_sub(duration).unwrap_or(now),
        request_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        client: Some("10.1.2.3".parse().unwrap()),
        key: None,
        method: "POST",
        path: "/v1/chat/completions",
        status: 200,
        pool: Some("chat"),
        backend: Some("gpu-1"),
        model: Some("llama3.1:8b"),
        served_model: Some("llama3.1:8b"),
        attempts: 1,
        failures,
        queue: Duration::ZERO,
        ttft: Some(Duration::from_micros(181_234)),
        duration,
        bytes_in: 212,
        bytes_out: 46_811,
        prompt_tokens: Some(31),
        completion_tokens: Some(256),
        tokens_estimated: false,
        error: None,
    }
}

fn access_log(c: &mut Criterion) {
    let mut group = c.benchmark_group("access_log");
    group.throughput(Throughput::Elements(1));
    let start = Instant::now();
    // The line alone: clock, fields, JSON.
    let mut line = Vec::with_capacity(512);
    group.bench_function("line", |b| {
        b.iter(|| {
            line.clear();
            chat_entry(black_box(start), &[]).write_line(&mut line);
            black_box(line.len())
        })
    });
    // What a request pays: the line, and queueing it, while a writer
    // takes the buffer every 10 ms (into /dev/null) as the real one does
    // every 100 ms, so the buffer never fills and no line is dropped.
    let spec = AccessLogSpec {
        path: LogPath::File("/dev/null".into()),
        format: LogFormat::Json,
    };
    let log = Arc::new(AccessLog::detached(Some(&spec)));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                log.flush();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    group.bench_function("record", |b| {
        b.iter(|| log.record(&chat_entry(black_box(start), &[])))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    group.finish();
}

criterion_group!(
    benches,
    selection,
    model_extraction,
    usage_reading,
    metrics,
    access_log
);
criterion_main!(benches);
