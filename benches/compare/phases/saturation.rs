//! Workloads 1, 5, 6, 7, 8 and 9: small completions in a closed loop, as
//! fast as a target answers them, against the mock (1, and upstream reuse,
//! 5), against the static backend (6), against the static backend with the
//! proxy terminating TLS, on kept-alive connections (7) and on a new
//! connection, so a full handshake, per request (8), and against the static
//! backend over TLS (9), with upstream reuse over the measured window.
//!
//! Against the mock, the harness's one CPU (on two cores) carries both the
//! load generator and the mock, and runs out before the cheaper proxies do:
//! their req/s is then the harness's, not theirs. The static backend costs
//! far less per request than the mock, so in workload 6 the proxy's CPU is
//! the one that runs out, and req/s compares the proxies themselves.

use std::sync::Arc;

use tokio::time::{sleep, Instant};

use super::{order, Bench, CONNS, SMALL};
use crate::backend::StaticBackend;
use crate::load::{self, Client};
use crate::procfs;
use crate::report::Ratios;
use crate::targets::{Kind, Target};

/// The rows of one saturation workload, in the order they are shown.
struct Rows {
    /// `1.` or `6.`, for notes.
    workload: &'static str,
    sat: &'static str,
    p50: &'static str,
    proxy_cpu: &'static str,
    proxy_busy: &'static str,
    harness_busy: &'static str,
    loadgen_pct: &'static str,
    loadgen_cpu: &'static str,
    backend_cpu: &'static str,
    errors: &'static str,
    /// What answers behind the proxies, for notes.
    backend: &'static str,
    /// What to read instead when the harness capped a proxy's req/s.
    instead: &'static str,
}

impl Rows {
    fn all(&self) -> [&'static str; 9] {
        [
            self.sat,
            self.p50,
            self.proxy_cpu,
            self.proxy_busy,
            self.harness_busy,
            self.loadgen_pct,
            self.loadgen_cpu,
            self.backend_cpu,
            self.errors,
        ]
    }
}

/// Workload 1's req/s, which workload 2's rate is taken from.
pub const SAT: &str = "1. Saturation, 64 conns (req/s)";

const MOCK: Rows = Rows {
    workload: "1.",
    sat: SAT,
    p50: "1. Latency p50 at saturation (ms)",
    proxy_cpu: "1. Proxy CPU per request (µs)",
    proxy_busy: "1. Proxy's CPU busy (%, /proc/stat)",
    harness_busy: "1. Harness CPUs busy: loadgen + mock + kernel (%, /proc/stat)",
    loadgen_pct: "1. Load generator threads (% of one CPU)",
    loadgen_cpu: "1. Load generator CPU per request (µs)",
    backend_cpu: "1. Mock backend CPU per request (µs)",
    errors: "1. Errors in saturation window",
    backend: "the mock",
    instead: "compare CPU per request, or workload 6's req/s, instead",
};

const STATIC: Rows = Rows {
    workload: "6.",
    sat: "6. Saturation, static backend, 64 conns (req/s)",
    p50: "6. Latency p50 at saturation, static backend (ms)",
    proxy_cpu: "6. Proxy CPU per request, static backend (µs)",
    proxy_busy: "6. Proxy's CPU busy, static backend (%, /proc/stat)",
    harness_busy: "6. Harness CPUs busy: loadgen + static backend + kernel (%, /proc/stat)",
    loadgen_pct: "6. Load generator threads, static backend (% of one CPU)",
    loadgen_cpu: "6. Load generator CPU per request, static backend (µs)",
    backend_cpu: "6. Static backend CPU per request (µs)",
    errors: "6. Errors in saturation window, static backend",
    backend: "the static backend",
    instead: "compare CPU per request instead",
};

