//! The Grafana dashboard in `conf/grafana-dashboard.json` against the
//! metrics Switchyard really exports. The real binary serves traffic of
//! every kind the dashboard shows (served, streamed, refused, retried, cut,
//! queued, cancelled), so every labelled series exists; then each PromQL
//! query of the dashboard is read for the metrics it selects, the labels
//! it matches on and the labels it groups by, and each must be in the
//! scrape. A renamed metric or label fails here instead of as an empty
//! panel in someone's Grafana.
//!
//! The reader is not a PromQL parser: it knows the small part of the
//! language a dashboard uses (selectors, functions, aggregations with
//! `by`/`without`, binary operators) and reports what it does not know.

mod common;

use common::scrape::{scrape, Scrape};
use common::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DASHBOARD: &str = include_str!("../conf/grafana-dashboard.json");

/// The datasource every panel, query and variable uses: an import input,
/// so the dashboard imports into any Grafana with any Prometheus.
const DATASOURCE_UID: &str = "${DS_PROMETHEUS}";

/// Labels Prometheus adds to every series it scrapes; never in `/metrics`.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// Grafana's own variables a query may use.
const GRAFANA_VARIABLES: &[&str] = &["__rate_interval", "__interval", "__range"];

/// PromQL functions and aggregations the dashboard may call; a name
/// followed by `(` that is not here is a typo.
const FUNCTIONS: &[&str] = &[
    "abs",
    "avg",
    "avg_over_time",
    "ceil",
    "clamp_min",
    "count",
    "delta",
    "deriv",
    "floor",
    "histogram_quantile",
    "increase",
    "irate",
    "label_replace",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "quantile",
    "rate",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "sum",
    "time",
    "topk",
    "bottomk",
    "vector",
];

/// Words of the language that are neither metrics nor functions.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset"];

/// Modifiers followed by a list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

// ---------------------------------------------------------------------------
// What the scrape holds.

/// The scrape as the checks need it: families by type, and the label
/// names each sample name carries.
struct Exported {
    families: HashMap<String, String>,
    labels: HashMap<String, HashSet<String>>,
}

impl Exported {
    fn of(scrape: &Scrape) -> Exported {
        let families = scrape
            .text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
            .collect();
        let mut labels: HashMap<String, HashSet<String>> = HashMap::new();
        for s in &scrape.samples {
            labels
                .entry(s.name.clone())
                .or_default()
                .extend(s.labels.iter().map(|(k, _)| k.clone()));
        }
        Exported { families, labels }
    }

    /// The label names of the series `name` selects, or why there are none.
    fn series(&self, name: &str) -> Result<&HashSet<String>, String> {
        let family = if self.families.contains_key(name) {
            name
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|f| {
                    self.families
                        .get(*f)
                        .is_some_and(|k| k == "histogram" || k == "summary")
                })
                .ok_or_else(|| format!("metric `{name}` is not in the scrape"))?
        };
        self.labels.get(name).ok_or_else(|| {
            format!(
                "metric `{name}` has no samples: `{family}` is a {}",
                self.families[family]
            )
        })
    }

    /// Whether series of `name` carry `label`, or Prometheus adds it.
    fn has_label(&self, name: &str, label: &str) -> bool {
        TARGET_LABELS.contains(&label)
            || self.series(name).is_ok_and(|labels| labels.contains(label))
    }
}

// ---------------------------------------------------------------------------
// Reading PromQL.

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// `$name` or `${name}`.
    Var(String),
    Str,
    Number,
    /// `[5m]`, `[$__rate_interval]`: its variables.
    Range(Vec<String>),
    Punct(char),
    /// `=`, `!=`, `=~`, `!~`, `==`, `*`, `/`, `-`, `>`...
    Op(String),
}

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The variables `$x` and `${x}` in `text`.
fn variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| ident_char(*c))
            .collect();
        out.push(name);
    }
    out
}

