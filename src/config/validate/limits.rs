//! `limits:`, `auth.keys[i].limits` and `pools.NAME.limits`: rates,
//! concurrency and the store.

use super::Errors;
use crate::config::raw::{RawLimitSet, RawLimits, RawRequestRate, RawStore, RawTokenRate};
use crate::limits::{LimitSet, LimitsSpec, OnStoreError, RequestRate, StoreSpec, TokenRate};
use std::ops::RangeInclusive;
use std::time::Duration;

/// The window of a rate. Under a millisecond is no window Redis's clock
/// keeps; a day is the longest budget anyone counts in a proxy (longer is
/// billing, not rate limiting).
pub const PER: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(86_400);

/// Requests per window: at least one. Ten million a window is more than
/// any proxy serves a second, and keeps the time between two requests'
/// room (`per / limit`) above 100 ns at the shortest `per`.
pub const REQUESTS: RangeInclusive<usize> = 1..=10_000_000;

/// Requests at once from a full bucket: at least one, else nothing passes.
pub const BURST: RangeInclusive<usize> = 1..=10_000_000;

/// Tokens per window: at least one; a trillion is far beyond a day of any
/// fleet.
pub const TOKENS: RangeInclusive<usize> = 1..=1_000_000_000_000;

/// Requests in flight at once: at least one; a million is more than a
/// process can hold open.
pub const CONCURRENT: RangeInclusive<usize> = 1..=1_000_000;

/// The store's answer time before `on_store_error` decides. Redis answers
/// on a local network in well under a millisecond; a check waits on it on
/// every request, so a few milliseconds bound what an ill Redis adds.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(5);

/// One millisecond is a round trip on a busy network; a second on every
/// request is no longer a proxy.
pub const STORE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(1);

pub(super) fn limits(errors: &mut Errors, raw: Option<RawLimits>) -> LimitsSpec {
    errors.mistyped("limits", || {
        "a mapping with per_address, per_key and store".into()
    });
    let raw = raw.unwrap_or_default();
    LimitsSpec {
        per_address: set(errors, "limits.per_address", raw.per_address),
        per_key: set(errors, "limits.per_key", raw.per_key),
        store: raw.store.and_then(|s| store(errors, s)),
    }
}

/// One scope's limits at `path`.
pub(super) fn set(errors: &mut Errors, path: &str, raw: Option<RawLimitSet>) -> LimitSet {
    errors.mistyped(path, || {
        "a mapping with requests, tokens and concurrent".into()
    });
    let raw = raw.unwrap_or_default();
    let concurrent_path = format!("{path}.concurrent");
    let concurrent = (raw.concurrent.is_some() || errors.is_mistyped(&concurrent_path))
        .then(|| errors.count(&concurrent_path, raw.concurrent, 1, &CONCURRENT) as u32);
    LimitSet {
        requests: raw
            .requests
            .map(|r| requests(errors, &format!("{path}.requests"), r)),
        tokens: raw
            .tokens
            .map(|t| tokens(errors, &format!("{path}.tokens"), t)),
        concurrent,
    }
}

/// A count that has no default, within `range`.
fn required(
    errors: &mut Errors,
    path: &str,
    raw: Option<usize>,
    range: &RangeInclusive<usize>,
    example: &str,
) -> usize {
    if raw.is_none() && !errors.is_mistyped(path) {
        errors.push(path, format!("is required, such as {example}"));
        return *range.start();
    }
    errors.count(path, raw, *range.start(), range)
}

fn per(errors: &mut Errors, path: &str, raw: Option<&String>) -> Duration {
    let path = format!("{path}.per");
    if raw.is_none() && !errors.is_mistyped(&path) {
        errors.push(&path, "is required, such as 1m");
    }
    errors.duration(&path, raw, Duration::from_secs(60), &PER)
}

fn requests(errors: &mut Errors, path: &str, raw: RawRequestRate) -> RequestRate {
    let per = per(errors, path, raw.per.as_ref());
    let limit = required(
        errors,
        &format!("{path}.limit"),
        raw.limit,
        &REQUESTS,
        "600",
    );
    // A full window at once unless told otherwise, as "600 a minute" reads.
    let burst_path = format!("{path}.burst");
    let burst = match raw.burst {
        None if !errors.is_mistyped(&burst_path) => limit,
        burst => errors.count(&burst_path, burst, limit, &BURST),
    };
    RequestRate {
        per,
        limit: limit as u32,
        burst: burst as u32,
    }
}

fn tokens(errors: &mut Errors, path: &str, raw: RawTokenRate) -> TokenRate {
    let per = per(errors, path, raw.per.as_ref());
    let limit = required(
        errors,
        &format!("{path}.limit"),
        raw.limit,
        &TOKENS,
        "200000",
    );
    TokenRate {
        per,
        limit: limit as u64,
    }
}

fn store(errors: &mut Errors, raw: RawStore) -> Option<StoreSpec> {
    const PATH: &str = "limits.store";
    let timeout = match raw.timeout.as_ref() {
        None if !errors.is_mistyped("limits.store.timeout") => DEFAULT_STORE_TIMEOUT,
        t => errors.duration(
            "limits.store.timeout",
            t,
            DEFAULT_STORE_TIMEOUT,
            &STORE_TIMEOUT,
        ),
    };
    let on_store_error = match raw.on_store_error.as_deref() {
        None | Some("allow") => OnStoreError::Allow,
        Some("deny") => OnStoreError::Deny,
        Some(other) => {
            errors.push(
                "limits.store.on_store_error",
                format!("{other:?} is not allow or deny"),
            );
            OnStoreError::Allow
        }
    };
    let Some(url) = raw.redis else {
        if !errors.is_mistyped("limits.store.redis") {
            errors.push(
                format!("{PATH}.redis"),
                "is required, such as \"redis://127.0.0.1:6379/0\"",
            );
        }
        return None;
    };
    if let Err(e) = redis::Client::open(url.as_str()) {
        errors.push(
            format!("{PATH}.redis"),
            format!("{url:?} is not a Redis URL (redis://host:port/db): {e}"),
        );
        return None;
    }
    Some(StoreSpec {
        redis: url,
        timeout,
        on_store_error,
    })
}