const TLS: Rows = Rows {
    workload: "7.",
    sat: "7. TLS saturation, keep-alive, static backend, 64 conns (req/s)",
    p50: "7. TLS latency p50 at saturation (ms)",
    proxy_cpu: "7. Proxy CPU per TLS request (µs)",
    proxy_busy: "7. Proxy's CPU busy, TLS (%, /proc/stat)",
    harness_busy: "7. Harness CPUs busy, TLS (%, /proc/stat)",
    loadgen_pct: "7. Load generator threads, TLS (% of one CPU)",
    loadgen_cpu: "7. Load generator CPU per TLS request (µs)",
    backend_cpu: "7. Static backend CPU per request, TLS (µs)",
    errors: "7. Errors in TLS saturation window",
    backend: "the static backend",
    instead: "compare CPU per request instead",
};

const HANDSHAKES: Rows = Rows {
    workload: "8.",
    sat: "8. TLS handshake rate: new connection per request, 64 conns (req/s)",
    p50: "8. Handshake + request latency p50 (ms)",
    proxy_cpu: "8. Proxy CPU per handshake + request (µs)",
    proxy_busy: "8. Proxy's CPU busy, handshakes (%, /proc/stat)",
    harness_busy: "8. Harness CPUs busy, handshakes (%, /proc/stat)",
    loadgen_pct: "8. Load generator threads, handshakes (% of one CPU)",
    loadgen_cpu: "8. Load generator CPU per handshake (µs)",
    backend_cpu: "8. Static backend CPU per request, handshakes (µs)",
    errors: "8. Errors in handshake window",
    backend: "the static backend",
    instead: "compare CPU per handshake instead",
};

const HTTPS: Rows = Rows {
    workload: "9.",
    sat: "9. Saturation, HTTPS to the static backend, 64 conns (req/s)",
    p50: "9. Latency p50 at saturation, HTTPS upstream (ms)",
    proxy_cpu: "9. Proxy CPU per request, HTTPS upstream (µs)",
    proxy_busy: "9. Proxy's CPU busy, HTTPS upstream (%, /proc/stat)",
    harness_busy: "9. Harness CPUs busy, HTTPS upstream (%, /proc/stat)",
    loadgen_pct: "9. Load generator threads, HTTPS upstream (% of one CPU)",
    loadgen_cpu: "9. Load generator CPU per request, HTTPS upstream (µs)",
    backend_cpu: "9. Static backend CPU per request, HTTPS upstream (µs)",
    errors: "9. Errors in saturation window, HTTPS upstream",
    backend: "the static backend",
    instead: "compare CPU per request instead",
};

/// Workload 9's reuse rows, over the measured window only.
const HTTPS_ACCEPTS: &str = "9. Backend TLS accepts per 1,000 requests, measured window";
const HTTPS_OPENED: &str = "9. Switchyard upstream connections opened, measured window";
const HTTPS_REUSED: &str =
    "9. Switchyard upstream connections reused, measured window (%, its /metrics)";

/// What answers behind the targets; its CPU time is read differently.
#[derive(Clone, Copy)]
enum Upstream<'b> {
    /// The in-process mock: its threads' CPU, its accept counter.
    Mock,
    /// nginx in a process of its own: its processes' CPU.
    Static(&'b StaticBackend),
}

/// Upstream connection counters at one edge of a measured window, where
/// the target and backend have them.
#[derive(Debug, Clone, Copy)]
struct UpstreamCounts {
    /// Connections the static backend accepted (workload 9).
    accepts: Option<u64>,
    /// Switchyard's own `(opened, reused)`.
    switchyard: Option<(u64, u64)>,
}

/// Counters read at the edges of a measured window.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    proxy: u64,
    loadgen: u64,
    /// The mock's threads, or the static backend's processes.
    backend: u64,
    accepts: u64,
    requests: u64,
    /// Busy and total ticks of the harness's CPUs, then of the proxy's.
    harness_cpus: (u64, u64),
    proxy_cpus: (u64, u64),
}

/// Percentage busy between two `/proc/stat` readings.
fn busy_pct(a: (u64, u64), b: (u64, u64)) -> f64 {
    let total = b.1.saturating_sub(a.1);
    100.0 * b.0.saturating_sub(a.0) as f64 / total.max(1) as f64
}