fn tokens(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let take_while = |mut i: usize, f: &dyn Fn(char) -> bool| {
        while i < chars.len() && f(chars[i]) {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if ident_start(c) {
            let end = take_while(i, &ident_char);
            out.push(Token::Ident(chars[i..end].iter().collect()));
            i = end;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            i = take_while(i, &|c: char| c.is_ascii_alphanumeric() || c == '.');
            out.push(Token::Number);
        } else if c == '$' {
            let end = take_while(i + 1, &|c: char| ident_char(c) || c == '{' || c == '}');
            out.push(Token::Var(
                variables(&chars[i..end].iter().collect::<String>()).concat(),
            ));
            i = end;
        } else if c == '"' || c == '\'' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            if j >= chars.len() {
                return Err("a string is not closed".into());
            }
            out.push(Token::Str);
            i = j + 1;
        } else if c == '[' {
            let end = chars[i..]
                .iter()
                .position(|c| *c == ']')
                .ok_or("a range `[` is not closed")?;
            let inner: String = chars[i + 1..i + end].iter().collect();
            out.push(Token::Range(variables(&inner)));
            i += end + 1;
        } else if "(){},".contains(c) {
            out.push(Token::Punct(c));
            i += 1;
        } else if "=!~<>+-*/%^".contains(c) {
            let end = take_while(i, &|c: char| "=!~<>".contains(c)).max(i + 1);
            out.push(Token::Op(chars[i..end].iter().collect()));
            i = end;
        } else {
            return Err(format!("unexpected `{c}`"));
        }
    }
    Ok(out)
}

/// A metric selected, with the label names its matchers use.
#[derive(Debug, PartialEq)]
struct Selector {
    name: String,
    at: usize,
    matchers: Vec<String>,
}

/// A `by (...)` or `without (...)` clause: its labels, and the token range
/// of the expression it aggregates.
#[derive(Debug, PartialEq)]
struct Grouping {
    labels: Vec<String>,
    scope: std::ops::Range<usize>,
}

/// What one query uses.
#[derive(Debug, Default, PartialEq)]
struct Query {
    selectors: Vec<Selector>,
    groupings: Vec<Grouping>,
    variables: Vec<String>,
}

