//! Workload 10: what an API key and a request limit cost Switchyard, locally
//! and with the counts in Redis.
//!
//! Three Switchyard processes, configured as for workload 6 in front of a
//! static backend of their own: without `auth`, with one key and a local
//! request limit high enough never to refuse, and with the same limit kept
//! in a `redis-server` the harness starts. Every request carries the key,
//! the first proxy's too (it passes it on), so the three see the same
//! bytes and differ only in what they do with them. Per round: the proxy's
//! CPU per request at saturation, then latency at half of the keyless
//! proxy's saturation, with Redis's own `PING` round trip timed beside the
//! Redis variant's load.

use tokio::time::{sleep, Instant};

use super::{Bench, CONNS};
use crate::backend::StaticBackend;
use crate::load::{self, Client};
use crate::redis::RedisServer;
use crate::report::Ratios;
use crate::targets::{Kind, Target};

/// The key every request of workload 10 carries.
pub const KEY: &str = "sk-bench-0123456789abcdef0123";

/// What one of workload 10's proxies checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    NoKey,
    LocalLimit,
    RedisLimit,
}

impl Variant {
    /// The `auth` and `limits` appended to Switchyard's configuration. The
    /// limit is far above what the machine can send, so it never refuses
    /// and every request pays for a full check. In Redis, the store's
    /// `timeout` is its maximum, so a slow answer is waited for (and
    /// measured) rather than let through unchecked.
    pub fn config(self, redis: Option<&RedisServer>) -> String {
        let digest = switchyard::auth::key::digest(KEY.as_bytes());
        let sha: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let keyed = format!(
            "auth:\n  keys:\n    - {{ name: bench, sha256: {sha} }}\n\
             limits:\n  per_key: {{ requests: {{ per: 1s, limit: 10000000, burst: 10000000 }} }}\n"
        );
        match (self, redis) {
            (Variant::NoKey, _) => String::new(),
            (Variant::LocalLimit, _) => keyed,
            (Variant::RedisLimit, Some(r)) => format!(
                "{keyed}  store: {{ redis: \"redis://{}/0\", timeout: 1s }}\n",
                r.addr
            ),
            (Variant::RedisLimit, None) => String::new(),
        }
    }
}

/// Workload 10's processes. Dropping it stops them.
pub struct EdgeRun {
    /// Kept for the run; the proxies forward to it.
    pub _backend: StaticBackend,
    /// `None` when `redis-server` could not start (noted).
    pub redis: Option<RedisServer>,
    pub targets: Vec<(Variant, Target)>,
}

const SAT: [&str; 3] = [
    "10. Saturation, no key (req/s)",
    "10. Saturation, key + local limit (req/s)",
    "10. Saturation, key + Redis limit (req/s)",
];
const CPU: [&str; 3] = [
    "10. Proxy CPU per request, no key (µs)",
    "10. Proxy CPU per request, key + local limit (µs)",
    "10. Proxy CPU per request, key + Redis limit (µs)",
];
const ADDED_CPU: [&str; 3] = [
    "",
    "10. Added CPU per request, key + local limit (% of no key)",
    "10. Added CPU per request, key + Redis limit (% of no key)",
];
const P50: [&str; 3] = [
    "10. Latency p50 at half load, no key (ms)",
    "10. Latency p50 at half load, key + local limit (ms)",
    "10. Latency p50 at half load, key + Redis limit (ms)",
];
const P99: [&str; 3] = [
    "10. Latency p99 at half load, no key (ms)",
    "10. Latency p99 at half load, key + local limit (ms)",
    "10. Latency p99 at half load, key + Redis limit (ms)",
];
const ADDED_P50: [&str; 3] = [
    "",
    "10. Added p50 vs no key, key + local limit (ms)",
    "10. Added p50 vs no key, key + Redis limit (ms)",
];
const ADDED_P99: [&str; 3] = [
    "",
    "10. Added p99 vs no key, key + local limit (ms)",
    "10. Added p99 vs no key, key + Redis limit (ms)",
];
const ERRORS: &str = "10. Errors in workload 10's windows";
const PING_P50: &str = "10. Redis PING round trip p50, beside the Redis variant's load (ms)";
const PING_P99: &str = "10. Redis PING round trip p99, beside the Redis variant's load (ms)";

