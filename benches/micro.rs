//! Micro-benchmarks of the request hot path: choosing a backend, and finding
//! the `model` in request bodies of 1 KiB, 64 KiB and 2 MiB (model last, as
//! the OpenAI Python SDK sends it) and in a small body of twenty sampling
//! options (model first, so every key after it is still examined).
//! `cargo bench --bench micro`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard::balance::pool::{Pick, Pool};
use switchyard::config::Config;
use switchyard::models::scan;

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

criterion_group!(benches, selection, model_extraction);
criterion_main!(benches);
