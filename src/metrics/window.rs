//! The last minute of one backend's requests, for the admin listener's
//! `/status`: requests per second, error rate, time to first token (p50,
//! p95) and tokens per second.
//!
//! Why not derive these from the Prometheus series? Those are cumulative
//! since start: a rate over the last minute needs the values of a minute
//! ago, which only a scraper keeps. And they are per (pool, backend,
//! model), so one backend's figures would mean merging every model's
//! histogram at each read. A ring of per-second buckets answers "the last
//! minute" directly, exactly for counts and to within a bucket of the
//! histogram for percentiles.
//!
//! [`RequestWindow`] holds [`SECONDS`] buckets; a request lands in the
//! bucket of the second it ended in, and a bucket is cleared when its
//! second comes round again. Recording takes one short lock (a backend's
//! requests contend only with each other), computes one logarithm and
//! touches one bucket; nothing is allocated after the first request. The
//! ring is allocated on the first request, so a backend that gets none
//! costs a few words.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The window's length in seconds: "the last minute".
pub const SECONDS: usize = 60;

/// Histogram buckets per doubling of the time to first token: bucket
/// bounds grow by 2^(1/3), about 26%, so a percentile read from the
/// histogram is within a quarter of the true value (interpolation within
/// the bucket usually does better).
const PER_DOUBLING: f64 = 3.0;

/// Buckets of the time-to-first-token histogram. The first holds 1 ms
/// and less, the last everything above 2^16 ms (65.5 s, beyond the
/// minute a long prompt on a large model can take).
const TTFT_BUCKETS: usize = 16 * PER_DOUBLING as usize + 2;

/// One second of one backend's requests.
#[derive(Clone, Copy)]
struct Bucket {
    /// The second (since the window's origin) these counts belong to; a
    /// bucket whose second is not the one asked for is stale.
    second: u64,
    requests: u32,
    errors: u32,
    tokens: u64,
    ttft: [u32; TTFT_BUCKETS],
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        second: u64::MAX,
        requests: 0,
        errors: 0,
        tokens: 0,
        ttft: [0; TTFT_BUCKETS],
    };
}

/// What one request (or one attempt of it) contributes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// It failed at or because of the backend: a 5xx passed on, an error
    /// Switchyard answered for it, a timeout, an attempt retried elsewhere.
    pub error: bool,
    /// Streamed responses: from the request sent to the first byte back.
    pub ttft: Option<Duration>,
    /// Completion tokens.
    pub tokens: u64,
}

/// The figures of the last minute.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// The seconds the figures cover: [`SECONDS`], or less while the
    /// window is younger than that.
    pub seconds: u64,
    pub requests: u64,
    pub errors: u64,
    pub tokens: u64,
    /// Time to first token, in seconds; `None` without a streamed request.
    pub ttft_p50: Option<f64>,
    pub ttft_p95: Option<f64>,
}

impl Summary {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1) as f64
    }

    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1) as f64
    }

    /// Errors over requests; `None` without a request.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// The last minute of one backend. Shared by `Arc` between routing
/// snapshots, like the backend's health, so a reload keeps it.
pub struct RequestWindow {
    /// Second 0. `std`'s clock, as [`crate::proxy`]'s timings are: this is
    /// read on every request, and nothing here is a timer a test pauses.
    origin: Instant,
    ring: Mutex<Option<Box<[Bucket; SECONDS]>>>,
}

impl Default for RequestWindow {
    fn default() -> Self {
        RequestWindow::new(Instant::now())
    }
}

impl RequestWindow {
    /// A window whose second 0 starts at `origin`.
    pub fn new(origin: Instant) -> Self {
        RequestWindow {
            origin,
            ring: Mutex::new(None),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs()
    }

    /// Records a request that ended at `at`.
    pub fn record(&self, at: Instant, sample: Sample) {
        let second = self.second(at);
        let slot = ttft_bucket(sample.ttft);
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let ring = ring.get_or_insert_with(|| Box::new([Bucket::EMPTY; SECONDS]));
        let bucket = &mut ring[(second % SECONDS as u64) as usize];
        if bucket.second != second {
            *bucket = Bucket {
                second,
                ..Bucket::EMPTY
            };
        }
        bucket.requests = bucket.requests.saturating_add(1);
        bucket.errors = bucket.errors.saturating_add(u32::from(sample.error));
        bucket.tokens = bucket.tokens.saturating_add(sample.tokens);
        if let Some(i) = slot {
            bucket.ttft[i] = bucket.ttft[i].saturating_add(1);
        }
    }

    /// The figures of the [`SECONDS`] seconds up to `now`, the current
    /// one included.
    pub fn summary(&self, now: Instant) -> Summary {
        let current = self.second(now);
        let oldest = current.saturating_sub(SECONDS as u64 - 1);
        let mut out = Summary {
            seconds: (current + 1).min(SECONDS as u64),
            ..Summary::default()
        };
        let mut ttft = [0u64; TTFT_BUCKETS];
        if let Some(ring) = self
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            for b in ring
                .iter()
                .filter(|b| (oldest..=current).contains(&b.second))
            {
                out.requests += u64::from(b.requests);
                out.errors += u64::from(b.errors);
                out.tokens += b.tokens;
                for (sum, n) in ttft.iter_mut().zip(b.ttft) {
                    *sum += u64::from(n);
                }
            }
        }
        out.ttft_p50 = quantile(&ttft, 0.5);
        out.ttft_p95 = quantile(&ttft, 0.95);
        out
    }
}