impl Bench<'_> {
    /// Workload 10: the cost of a key and a request limit (see the module).
    pub async fn edge_cost(&mut self, run: &EdgeRun) {
        let w = self.plan.window;
        let secs = w.measure.as_secs_f64();
        let tps = self.ticks_per_sec;
        let rows = [
            &SAT[..],
            &CPU,
            &ADDED_CPU,
            &P50,
            &P99,
            &ADDED_P50,
            &ADDED_P99,
        ];
        for name in rows.iter().flat_map(|r| r.iter()).filter(|n| !n.is_empty()) {
            self.results.declare(name);
        }
        for name in [PING_P50, PING_P99, ERRORS] {
            self.results.declare(name);
        }
        let n = run.targets.len().max(1);
        let rotated = |r: usize| (0..run.targets.len()).map(move |i| &run.targets[(i + r) % n]);
        let mut errors = 0u64;
        for r in 0..self.plan.rounds {
            let (mut cpu, mut sat) = ([f64::NAN; 3], [f64::NAN; 3]);
            for (v, t) in rotated(r) {
                let client = Client::new(t.addr).with_key(KEY);
                let load = tokio::spawn(async move { load::closed_loop(&client, CONNS, w).await });
                sleep(w.warmup).await;
                let c0 = t.cpu_ticks();
                sleep(w.measure).await;
                let c1 = t.cpu_ticks();
                let out = load.await.unwrap_or_default();
                let i = *v as usize;
                sat[i] = out.ok as f64 / secs;
                cpu[i] = c1.saturating_sub(c0) as f64 / tps * 1e6 / out.ok.max(1) as f64;
                errors += out.errors;
            }
            let rate = (sat[0] / 2.0).max(100.0);
            if r == 0 {
                self.results.note(format!(
                    "10. {}; the Redis variant's store is a `redis-server` on 127.0.0.1 (`--save '' --appendonly no`), pinned with the harness; half load is half the keyless proxy's saturation in each round ({rate:.0} req/s in round 1), over {CONNS} connections.",
                    "Three Switchyard processes in front of one static backend: no `auth`; one key with `limits.per_key.requests` of 10,000,000/s (never refusing); the same with `limits.store.redis` (`timeout: 1s`)",
                ));
            }
            let (mut p50, mut p99) = ([f64::NAN; 3], [f64::NAN; 3]);
            for (v, t) in rotated(r) {
                let client = Client::new(t.addr).with_key(KEY);
                let start = Instant::now();
                let pings = match (&run.redis, v) {
                    (Some(redis), Variant::RedisLimit) => {
                        let (from, until) = (start + w.warmup, start + w.warmup + w.measure);
                        Some(redis.ping_rtt(from, until))
                    }
                    _ => None,
                };
                let load = load::fixed_rate(&client, CONNS, rate, w);
                let (mut out, pings) = match pings {
                    Some(pings) => {
                        let (out, pings) = tokio::join!(load, pings);
                        (out, Some(pings))
                    }
                    None => (load.await, None),
                };
                let i = *v as usize;
                p50[i] = out.latencies.percentile_ms(50.0).unwrap_or(f64::NAN);
                p99[i] = out.latencies.percentile_ms(99.0).unwrap_or(f64::NAN);
                errors += out.errors;
                if let Some(mut pings) = pings {
                    let k = Kind::Switchyard;
                    let mut ms = |p| pings.percentile_ms(p).unwrap_or(f64::NAN);
                    let (a, b) = (ms(50.0), ms(99.0));
                    self.add(PING_P50, 3, Ratios::None, k, a);
                    self.add(PING_P99, 3, Ratios::None, k, b);
                }
            }
            let k = Kind::Switchyard;
            for i in 0..3 {
                self.add(SAT[i], 0, Ratios::None, k, sat[i]);
                self.add(CPU[i], 1, Ratios::None, k, cpu[i]);
                self.add(P50[i], 3, Ratios::None, k, p50[i]);
                self.add(P99[i], 3, Ratios::None, k, p99[i]);
                if i > 0 {
                    let added = 100.0 * (cpu[i] - cpu[0]) / cpu[0];
                    self.add(ADDED_CPU[i], 1, Ratios::None, k, added);
                    self.add(ADDED_P50[i], 3, Ratios::None, k, p50[i] - p50[0]);
                    self.add(ADDED_P99[i], 3, Ratios::None, k, p99[i] - p99[0]);
                }
            }
        }
        self.add(ERRORS, 0, Ratios::None, Kind::Switchyard, errors as f64);
    }
}