/// The index of the parenthesis matching the one at `open`, looking
/// `forward` for a `)` or back for a `(`.
fn matching(tokens: &[Token], open: usize, forward: bool) -> Option<usize> {
    let (here, there) = if forward { ('(', ')') } else { (')', '(') };
    let mut depth = 0usize;
    let mut i = open;
    loop {
        match &tokens[i] {
            Token::Punct(c) if *c == here => depth += 1,
            Token::Punct(c) if *c == there => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        if forward {
            i += 1;
            if i == tokens.len() {
                return None;
            }
        } else {
            i = i.checked_sub(1)?;
        }
    }
}

/// The names between `(` at `open` and its `)`; the index after the `)`.
fn name_list(tokens: &[Token], open: usize) -> Result<(Vec<String>, usize), String> {
    let mut names = Vec::new();
    let mut i = open + 1;
    loop {
        match tokens.get(i) {
            Some(Token::Ident(n)) => names.push(n.clone()),
            Some(Token::Punct(',')) => {}
            Some(Token::Punct(')')) => return Ok((names, i + 1)),
            other => return Err(format!("unexpected {other:?} in a label list")),
        }
        i += 1;
    }
}

fn read(expr: &str) -> Result<Query, String> {
    let t = tokens(expr)?;
    let mut q = Query::default();
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Token::Var(v) => q.variables.push(v.clone()),
            Token::Range(vars) => q.variables.extend(vars.iter().cloned()),
            Token::Punct('{') => return Err("a selector without a metric name".into()),
            Token::Ident(word) if LABEL_LISTS.contains(&word.as_str()) => {
                if t.get(i + 1) != Some(&Token::Punct('(')) {
                    if word.starts_with("group_") {
                        i += 1;
                        continue;
                    }
                    return Err(format!("`{word}` without a label list"));
                }
                let (labels, after) = name_list(&t, i + 1)?;
                if word == "by" || word == "without" {
                    let scope = if t.get(after) == Some(&Token::Punct('(')) {
                        after..matching(&t, after, true).ok_or("`(` not closed")?
                    } else if i > 0 && t[i - 1] == Token::Punct(')') {
                        matching(&t, i - 1, false).ok_or("`)` not opened")?..i
                    } else {
                        return Err(format!("`{word}` aggregates nothing"));
                    };
                    q.groupings.push(Grouping { labels, scope });
                }
                i = after;
                continue;
            }
            Token::Ident(word) if FUNCTIONS.contains(&word.as_str()) => match t.get(i + 1) {
                Some(Token::Punct('(')) => {}
                // `sum by (x) (...)`: the aggregation's clause comes first.
                Some(Token::Ident(w)) if w == "by" || w == "without" => {}
                _ => return Err(format!("function `{word}` without arguments")),
            },
            Token::Ident(word) if t.get(i + 1) == Some(&Token::Punct('(')) => {
                return Err(format!("unknown function `{word}`"));
            }
            Token::Ident(word) if KEYWORDS.contains(&word.as_str()) => {}
            Token::Ident(name) => {
                let mut selector = Selector {
                    name: name.clone(),
                    at: i,
                    matchers: Vec::new(),
                };
                if t.get(i + 1) == Some(&Token::Punct('{')) {
                    i += 2;
                    loop {
                        match (t.get(i), t.get(i + 1), t.get(i + 2)) {
                            (Some(Token::Punct('}')), _, _) => break,
                            (Some(Token::Punct(',')), _, _) => i += 1,
                            (Some(Token::Ident(label)), Some(Token::Op(_)), Some(Token::Str)) => {
                                selector.matchers.push(label.clone());
                                i += 3;
                            }
                            _ => return Err(format!("cannot read the matchers of `{name}`")),
                        }
                    }
                }
                q.selectors.push(selector);
            }
            _ => {}
        }
        i += 1;
    }
    // Variables in label values: `pool=~"$pool"`.
    q.variables.extend(variables(expr));
    q.variables.sort();
    q.variables.dedup();
    Ok(q)
}

// ---------------------------------------------------------------------------
// The checks.

/// Every problem of `query` (from `at`) against the scrape.
fn query_problems(
    at: &str,
    expr: &str,
    exported: &Exported,
    vars: &HashSet<String>,
) -> Vec<String> {
    let q = match read(expr) {
        Ok(q) => q,
        Err(e) => return vec![format!("{at}: {e} in `{expr}`")],
    };
    let mut problems = Vec::new();
    if q.selectors.is_empty() {
        problems.push(format!("{at}: selects no metric: `{expr}`"));
    }
    for s in &q.selectors {
        if let Err(e) = exported.series(&s.name) {
            problems.push(format!("{at}: {e}"));
            continue;
        }
        for label in &s.matchers {
            if !exported.has_label(&s.name, label) {
                problems.push(format!("{at}: `{}` has no label `{label}`", s.name));
            }
        }
    }
    for g in &q.groupings {
        for s in q.selectors.iter().filter(|s| g.scope.contains(&s.at)) {
            for label in &g.labels {
                if exported.series(&s.name).is_ok() && !exported.has_label(&s.name, label) {
                    problems.push(format!(
                        "{at}: groups `{}` by `{label}`, a label it does not have",
                        s.name
                    ));
                }
            }
        }
    }
    for v in &q.variables {
        if !vars.contains(v) && !GRAFANA_VARIABLES.contains(&v.as_str()) {
            problems.push(format!("{at}: no variable `${v}`"));
        }
    }
    problems
}

/// The panels, rows' panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

fn uses_datasource(v: &Value) -> bool {
    v["datasource"]["uid"] == DATASOURCE_UID && v["datasource"]["type"] == "prometheus"
}

