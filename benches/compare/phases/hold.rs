//! Workload 4: many long streams held open through a proxy; its memory per
//! stream and how small requests fare meanwhile.
//!
//! The streams come from the same mock, switched to a long, slow generation
//! (one token a second for 1,000 tokens) only while they are being opened,
//! so the small requests sent while they are held are the usual instant ones.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{Bench, SMALL};
use crate::load::{self, Client, Window};
use crate::procfs;
use crate::report::Ratios;
use crate::targets::Kind;

/// Held streams being opened at once: enough to open thousands in seconds,
/// few enough not to overflow a proxy's accept queue.
const HOLD_PARALLEL: usize = 256;

/// How long opening the held streams may take before the run goes on with
/// what it has.
const HOLD_OPEN_DEADLINE: Duration = Duration::from_secs(30);

/// Rate and connections of the small requests sent while streams are held:
/// a light, steady trickle whose p99 shows whether the held streams slow
/// the proxy down.
const HOLD_PROBE_RATE: f64 = 500.0;
const HOLD_PROBE_CONNS: usize = 16;

/// Mock timing of a held stream: (time to first token, token gap, tokens).
const LONG: (Duration, Duration, usize) = (Duration::ZERO, Duration::from_secs(1), 1000);

impl Bench<'_> {
    /// Workload 4: many long streams held; proxy memory per stream and the
    /// p99 of small requests meanwhile.
    pub async fn hold(&mut self) {
        let n = self.plan.streams;
        if self.plan.streams < self.plan.streams_wanted {
            self.results.note(format!(
                "4. Held streams capped at {n} of {} asked: each stream costs the harness two file descriptors (client and in-process mock) and the proxy two (client and upstream), within an open-file limit of {}.",
                self.plan.streams_wanted,
                procfs::open_files_limit().unwrap_or(0)
            ));
        }
        let probe = Window {
            warmup: Duration::from_millis(500),
            measure: self.plan.hold_probe,
        };
        for r in 0..self.plan.rounds {
            for t in self.order(r) {
                let client = Client::new(t.addr);
                self.timing(SMALL);
                let _ = load::closed_loop(
                    &client,
                    8,
                    Window {
                        warmup: Duration::ZERO,
                        measure: Duration::from_millis(300),
                    },
                )
                .await;
                let fds0 = t.fds();
                self.timing(LONG);
                let held = load::hold_streams(&client, n, HOLD_PARALLEL, HOLD_OPEN_DEADLINE).await;
                self.timing(SMALL);
                sleep(Duration::from_secs(1)).await;
                let rss1 = t.rss_kib();
                let mut out =
                    load::fixed_rate(&client, HOLD_PROBE_CONNS, HOLD_PROBE_RATE, probe).await;
                let rss = rss1.max(t.rss_kib());
                let opened = held.opened;
                let failed = held.failed;
                held.release().await;
                let k = t.kind;
                self.add("4. Streams held open", 0, Ratios::None, k, opened as f64);
                if k != Kind::Direct && opened > 0 {
                    // Against the proxy's memory at start rather than just
                    // before the streams: an allocator keeps what earlier
                    // workloads and rounds freed, and streams held on that
                    // would look free. This is the peak cost, an upper bound.
                    let per = rss.saturating_sub(t.rss_at_start) as f64 / opened as f64;
                    self.add(
                        "4. Proxy RSS per held stream (KiB)",
                        2,
                        Ratios::BetweenProxies,
                        k,
                        per,
                    );
                    self.add(
                        "4. Proxy RSS with streams held (MiB)",
                        1,
                        Ratios::BetweenProxies,
                        k,
                        rss as f64 / 1024.0,
                    );
                }
                let p99 = out.latencies.percentile_ms(99.0).unwrap_or(f64::NAN);
                self.add(
                    "4. Small-request p99 while held (ms)",
                    3,
                    Ratios::Both,
                    k,
                    p99,
                );
                self.add(
                    "4. Errors: failed opens + small requests",
                    0,
                    Ratios::None,
                    k,
                    (failed + out.errors) as f64,
                );
                if opened < n {
                    self.results.note(format!(
                        "4. {}: {opened} of {n} streams opened in round {} ({failed} failed).",
                        k.label(),
                        r + 1
                    ));
                }
                let left = self.drain().await;
                if k != Kind::Direct {
                    // A proxy must give back the descriptors of streams whose
                    // clients went away; what it keeps counts against the
                    // next round's streams.
                    let kept = t.fds() as f64 - fds0 as f64;
                    self.add(
                        "4. Proxy fds still open after release, minus before",
                        0,
                        Ratios::None,
                        k,
                        kept,
                    );
                }
                if left > 0 {
                    self.results.note(format!(
                        "4. {}: {left} streams still open at the backend 20 s after the clients closed them (round {}).",
                        k.label(), r + 1
                    ));
                }
            }
        }
    }

    /// Waits until the mock has no request in flight, so the next target
    /// starts from a quiet backend; gives up after a bound.
    /// Returns how many requests are still in flight at the backend.
    async fn drain(&self) -> u64 {
        let until = Instant::now() + Duration::from_secs(20);
        while self.stats.in_flight() > 0 && Instant::now() < until {
            sleep(Duration::from_millis(50)).await;
        }
        self.stats.in_flight()
    }
}
