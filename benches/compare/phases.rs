//! The workloads, each run for every target in interleaved rounds, and
//! what is read around them.
//!
//! Rounds interleave targets (round 1: direct, Switchyard, nginx, HAProxy;
//! round 2 starts one further along, and so on) so that drift on the machine
//! over the run (another process waking up, memory filling) spreads over
//! every target instead of landing on one. Each figure in the report is the
//! median over rounds. "Added" latencies are taken per round against the
//! direct run of the same round, then their median is reported.

use std::sync::Arc;
use std::time::Duration;

use switchyard::mock::{MockServer, MockStats};

use crate::load::{self, Client, Window};
use crate::report::{Ratios, Results};
use crate::targets::{Kind, Target};

mod edge_cost;
mod hold;
mod saturation;

pub use edge_cost::{EdgeRun, Variant, KEY as EDGE_KEY};

use saturation::SAT;

/// Closed-loop connections for saturation and the fixed-rate workload.
pub const CONNS: usize = 64;

/// Concurrent streams of the SSE workload.
const SSE_CONNS: usize = 64;

/// Mock timings per workload: (time to first token, token gap, tokens).
const SMALL: (Duration, Duration, usize) = (Duration::ZERO, Duration::ZERO, 1);
const SSE: (Duration, Duration, usize) = (Duration::from_millis(50), Duration::from_millis(20), 20);

/// How the run is sized.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rounds: usize,
    pub window: Window,
    /// Held streams asked for, and what fits in the open-file limit.
    pub streams_wanted: u64,
    pub streams: u64,
    pub hold_probe: Duration,
    /// Fixed rate forced from the command line, instead of half of
    /// Switchyard's saturation.
    pub rate: Option<f64>,
    /// CPUs the harness (load generator and mock) runs on.
    pub harness_cpus: Vec<usize>,
    /// CPUs the proxy is pinned to; `None` when not pinned.
    pub proxy_cpus: Option<Vec<usize>>,
    /// Workers of each proxy.
    pub workers: usize,
}

/// Everything the workloads share.
pub struct Bench<'a> {
    pub plan: Plan,
    pub mock: &'a MockServer,
    pub stats: Arc<MockStats>,
    pub targets: &'a [Target],
    pub ticks_per_sec: f64,
    pub results: Results,
}

impl<'a> Bench<'a> {
    fn timing(&self, (ttft, gap, tokens): (Duration, Duration, usize)) {
        self.mock.set_timing(ttft, gap, tokens);
    }