impl Bench<'_> {
    fn snapshot(&self, target: &Target, upstream: Upstream) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            proxy: target.cpu_ticks(),
            loadgen: procfs::own_thread_ticks("loadgen"),
            backend: match upstream {
                Upstream::Mock => procfs::own_thread_ticks("mock"),
                Upstream::Static(b) => b.cpu_ticks(),
            },
            accepts: self.stats.connections(),
            requests: self.stats.api_requests(),
            harness_cpus: procfs::cpus_busy(&self.plan.harness_cpus),
            proxy_cpus: self
                .plan
                .proxy_cpus
                .as_deref()
                .map_or((0, 0), procfs::cpus_busy),
        }
    }

    /// Workloads 1 and 5: saturation against the mock; backend accepts per
    /// request.
    pub async fn saturation(&mut self) {
        self.timing(SMALL);
        let targets = self.targets;
        self.saturate(targets, Upstream::Mock, &MOCK, &|t| Client::new(t.addr))
            .await;
    }

    /// Workload 6: saturation against the static backend, through
    /// `targets`, which forward to it.
    pub async fn static_saturation(&mut self, targets: &[Target], backend: &StaticBackend) {
        self.saturate(targets, Upstream::Static(backend), &STATIC, &|t| {
            Client::new(t.addr)
        })
        .await;
    }

    /// Workloads 7 (`fresh` false) and 8 (`fresh`): TLS terminated by
    /// `targets`, which forward to the static backend in plain HTTP.
    pub async fn tls_saturation(
        &mut self,
        targets: &[Target],
        backend: &StaticBackend,
        client: Arc<rustls::ClientConfig>,
        fresh: bool,
    ) {
        let rows = if fresh { &HANDSHAKES } else { &TLS };
        let make = move |t: &Target| Client::tls(t.addr, client.clone(), fresh);
        self.saturate(targets, Upstream::Static(backend), rows, &make)
            .await;
    }

    /// Workload 9: `targets` reach the static backend over TLS; `client`
    /// says how to reach each (direct is the backend, so TLS).
    pub async fn https_saturation(
        &mut self,
        targets: &[Target],
        backend: &StaticBackend,
        client: &dyn Fn(&Target) -> Client,
    ) {
        self.saturate(targets, Upstream::Static(backend), &HTTPS, client)
            .await;
    }

    /// Upstream connection counters of `target` now, where there are any:
    /// the static backend's accepts (workload 9) and Switchyard's own
    /// opened and reused connections.
    async fn upstream_counts(&self, target: &Target, upstream: Upstream<'_>) -> UpstreamCounts {
        let accepts = match upstream {
            Upstream::Static(StaticBackend {
                status: Some(status),
                ..
            }) => crate::https::backend_accepts(*status).await,
            _ => None,
        };
        let switchyard = match target.admin {
            Some(admin) => crate::https::switchyard_connections(admin).await,
            None => None,
        };
        UpstreamCounts {
            accepts,
            switchyard,
        }
    }

    /// Closed-loop saturation of each target in turn: req/s, p50, the
    /// proxy's CPU per request, and how busy each side's CPUs were.
    async fn saturate(
        &mut self,
        targets: &[Target],
        upstream: Upstream<'_>,
        rows: &Rows,
        client_for: &dyn Fn(&Target) -> Client,
    ) {
        let w = self.plan.window;
        let secs = w.measure.as_secs_f64();
        for name in rows.all() {
            self.results.declare(name);
        }
        for r in 0..self.plan.rounds {
            for t in order(targets, r) {
                let client = client_for(t);
                let first = self.snapshot(t, upstream);
                let run = tokio::spawn(async move { load::closed_loop(&client, CONNS, w).await });
                sleep(w.warmup).await;
                let s0 = self.snapshot(t, upstream);
                let c0 = self.upstream_counts(t, upstream).await;
                sleep(w.measure.saturating_sub(s0.at.elapsed())).await;
                let s1 = self.snapshot(t, upstream);
                let c1 = self.upstream_counts(t, upstream).await;
                let mut out = run.await.unwrap_or_default();
                let last = self.snapshot(t, upstream);
                let k = t.kind;
                let n = out.ok.max(1) as f64;
                let tps = self.ticks_per_sec;
                let cpu = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / tps;
                let wall = (s1.at - s0.at).as_secs_f64();
                let busy = busy_pct(s0.harness_cpus, s1.harness_cpus);
                let proxy_busy = busy_pct(s0.proxy_cpus, s1.proxy_cpus);
                let pinned = self.plan.proxy_cpus.is_some();
                self.add(rows.sat, 0, Ratios::Both, k, out.ok as f64 / secs);
                if k != Kind::Direct {
                    let per = cpu(s0.proxy, s1.proxy) * 1e6 / n;
                    self.add(rows.proxy_cpu, 1, Ratios::BetweenProxies, k, per);
                    if pinned {
                        self.add(rows.proxy_busy, 0, Ratios::None, k, proxy_busy);
                    }
                }
                self.add(rows.harness_busy, 0, Ratios::None, k, busy);
                let loadgen = cpu(s0.loadgen, s1.loadgen);
                self.add(rows.loadgen_pct, 0, Ratios::None, k, 100.0 * loadgen / wall);
                self.add(rows.loadgen_cpu, 1, Ratios::None, k, loadgen * 1e6 / n);
                let backend = cpu(s0.backend, s1.backend) * 1e6 / n;
                self.add(rows.backend_cpu, 1, Ratios::None, k, backend);
                self.add(rows.errors, 0, Ratios::None, k, out.errors as f64);
                let p50 = out.latencies.percentile_ms(50.0).unwrap_or(f64::NAN);
                self.add(rows.p50, 2, Ratios::Both, k, p50);
                if r == 0 && busy < 90.0 && (!pinned || proxy_busy < 90.0) {
                    self.results.note(format!(
                        "{} {}: in saturation round {} no CPU was saturated (harness {busy:.0}%{}), so its req/s is bounded by latency ({CONNS} connections ÷ {:.2} ms per request), which includes {}'s own response time.",
                        rows.workload, k.label(), r + 1,
                        if k == Kind::Direct || !pinned { String::new() } else { format!(", proxy {proxy_busy:.0}%") },
                        p50, rows.backend,
                    ));
                }
                if r == 0 && busy > 90.0 && k != Kind::Direct {
                    let note = if pinned && proxy_busy > 90.0 {
                        format!(
                            "{} {}: the proxy's CPU ({proxy_busy:.0}%) and the harness's ({busy:.0}%) were both saturated in saturation round {}, so its req/s is bounded by both sides; CPU per request compares the proxies either way.",
                            rows.workload, k.label(), r + 1,
                        )
                    } else {
                        format!(
                            "{} {}: the harness CPUs were {busy:.0}% busy in saturation round {}, so its req/s may be capped by the load generator and {} rather than by the proxy; {}.",
                            rows.workload, k.label(), r + 1, rows.backend, rows.instead,
                        )
                    };
                    self.results.note(note);
                }
                if let (Some(a0), Some(a1)) = (c0.accepts, c1.accepts) {
                    // Less the one connection that read c0, which lands in
                    // the window.
                    let accepts = a1.saturating_sub(a0).saturating_sub(1) as f64;
                    self.add(HTTPS_ACCEPTS, 3, Ratios::None, k, 1000.0 * accepts / n);
                }
                if let (Some((o0, r0)), Some((o1, r1))) = (c0.switchyard, c1.switchyard) {
                    let (opened, reused) = (o1.saturating_sub(o0), r1.saturating_sub(r0));
                    self.add(HTTPS_OPENED, 0, Ratios::None, k, opened as f64);
                    let share = 100.0 * reused as f64 / (opened + reused).max(1) as f64;
                    self.add(HTTPS_REUSED, 3, Ratios::None, k, share);
                }
                if let Upstream::Mock = upstream {
                    let accepts = last.accepts.saturating_sub(first.accepts) as f64;
                    let reqs = last.requests.saturating_sub(first.requests).max(1) as f64;
                    self.add(
                        "5. Backend accepts per 1,000 requests (saturation incl. warm-up)",
                        3,
                        Ratios::None,
                        k,
                        1000.0 * accepts / reqs,
                    );
                    self.add(
                        "5. Backend accepts, saturation run",
                        0,
                        Ratios::None,
                        k,
                        accepts,
                    );
                }
            }
        }
    }
}
