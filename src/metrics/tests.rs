use super::*;

/// The value of the series `name` whose labels include all of `labels`,
/// read from the text format; `None` when there is none.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}

fn text(m: &Metrics) -> String {
    String::from_utf8(m.encode().unwrap()).unwrap()
}

fn ok(status: u16) -> RequestRecord {
    RequestRecord {
        status: Some(status),
        outcome: Some(Outcome::Ok),
        duration: Duration::from_millis(30),
        ..RequestRecord::default()
    }
}

#[test]
fn every_family_is_exported() {
    let m = Metrics::new();
    m.record_request(("chat", "a", "llama3"), None, || true, &ok(200));
    m.retried("chat", RetryReason::Connect);
    m.stream_error("chat", "backend_timeout");
    m.client_cancelled("chat", true);
    m.upstream_connection(false);
    m.queue_waited("chat", Duration::from_millis(5));
    m.discovery_failed("a");
    m.reloaded(false);
    let t = text(&m);
    for name in [
        "switchyard_requests_total",
        "switchyard_request_duration_seconds_bucket",
        "switchyard_retries_total",
        "switchyard_stream_errors_total",
        "switchyard_client_cancellations_total",
        "switchyard_upstream_connections_total",
        "switchyard_queue_wait_seconds_count",
        "switchyard_model_discovery_failures_total",
        "switchyard_reloads_total",
        "switchyard_last_reload_success_timestamp_seconds",
        "switchyard_build_info",
        "switchyard_client_connections",
        "switchyard_client_connections_refused_total",
        "switchyard_loops_refused_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(
            t.lines().any(|l| l.starts_with(name)),
            "{name} missing from\n{t}"
        );
    }
    assert_eq!(
        value(
            &t,
            "switchyard_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
}

#[test]
fn requests_count_once_each_under_their_labels() {
    let m = Metrics::new();
    for _ in 0..3 {
        m.record_request(("chat", "a", "llama3"), None, || true, &ok(200));
    }
    let refused = RequestRecord {
        status: Some(503),
        outcome: Some(Outcome::Refused),
        error_code: "no_healthy_backend",
        ..RequestRecord::default()
    };
    m.record_request(("chat", "", "llama3"), None, || true, &refused);
    let t = text(&m);
    let requests = |labels: &[(&str, &str)]| value(&t, "switchyard_requests_total", labels);
    assert_eq!(
        requests(&[
            ("pool", "chat"),
            ("backend", "a"),
            ("model", "llama3"),
            ("status", "2xx"),
            ("outcome", "ok"),
            ("error_code", ""),
        ]),
        Some(3.0)
    );
    assert_eq!(
        requests(&[
            ("backend", ""),
            ("status", "5xx"),
            ("outcome", "refused"),
            ("error_code", "no_healthy_backend"),
        ]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &t,
            "switchyard_request_duration_seconds_count",
            &[("backend", "a")]
        ),
        Some(3.0)
    );
    // No request streamed or reported tokens: no empty series for them.
    assert!(!t.contains("switchyard_time_to_first_token_seconds_count"));
    assert!(!t.contains("switchyard_tokens_total{"));
}

#[test]
fn models_outside_the_fleet_count_as_other() {
    let m = Metrics::new();
    for i in 0..100 {
        let name = format!("made-up-{i}");
        m.record_request(("chat", "a", &name), None, || false, &ok(404));
    }
    m.record_request(("chat", "a", "llama3"), None, || true, &ok(200));
    assert_eq!(m.series.len(), 2, "one series for all the unknown names");
    let t = text(&m);
    assert_eq!(
        value(&t, "switchyard_requests_total", &[("model", "other")]),
        Some(100.0)
    );
    // A model checked once is not checked again.
    m.record_request(
        ("chat", "a", "llama3"),
        None,
        || panic!("checked twice"),
        &ok(200),
    );
}

#[test]
fn a_backends_hint_serves_only_its_own_labels() {
    let m = Metrics::new();
    let hint = SeriesHint::default();
    // The first model the hint keeps is found there; the others, an
    // unknown one among them, and other backends' requests, go to the
    // cache, each under its own labels.
    for round in 0..5 {
        for (labels, known) in [
            (("chat", "a", "llama3"), true),
            (("chat", "a", "qwen"), true),
            (("chat", "a", "made-up"), false),
            (("chat", "b", "llama3"), true),
            (("bulk", "a", "llama3"), true),
        ] {
            m.record_request(labels, Some(&hint), || known, &ok(200));
        }
        assert!(round == 0 || hint.0.get().is_some_and(|s| s.is(("chat", "a", "llama3"))));
    }
    let t = text(&m);
    for (pool, backend, model) in [
        ("chat", "a", "llama3"),
        ("chat", "a", "qwen"),
        ("chat", "a", "other"),
        ("chat", "b", "llama3"),
        ("bulk", "a", "llama3"),
    ] {
        let labels = [("pool", pool), ("backend", backend), ("model", model)];
        assert_eq!(
            value(&t, "switchyard_requests_total", &labels),
            Some(5.0),
            "{labels:?}"
        );
    }
}

#[test]
fn streams_record_ttft_and_with_usage_tpot_and_tokens() {
    let m = Metrics::new();
    let streamed = RequestRecord {
        ttft: Some(Duration::from_millis(200)),
        decode: Some(Duration::from_millis(900)),
        usage: Some(Usage {
            prompt: 12,
            completion: 10,
            source: TokenSource::Reported,
        }),
        ..ok(200)
    };
    m.record_request(("chat", "a", "llama3"), None, || true, &streamed);
    m.record_tokens("chat", "a", "llama3", 3, 0, TokenSource::Estimated);
    let t = text(&m);
    let labels = [("backend", "a"), ("model", "llama3")];
    assert_eq!(
        value(&t, "switchyard_time_to_first_token_seconds_sum", &labels),
        Some(0.2)
    );
    // 900 ms over the nine tokens after the first.
    assert_eq!(
        value(&t, "switchyard_time_per_output_token_seconds_sum", &labels),
        Some(0.1)
    );
    let tokens = |kind: &str, source: &str| {
        value(
            &t,
            "switchyard_tokens_total",
            &[("model", "llama3"), ("kind", kind), ("source", source)],
        )
    };
    assert_eq!(tokens("prompt", "reported"), Some(12.0));
    assert_eq!(tokens("completion", "reported"), Some(10.0));
    assert_eq!(tokens("prompt", "estimated"), Some(3.0));
    assert_eq!(tokens("completion", "estimated"), None);
}

#[test]
fn reloads_move_the_timestamp() {
    let m = Metrics::new();
    let before = m.last_reload.get();
    assert!(before > 1.0e9, "set at start: {before}");
    m.reloaded(true);
    m.reloaded(false);
    assert_eq!(m.reloads(), (1, 1));
    assert!(m.last_reload.get() >= before);
}
