//! The per-request series: requests, duration, time to first token, time
//! per output token and tokens, by pool, backend and model.
//!
//! A request records into up to five metric families when it ends.
//! Resolving each through `with_label_values` would hash every label value
//! and take each family's lock five times per request, so the handles of
//! one (pool, backend, model) are kept together in a [`Series`] and found
//! with one map lookup, without allocating. Handles a request may not use
//! (a time to first token for a response that did not stream, token
//! counts) are made on first use, so a scrape shows no empty series.
//!
//! The cache only grows by label values that are themselves bounded: pools
//! and backends come from the configuration, models from the fleet's lists
//! ([`super::labels::is_fleet_model`]), everything else is `other`. Series
//! of backends a reload removed stay, as Prometheus clients keep them,
//! until the process restarts.

use super::labels::{status_class, Outcome, TokenSource, OTHER_MODEL};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

/// The families the series belong to.
pub(super) struct Families {
    /// `switchyard_requests_total{pool,backend,model,status,outcome,error_code}`.
    pub requests: IntCounterVec,
    /// `switchyard_request_duration_seconds{pool,backend,model}`.
    pub duration: HistogramVec,
    /// `switchyard_time_to_first_token_seconds{pool,backend,model}`.
    pub ttft: HistogramVec,
    /// `switchyard_time_per_output_token_seconds{pool,backend,model}`.
    pub tpot: HistogramVec,
    /// `switchyard_tokens_total{pool,backend,model,kind,source}`.
    pub tokens: IntCounterVec,
}

/// What one request contributes, once, when it ends.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    /// The status sent to the client; `None` when none was.
    pub status: Option<u16>,
    pub outcome: Option<Outcome>,
    /// Switchyard's `error.code` when it answered itself; empty otherwise.
    pub error_code: &'static str,
    /// From the request header read to the end of the response.
    pub duration: Duration,
    /// From the request sent upstream to the first body byte of a streamed
    /// response.
    pub ttft: Option<Duration>,
    /// From the first body byte of a streamed response to its end, for the
    /// time per output token.
    pub decode: Option<Duration>,
    /// The tokens of the response, once something reads them.
    pub usage: Option<Usage>,
}

/// A response's token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub source: TokenSource,
}

/// The requests counter of one (status class, outcome, error code).
type RequestKey = (&'static str, &'static str, &'static str);

/// Whether two keys are the same: their label values are `&'static str`
/// from fixed tables, so the same value is the same string, compared by
/// address rather than by a `memcmp` of each on every request. (A value
/// written at two places would only give the same counter two entries.)
fn same_key(a: &RequestKey, b: &RequestKey) -> bool {
    std::ptr::eq(a.0, b.0) && std::ptr::eq(a.1, b.1) && std::ptr::eq(a.2, b.2)
}

/// The handles of one (pool, backend, model).
pub struct Series {
    labels: [Box<str>; 3],
    duration: Histogram,
    ttft: OnceLock<Histogram>,
    tpot: OnceLock<Histogram>,
    /// prompt/reported, prompt/estimated, completion/reported,
    /// completion/estimated.
    tokens: [OnceLock<IntCounter>; 4],
    /// The first key counted (nearly always a `2xx` that went well), read
    /// without a lock.
    first: OnceLock<(RequestKey, IntCounter)>,
    /// The others: a handful at most per series, where linear search is the
    /// fastest lookup.
    requests: RwLock<Vec<(RequestKey, IntCounter)>>,
}

impl Series {
    fn new(families: &Families, pool: &str, backend: &str, model: &str) -> Self {
        Series {
            labels: [pool.into(), backend.into(), model.into()],
            duration: families.duration.with_label_values(&[pool, backend, model]),
            ttft: OnceLock::new(),
            tpot: OnceLock::new(),
            tokens: Default::default(),
            first: OnceLock::new(),
            requests: RwLock::new(Vec::new()),
        }
    }

    /// Whether these are the handles of `labels`.
    pub(super) fn is(&self, labels: (&str, &str, &str)) -> bool {
        let [pool, backend, model] = &self.labels;
        (&**pool, &**backend, &**model) == labels
    }

    fn label_values(&self) -> [&str; 3] {
        let [pool, backend, model] = &self.labels;
        [pool, backend, model]
    }

    /// Records one request.
    pub(super) fn record(&self, families: &Families, r: &RequestRecord) {
        let outcome = r.outcome.map_or("", Outcome::as_str);
        self.count_request(families, (status_class(r.status), outcome, r.error_code));
        self.duration.observe(r.duration.as_secs_f64());
        if let Some(ttft) = r.ttft {
            self.lazy(&self.ttft, &families.ttft)
                .observe(ttft.as_secs_f64());
        }
        if let Some(usage) = r.usage {
            self.tokens(families, usage);
            // The time after the first token covers the tokens after it.
            if let (Some(decode), Some(gaps)) = (r.decode, usage.completion.checked_sub(1)) {
                if gaps > 0 {
                    self.lazy(&self.tpot, &families.tpot)
                        .observe(decode.as_secs_f64() / gaps as f64);
                }
            }
        }
    }

    /// Counts a response's tokens.
    pub(super) fn tokens(&self, families: &Families, usage: Usage) {
        let source = match usage.source {
            TokenSource::Reported => 0,
            TokenSource::Estimated => 1,
        };
        for (kind, n, slot) in [
            ("prompt", usage.prompt, source),
            ("completion", usage.completion, 2 + source),
        ] {
            if n == 0 {
                continue;
            }
            self.tokens[slot]
                .get_or_init(|| {
                    let [pool, backend, model] = self.label_values();
                    families.tokens.with_label_values(&[
                        pool,
                        backend,
                        model,
                        kind,
                        usage.source.as_str(),
                    ])
                })
                .inc_by(n);
        }
    }

    fn lazy<'a>(&self, slot: &'a OnceLock<Histogram>, family: &HistogramVec) -> &'a Histogram {
        slot.get_or_init(|| family.with_label_values(&self.label_values()))
    }

    fn count_request(&self, families: &Families, key: RequestKey) {
        let counter = || {
            let [pool, backend, model] = self.label_values();
            let (status, outcome, code) = key;
            families
                .requests
                .with_label_values(&[pool, backend, model, status, outcome, code])
        };
        let (first, c) = self.first.get_or_init(|| (key, counter()));
        if same_key(first, &key) {
            c.inc();
            return;
        }
        let inc = |list: &[(RequestKey, IntCounter)]| {
            list.iter()
                .find(|(k, _)| same_key(k, &key))
                .map(|(_, c)| c.inc())
                .is_some()
        };
        if inc(&self.requests.read().unwrap_or_else(PoisonError::into_inner)) {
            return;
        }
        let mut list = self
            .requests
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if inc(&list) {
            return;
        }
        let c = counter();
        c.inc();
        list.push((key, c));
    }
}