    /// Targets in the order of round `r`.
    fn order(&self, r: usize) -> Vec<&'a Target> {
        order(self.targets, r)
    }

    fn add(&mut self, name: &str, decimals: usize, ratios: Ratios, kind: Kind, v: f64) {
        self.results.add(name, decimals, ratios, kind, v);
    }

    /// Workload 2: open loop at half of Switchyard's saturation; latency
    /// percentiles and what each adds to direct.
    pub async fn fixed_rate(&mut self) {
        self.timing(SMALL);
        let sat = self
            .results
            .median(SAT, Kind::Switchyard)
            .or_else(|| self.results.median(SAT, Kind::Direct));
        let Some(rate) = self.plan.rate.or(sat.map(|s| (s / 2.0).max(100.0))) else {
            self.results
                .note("2. skipped: no saturation figure to take half of (pass --rate)");
            return;
        };
        self.results.note(format!(
            "2. Fixed rate: {rate:.0} req/s over {CONNS} connections."
        ));
        let w = self.plan.window;
        let names = [
            "2. Fixed-rate latency p50 (ms)",
            "2. Fixed-rate latency p99 (ms)",
            "2. Fixed-rate latency p99.9 (ms)",
        ];
        let added = [
            "2. Added latency p50 vs direct (ms)",
            "2. Added latency p99 vs direct (ms)",
            "2. Added latency p99.9 vs direct (ms)",
        ];
        for r in 0..self.plan.rounds {
            let mut round: Vec<(Kind, [f64; 3])> = Vec::new();
            for t in self.order(r) {
                let mut out = load::fixed_rate(&Client::new(t.addr), CONNS, rate, w).await;
                let p =
                    [50.0, 99.0, 99.9].map(|p| out.latencies.percentile_ms(p).unwrap_or(f64::NAN));
                for (name, v) in names.iter().zip(p) {
                    self.add(name, 3, Ratios::Both, t.kind, v);
                }
                self.add(
                    "2. Achieved rate (req/s)",
                    0,
                    Ratios::None,
                    t.kind,
                    out.ok as f64 / w.measure.as_secs_f64(),
                );
                self.add(
                    "2. Errors at fixed rate",
                    0,
                    Ratios::None,
                    t.kind,
                    out.errors as f64,
                );
                round.push((t.kind, p));
            }
            self.add_vs_direct(&round, &added);
        }
    }

    /// Workload 3: SSE streams; time to first token and chunk integrity.
    pub async fn streaming(&mut self) {
        self.timing(SSE);
        let w = self.plan.window;
        let added = [
            "3. Added TTFT p50 vs direct (ms)",
            "3. Added TTFT p99 vs direct (ms)",
        ];
        // 20 token events, the finish event, `[DONE]`.
        let expected_default = (SSE.2 + 2) as u32;
        for r in 0..self.plan.rounds {
            let mut round: Vec<(Kind, [f64; 2])> = Vec::new();
            let mut expected = expected_default;
            for t in self.order(r) {
                let mut s = load::stream_loop(&Client::new(t.addr), SSE_CONNS, w).await;
                let p = [50.0, 99.0].map(|p| s.ttft.percentile_ms(p).unwrap_or(f64::NAN));
                if t.kind == Kind::Direct {
                    expected = mode(&s.events).unwrap_or(expected_default);
                }
                let k = t.kind;
                self.add(
                    "3. SSE time to first token p50 (ms)",
                    2,
                    Ratios::Both,
                    k,
                    p[0],
                );
                self.add(
                    "3. SSE time to first token p99 (ms)",
                    2,
                    Ratios::Both,
                    k,
                    p[1],
                );
                self.add(
                    "3. SSE streams completed",
                    0,
                    Ratios::None,
                    k,
                    s.ttft.len() as f64,
                );
                self.add("3. SSE errors", 0, Ratios::None, k, s.errors as f64);
                self.add(
                    "3. SSE events per stream (median)",
                    0,
                    Ratios::None,
                    k,
                    median_u32(&s.events),
                );
                self.add(
                    "3. SSE body chunks per stream (median)",
                    0,
                    Ratios::None,
                    k,
                    median_u32(&s.chunks),
                );
                let wrong = s.events.iter().filter(|&&e| e != expected).count();
                self.add(
                    "3. Streams whose event count ≠ direct's",
                    0,
                    Ratios::None,
                    k,
                    wrong as f64,
                );
                round.push((k, p));
            }
            self.add_vs_direct(&round, &added);
        }
        self.timing(SMALL);
    }

    /// Records each proxy's figures minus direct's from the same round.
    fn add_vs_direct<const N: usize>(&mut self, round: &[(Kind, [f64; N])], names: &[&str; N]) {
        let Some((_, direct)) = round.iter().find(|(k, _)| *k == Kind::Direct).copied() else {
            return;
        };
        for (k, v) in round.iter().filter(|(k, _)| *k != Kind::Direct) {
            for i in 0..N {
                // No ratios: a difference near zero makes any ratio noise.
                self.add(names[i], 3, Ratios::None, *k, v[i] - direct[i]);
            }
        }
    }
}

/// `targets` in the order of round `r`: each round starts one further along.
fn order(targets: &[Target], r: usize) -> Vec<&Target> {
    let n = targets.len().max(1);
    (0..targets.len()).map(|i| &targets[(i + r) % n]).collect()
}

fn median_u32(v: &[u32]) -> f64 {
    let f: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
    crate::samples::median(&f).unwrap_or(f64::NAN)
}

/// The most common value.
fn mode(v: &[u32]) -> Option<u32> {
    let mut counts = std::collections::BTreeMap::new();
    for &x in v {
        *counts.entry(x).or_insert(0usize) += 1;
    }
    counts.into_iter().max_by_key(|&(_, c)| c).map(|(x, _)| x)
}