/// Every problem of the dashboard `text` against `scrape`; none is good.
fn problems(text: &str, scrape: &Scrape) -> Vec<String> {
    let dashboard: Value = match serde_json::from_str(text) {
        Ok(d) => d,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    let exported = Exported::of(scrape);
    let mut problems = Vec::new();
    let input = dashboard["__inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus");
    if !input {
        problems.push("no `DS_PROMETHEUS` datasource input".into());
    }
    if dashboard["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
        problems.push("schemaVersion is missing or older than 36".into());
    }

    let mut vars = HashSet::new();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = v["name"].as_str().unwrap_or_default();
        vars.insert(name.to_string());
        let at = format!("variable `{name}`");
        if !uses_datasource(v) {
            problems.push(format!("{at}: not on the `{DATASOURCE_UID}` datasource"));
        }
        let query = v["query"]["query"].as_str().or(v["query"].as_str());
        let Some(inner) = query
            .and_then(|q| q.strip_prefix("label_values("))
            .and_then(|q| q.strip_suffix(')'))
        else {
            problems.push(format!("{at}: not a label_values(metric, label) query"));
            continue;
        };
        let Some((selector, label)) = inner.rsplit_once(',') else {
            problems.push(format!("{at}: label_values without a metric"));
            continue;
        };
        let known: HashSet<String> = vars.iter().filter(|v| *v != name).cloned().collect();
        problems.extend(query_problems(&at, selector, &exported, &known));
        let label = label.trim();
        if let Ok(q) = read(selector) {
            for s in &q.selectors {
                if exported.series(&s.name).is_ok() && !exported.has_label(&s.name, label) {
                    problems.push(format!("{at}: `{}` has no label `{label}`", s.name));
                }
            }
        }
    }

    let mut ids = HashSet::new();
    for p in panels(&dashboard) {
        let title = p["title"].as_str().unwrap_or_default();
        let at = format!("panel `{title}`");
        if !ids.insert(p["id"].to_string()) {
            problems.push(format!("{at}: id {} used twice", p["id"]));
        }
        let grid = &p["gridPos"];
        let fits = match (grid["x"].as_u64(), grid["w"].as_u64(), grid["h"].as_u64()) {
            (Some(x), Some(w), Some(h)) => w >= 1 && x + w <= 24 && h >= 1,
            _ => false,
        };
        if !fits {
            problems.push(format!("{at}: gridPos outside the 24 columns: {grid}"));
        }
        if p["type"] == "row" {
            continue;
        }
        if title.is_empty() {
            problems.push(format!("panel {}: no title", p["id"]));
        }
        if !uses_datasource(p) {
            problems.push(format!("{at}: not on the `{DATASOURCE_UID}` datasource"));
        }
        if p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{at}: no unit"));
        }
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{at}: no targets"));
        }
        let mut refs = HashSet::new();
        for t in targets {
            let at = format!("{at} target {}", t["refId"]);
            if !refs.insert(t["refId"].to_string()) {
                problems.push(format!("{at}: refId used twice"));
            }
            match t["expr"].as_str() {
                Some(expr) if !expr.trim().is_empty() => {
                    problems.extend(query_problems(&at, expr, &exported, &vars))
                }
                _ => problems.push(format!("{at}: no expr")),
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// The checker, on a scrape written by hand.

const SMALL_SCRAPE: &str = "\
# TYPE switchyard_requests_total counter
switchyard_requests_total{pool=\"chat\",outcome=\"ok\"} 3
# TYPE switchyard_queue_wait_seconds histogram
switchyard_queue_wait_seconds_bucket{pool=\"chat\",le=\"0.1\"} 1
switchyard_queue_wait_seconds_bucket{pool=\"chat\",le=\"+Inf\"} 1
switchyard_queue_wait_seconds_sum{pool=\"chat\"} 0.05
switchyard_queue_wait_seconds_count{pool=\"chat\"} 1
";

fn small_problems(expr: &str) -> Vec<String> {
    let vars = HashSet::from(["pool".to_string()]);
    query_problems(
        "q",
        expr,
        &Exported::of(&Scrape::parse(SMALL_SCRAPE)),
        &vars,
    )
}

#[test]
fn the_reader_finds_metrics_groupings_and_variables() {
    let q = read(
        r#"histogram_quantile(0.95, sum by (pool, le) (rate(x_bucket{pool=~"$pool"}[$__rate_interval]))) / on (pool) sum(y) by (pool)"#,
    )
    .unwrap();
    let names: Vec<&str> = q.selectors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["x_bucket", "y"]);
    assert_eq!(q.selectors[0].matchers, ["pool"]);
    assert_eq!(q.groupings.len(), 2);
    assert_eq!(q.groupings[0].labels, ["pool", "le"]);
    assert!(q.groupings[0].scope.contains(&q.selectors[0].at));
    assert!(!q.groupings[0].scope.contains(&q.selectors[1].at));
    // The postfix form groups what comes before it.
    assert!(q.groupings[1].scope.contains(&q.selectors[1].at));
    assert!(!q.groupings[1].scope.contains(&q.selectors[0].at));
    assert_eq!(q.variables, ["__rate_interval", "pool"]);
}

#[test]
fn the_checker_accepts_what_exists_and_names_what_does_not() {
    let good = [
        r#"sum by (pool, outcome) (rate(switchyard_requests_total{pool=~"$pool", outcome!="ok"}[5m]))"#,
        r#"histogram_quantile(0.5, sum by (pool, le) (rate(switchyard_queue_wait_seconds_bucket[$__rate_interval])))"#,
        "sum by (instance) (rate(switchyard_queue_wait_seconds_count[1m])) * 2 or vector(0)",
    ];
    for expr in good {
        assert_eq!(small_problems(expr), Vec::<String>::new(), "{expr}");
    }
    let bad = [
        (
            "rate(switchyard_request_total[5m])",
            "`switchyard_request_total` is not in the scrape",
        ),
        (
            "sum by (model) (rate(switchyard_requests_total[5m]))",
            "by `model`",
        ),
        (
            r#"switchyard_requests_total{backend="a"}"#,
            "no label `backend`",
        ),
        ("switchyard_queue_wait_seconds", "has no samples"),
        ("switchyard_requests_total_bucket", "not in the scrape"),
        (
            "rated(switchyard_requests_total[5m])",
            "unknown function `rated`",
        ),
        (
            "sum(rate(switchyard_requests_total[$interval]))",
            "no variable `$interval`",
        ),
        ("vector(1)", "selects no metric"),
        (r#"{__name__="x"}"#, "without a metric name"),
    ];
    for (expr, want) in bad {
        let found = small_problems(expr);
        assert!(
            found.iter().any(|p| p.contains(want)),
            "`{expr}` should report `{want}`, reported {found:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The dashboard, against the real binary.

/// Scrapes until `done` holds, then returns that scrape.
async fn scrape_until(admin: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let client = client();
    let end = Instant::now() + DEADLINE;
    loop {
        let s = scrape(&client, admin, None).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stream_body(model: &str) -> String {
    format!(r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_of_the_dashboard_names_metrics_and_labels_the_proxy_exports() {
    let quick = |name: &str| {
        MockConfig::new(name)
            .models(Vec::<String>::new())
            .ttft(Duration::ZERO)
    };
    let served = mock(quick("served")).await;
    let busy = mock(quick("busy").fail_with(503)).await;
    let spare = mock(quick("spare")).await;
    let cut = mock(quick("cut").failure(Failure::DropMidStream { after_tokens: 2 })).await;
    let slow = mock(
        quick("slow")
            .token_gap(Duration::from_millis(200))
            .tokens(100),
    )
    .await;
    let backend = |m: &MockServer, models: Vec<&str>| Backend::of(m).set("models", models);
    let admin_port = free_port();
    let proxy = Proxy::start(|addr| {
        Fleet::new(addr)
            .admin("listen", format!("127.0.0.1:{admin_port}"))
            .pool(Pool::new("chat").backend(backend(&served, vec!["llama3", "qwen2.5"])))
            .pool(
                Pool::new("flaky")
                    .set("strategy", "priority")
                    .backend(backend(&busy, vec!["flaky"]).set("priority", 9))
                    .backend(backend(&spare, vec!["flaky"])),
            )
            .pool(Pool::new("cut").backend(backend(&cut, vec!["cut"])))
            .pool(
                Pool::new("slow")
                    .set("queue.timeout", "200ms")
                    .backend(backend(&slow, vec!["slow"]).set("max_in_flight", 1)),
            )
            .route("flaky", &[("model", "flaky")])
            .route("cut", &[("model", "cut")])
            .route("slow", &[("model", "slow")])
            .route("chat", &[])
            .yaml()
    })
    .await;
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let client = client();
    let url = proxy.url("/v1/chat/completions");

    // Served, streamed (time to first token, time per output token),
    // refused for an unknown model.
    assert_eq!(chat(&client, &url, "llama3").await.unwrap().0, 200);
    let (status, chunks) = stream_chunks(&client, &url, &stream_body("qwen2.5")).await;
    assert_eq!(status, 200);
    assert!(body_text(&chunks).contains("[DONE]"));
    assert_eq!(chat(&client, &url, "no-such-model").await.unwrap().0, 404);
    // A 503 retried on the spare backend.
    assert_eq!(
        chat(&client, &url, "flaky").await.unwrap(),
        (200, "spare".into())
    );
    // A stream its backend cuts: a stream error. Its own client, as the
    // proxy closes that connection after the error event, and a pooled
    // connection reused as it closes would be reset under the next request.
    let (status, _) = stream_chunks(&common::client(), &url, &stream_body("cut")).await;
    assert_eq!(status, 200);
    // A stream holds the slow backend's only slot, so a second request
    // waits in the queue until it gives up; then the first client leaves.
    let mut held = post_json(&client, &url, &stream_body("slow")).await;
    assert!(held.chunk().await.unwrap().is_some());
    assert_eq!(chat(&client, &url, "slow").await.unwrap().0, 503);
    drop(held);

    // A scrape reads one family after another, so a request may show in
    // one before its other counters show in theirs: wait for them all.
    let events = [
        "switchyard_requests_total",
        "switchyard_retries_total",
        "switchyard_stream_errors_total",
        "switchyard_client_cancellations_total",
        "switchyard_queue_wait_seconds_count",
        "switchyard_time_per_output_token_seconds_count",
    ];
    let s = scrape_until(admin, "seven requests and their events", |s| {
        s.sum(events[0], &[]) >= 7.0 && events.iter().all(|e| s.sum(e, &[]) >= 1.0)
    })
    .await;

    let found = problems(DASHBOARD, &s);
    assert!(
        found.is_empty(),
        "conf/grafana-dashboard.json does not match the scrape:\n  {}\n\nscrape:\n{}",
        found.join("\n  "),
        s.text
    );

    // The same check fails on a dashboard with a renamed metric or label.
    for (from, to, want) in [
        (
            "switchyard_retries_total",
            "switchyard_retry_total",
            "`switchyard_retry_total` is not in the scrape",
        ),
        ("sum by (pool, phase)", "sum by (pool, stage)", "by `stage`"),
        (
            "kind=\\\"completion\\\"",
            "type=\\\"completion\\\"",
            "no label `type`",
        ),
    ] {
        assert!(
            DASHBOARD.contains(from),
            "the dashboard has no `{from}` to break"
        );
        let broken = problems(&DASHBOARD.replace(from, to), &s);
        assert!(
            broken.iter().any(|p| p.contains(want)),
            "renaming `{from}` should report `{want}`, reported {broken:?}"
        );
    }
}
