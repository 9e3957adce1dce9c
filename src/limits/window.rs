//! Where a bucket stands after a check: what OpenAI's `x-ratelimit-*`
//! headers say, and which of several buckets a client is told about.

use std::time::Duration;

/// One bucket after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The configured `limit`.
    pub limit: u64,
    /// What the bucket still admits now.
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

impl Window {
    /// Of two buckets, the one closer to refusing: the one a client should
    /// pace itself by.
    pub fn tighter(a: Option<Window>, b: Window) -> Window {
        match a {
            Some(a) if a.remaining <= b.remaining => a,
            _ => b,
        }
    }
}

/// A duration as OpenAI writes `x-ratelimit-reset-*`: `20ms`, `1.5s`,
/// `6m0s`.
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", d.as_secs_f64());
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}s")
    } else {
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            format!("{h}h{m}m{s}s")
        } else {
            format!("{m}m{s}s")
        }
    }
}

/// Whole seconds for `Retry-After`, never 0 (a client would retry at
/// once and be refused again).
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_as_openai_writes_it() {
        assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
        assert_eq!(reset_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(reset_text(Duration::from_secs(1)), "1s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_secs(3661)), "1h1m1s");
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(200)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