/// The histogram bucket of a time to first token: bucket `i` holds times
/// up to [`upper_bound`]`(i)`.
fn ttft_bucket(ttft: Option<Duration>) -> Option<usize> {
    let ms = ttft?.as_secs_f64() * 1000.0;
    if ms <= 1.0 {
        return Some(0);
    }
    let i = (ms.log2() * PER_DOUBLING).ceil();
    Some((i as usize).min(TTFT_BUCKETS - 1))
}

/// The upper bound of bucket `i`, in seconds; the last is open.
fn upper_bound(i: usize) -> f64 {
    2f64.powf(i as f64 / PER_DOUBLING) / 1000.0
}

/// The `q` quantile of `counts`, interpolated linearly within its bucket
/// (as Prometheus's `histogram_quantile` does); the open last bucket
/// answers its lower bound.
fn quantile(counts: &[u64; TTFT_BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n == 0 || ((below + n) as f64) < rank {
            below += n;
            continue;
        }
        let lower = if i == 0 { 0.0 } else { upper_bound(i - 1) };
        if i == TTFT_BUCKETS - 1 {
            return Some(lower);
        }
        let within = (rank - below as f64) / n as f64;
        return Some(lower + (upper_bound(i) - lower) * within.clamp(0.0, 1.0));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn streamed(ttft: Duration, tokens: u64) -> Sample {
        Sample {
            error: false,
            ttft: Some(ttft),
            tokens,
        }
    }

    #[test]
    fn counts_of_the_last_minute() {
        let t0 = Instant::now();
        let w = RequestWindow::new(t0);
        assert_eq!(
            w.summary(t0),
            Summary {
                seconds: 1,
                ..Summary::default()
            }
        );
        for s in 0..10 {
            let at = t0 + Duration::from_secs(s);
            w.record(at, streamed(ms(100), 20));
            w.record(
                at,
                Sample {
                    error: true,
                    ..Sample::default()
                },
            );
        }
        let at9 = t0 + Duration::from_secs(9);
        let s = w.summary(at9);
        assert_eq!(
            (s.seconds, s.requests, s.errors, s.tokens),
            (10, 20, 10, 200)
        );
        assert_eq!(s.requests_per_second(), 2.0);
        assert_eq!(s.tokens_per_second(), 20.0);
        assert_eq!(s.error_rate(), Some(0.5));

        // A minute later the first second has left the window.
        let s = w.summary(t0 + Duration::from_secs(60));
        assert_eq!((s.seconds, s.requests, s.tokens), (60, 18, 180));
        // And two minutes later everything has, though no request came
        // to clear the buckets.
        let s = w.summary(t0 + Duration::from_secs(130));
        assert_eq!((s.requests, s.ttft_p50, s.error_rate()), (0, None, None));

        // A bucket whose second comes round again starts afresh.
        let later = t0 + Duration::from_secs(120);
        w.record(later, streamed(ms(100), 1));
        let s = w.summary(later);
        assert_eq!((s.requests, s.tokens), (1, 1));
    }

    #[test]
    fn percentiles_within_a_bucket() {
        let t0 = Instant::now();
        let w = RequestWindow::new(t0);
        // 90 fast, 10 slow: p50 among the fast, p95 among the slow.
        for _ in 0..90 {
            w.record(t0, streamed(ms(40), 1));
        }
        for _ in 0..10 {
            w.record(t0, streamed(ms(2000), 1));
        }
        let s = w.summary(t0);
        let (p50, p95) = (s.ttft_p50.unwrap(), s.ttft_p95.unwrap());
        assert!((0.032..=0.041).contains(&p50), "p50 {p50}");
        assert!((1.6..=2.02).contains(&p95), "p95 {p95}");
        // Non-streamed requests count, but have no time to first token.
        w.record(t0, Sample::default());
        assert_eq!(w.summary(t0).requests, 101);
    }

    #[test]
    fn extreme_times_stay_in_the_end_buckets() {
        assert_eq!(ttft_bucket(Some(Duration::ZERO)), Some(0));
        assert_eq!(ttft_bucket(Some(ms(1))), Some(0));
        assert_eq!(ttft_bucket(Some(ms(2))), Some(3));
        assert_eq!(
            ttft_bucket(Some(Duration::from_secs(u64::MAX))),
            Some(TTFT_BUCKETS - 1)
        );
        let t0 = Instant::now();
        let w = RequestWindow::new(t0);
        w.record(t0, streamed(Duration::from_secs(3600), 1));
        let p = w.summary(t0).ttft_p95.unwrap();
        assert!(
            (65.0..66.0).contains(&p),
            "the open bucket's lower bound: {p}"
        );
        // An instant before the origin counts in second 0.
        let w = RequestWindow::new(t0 + Duration::from_secs(5));
        w.record(t0, Sample::default());
        assert_eq!(w.summary(t0).requests, 1);
    }
}