/// The series of the first model a backend's requests were counted
/// under, kept beside the backend (its `Upstream`) so that its next request
/// for that model finds it with one load and a comparison of the labels,
/// instead of taking the shared cache's lock (whose count every worker
/// thread writes) and hashing the labels. Most backends serve one model,
/// or mostly one; requests for others go to the cache as before.
#[derive(Default)]
pub struct SeriesHint(pub(super) OnceLock<Arc<Series>>);

/// The series made so far, by (pool, backend, model). FNV rather than the
/// standard SipHash: the keys are a few short names from the
/// configuration and the fleet's model lists, which no client chooses
/// (an unknown model is looked up, then counted as `other`, and never
/// inserted), so a keyed hash protects nothing, and FNV is cheaper on
/// short strings.
#[derive(Default)]
pub(super) struct SeriesCache {
    map: RwLock<HashMap<Key, Arc<Series>, fnv::FnvBuildHasher>>,
}

impl SeriesCache {
    /// Runs `f` on the series of (`pool`, `backend`, `model`), looked for
    /// in `hint` first, which keeps the first one found for these labels
    /// themselves. A model seen for the first time is checked with
    /// `known`; if it is not, the request counts under [`OTHER_MODEL`].
    pub(super) fn with<R>(
        &self,
        families: &Families,
        labels: (&str, &str, &str),
        hint: Option<&SeriesHint>,
        known: impl FnOnce() -> bool,
        f: impl FnOnce(&Series) -> R,
    ) -> R {
        if let Some(series) = hint.and_then(|h| h.0.get()).filter(|s| s.is(labels)) {
            return f(series);
        }
        let (pool, backend, model) = labels;
        {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = map.get(&labels as &dyn KeyView) {
                if let Some(hint) = hint.filter(|h| h.0.get().is_none()) {
                    let _ = hint.0.set(series.clone());
                }
                return f(series);
            }
        }
        let model = if model.is_empty() || known() {
            model
        } else {
            OTHER_MODEL
        };
        let series = {
            let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
            map.entry(Key([pool.into(), backend.into(), model.into()]))
                .or_insert_with(|| Arc::new(Series::new(families, pool, backend, model)))
                .clone()
        };
        f(&series)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The owned key: pool, backend, model.
#[derive(PartialEq, Eq)]
struct Key([Box<str>; 3]);

/// A key, owned or borrowed, so that a lookup needs no allocation: the map
/// is searched with `&(pool, backend, model)` through `Borrow<dyn KeyView>`.
trait KeyView {
    fn parts(&self) -> (&str, &str, &str);
}

impl KeyView for Key {
    fn parts(&self) -> (&str, &str, &str) {
        let [a, b, c] = &self.0;
        (a, b, c)
    }
}

impl KeyView for (&str, &str, &str) {
    fn parts(&self) -> (&str, &str, &str) {
        (self.0, self.1, self.2)
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}
