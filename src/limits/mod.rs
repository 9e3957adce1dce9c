//! Rate and concurrency limits: who may send how much.
//!
//! A request is checked against up to three scopes: its client's address
//! (`limits.per_address`), its key (the key's `limits`, else
//! `limits.per_key`), and its pool (`pools.NAME.limits`, one bucket for
//! everyone). Each scope may limit requests (GCRA: `burst` at once, then
//! `limit` per `per`), tokens (prompt and completion, charged when the
//! response reports them), and requests in flight. A refusal is a 429 with
//! `Retry-After`; every answer carries OpenAI's `x-ratelimit-*` headers for
//! the tightest bucket, so SDKs slow down before they are refused.
//!
//! The counts live in this process ([`local`]) unless `limits.store`
//! names a Redis ([`redis`]), which every instance pointed at it shares.
//!
//! # Layout
//! - [`spec`]: the checked limits of each scope.
//! - [`window`]: where a bucket stands, as the headers say it.
//! - [`local`]: the buckets of this process.
//! - [`redis`]: the buckets in Redis, one round trip a check.
//! - [`admission`]: what an admitted request holds until it ends.

pub mod admission;
pub mod local;
pub mod redis;
pub mod spec;
pub mod window;

pub use admission::Admission;
pub use spec::{LimitSet, LimitsSpec, OnStoreError, RequestRate, StoreSpec, TokenRate};

use crate::metrics::Metrics;
use crate::state::Snapshot;
use arc_swap::ArcSwapOption;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Which scope a bucket belongs to, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Address,
    Key,
    Pool,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Address => "address",
            Scope::Key => "key",
            Scope::Pool => "pool",
        }
    }
}

/// Which limit refused a request, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Requests,
    Tokens,
    Concurrent,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::Tokens => "tokens",
            Limit::Concurrent => "concurrent",
        }
    }
}

/// Who a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectId<'a> {
    Address(IpAddr),
    Key(&'a str),
    Pool(&'a str),
}

/// One scope of a request, with the limits it is held to there.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub id: SubjectId<'a>,
    pub set: &'a LimitSet,
}

impl Subject<'_> {
    pub fn scope(&self) -> Scope {
        match self.id {
            SubjectId::Address(_) => Scope::Address,
            SubjectId::Key(_) => Scope::Key,
            SubjectId::Pool(_) => Scope::Pool,
        }
    }
}

/// A request the limits refused, and where its buckets stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub scope: Scope,
    pub limit: Limit,
    /// Until the bucket that refused would admit it.
    pub wait: Duration,
    pub requests: Option<window::Window>,
    pub tokens: Option<window::Window>,
}

impl Refused {
    fn new(subject: &Subject, limit: Limit, wait: Option<Duration>) -> Self {
        Refused {
            scope: subject.scope(),
            limit,
            wait: wait.unwrap_or(Duration::from_secs(1)),
            requests: None,
            tokens: None,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAdmitted {
    Limited(Refused),
    /// The store could not be asked and `on_store_error` is `deny`.
    StoreUnavailable,
}

/// The limits of every request, passed by `Arc` to the proxy.
pub struct Limiter {
    local: local::Local,
    /// The store of the current `limits.store`, replaced when a reload
    /// changes it.
    store: ArcSwapOption<redis::RedisStore>,
    metrics: Arc<Metrics>,
    /// When a store failure was last logged, in Unix seconds.
    last_store_log: AtomicU64,
}

/// At most one line a minute about an unreachable store: an outage of
/// Redis would otherwise write a line per request.
const STORE_LOG_EVERY: u64 = 60;

impl Limiter {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Limiter {
            local: local::Local::default(),
            store: ArcSwapOption::empty(),
            metrics,
            last_store_log: AtomicU64::new(0),
        }
    }

    /// The scopes of a request: its address, its key, its pool, each when
    /// it has limits.
    pub fn subjects<'a>(
        snapshot: &'a Snapshot,
        address: Option<IpAddr>,
        key: Option<&'a crate::auth::ApiKey>,
        pool: Option<&'a crate::config::PoolSpec>,
    ) -> ([Option<Subject<'a>>; 3], usize) {
        let limits = &snapshot.config.limits;
        let address = address
            .filter(|_| !limits.per_address.is_empty())
            .map(|ip| Subject {
                id: SubjectId::Address(ip),
                set: &limits.per_address,
            });
        let key = key
            .map(|k| Subject {
                id: SubjectId::Key(&k.name),
                set: k.limits.as_ref().unwrap_or(&limits.per_key),
            })
            .filter(|s| !s.set.is_empty());
        let pool = pool.filter(|p| !p.limits.is_empty()).map(|p| Subject {
            id: SubjectId::Pool(&p.name),
            set: &p.limits,
        });
        let n = [address.is_some(), key.is_some(), pool.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        let mut out = [address, key, pool];
        out.sort_by_key(|s| s.is_none());
        (out, n)
    }

    /// Checks a request against `subjects` and takes its share: a
    /// concurrency slot and a request's room, in each.
    pub async fn admit(
        &self,
        snapshot: &Snapshot,
        subjects: &[Subject<'_>],
        key_name: &str,
    ) -> Result<Admission, NotAdmitted> {
        let spec = snapshot.config.limits.store.as_ref();
        let result = match self.store_for(spec) {
            Some(store) => match store.admit(subjects).await {
                Ok(Ok(a)) => Ok(Admission::redis(store, subjects, a)),
                Ok(Err(refused)) => Err(NotAdmitted::Limited(refused)),
                Err(e) => {
                    self.store_failed(&e);
                    match store.spec.on_store_error {
                        OnStoreError::Allow => Ok(Admission::default()),
                        OnStoreError::Deny => Err(NotAdmitted::StoreUnavailable),
                    }
                }
            },
            None => {
                let buckets: Vec<(Subject, local::Bucket)> = subjects
                    .iter()
                    .filter_map(|s| Some((*s, self.local.bucket(snapshot, s)?)))
                    .collect();
                match self.local.admit(&buckets) {
                    Ok(checked) => Ok(Admission::local(buckets, checked)),
                    Err(refused) => Err(NotAdmitted::Limited(refused)),
                }
            }
        };
        if let Err(NotAdmitted::Limited(r)) = &result {
            self.metrics
                .rate_limited(key_name, r.scope.as_str(), r.limit.as_str());
        }
        result
    }

    /// Charges an admitted request's tokens, once its response has said
    /// them, and ends it.
    pub fn finish(&self, admission: Admission, tokens: Option<u64>) {
        admission.finish(&self.local, tokens);
    }

    fn store_for(&self, spec: Option<&StoreSpec>) -> Option<Arc<redis::RedisStore>> {
        let spec = spec?;
        if let Some(store) = self.store.load_full().filter(|s| &s.spec == spec) {
            return Some(store);
        }
        // Validation opened this URL already; a failure here is no store.
        let store = Arc::new(redis::RedisStore::new(spec.clone()).ok()?);
        self.store.store(Some(store.clone()));
        Some(store)
    }

    fn store_failed(&self, e: &redis::StoreError) {
        self.metrics.limit_store_errors.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_store_log.load(Ordering::Relaxed);
        if now >= last + STORE_LOG_EVERY
            && self
                .last_store_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "limits store: {e}; requests are {} meanwhile (failures so far: {})",
                "decided by limits.store.on_store_error",
                self.metrics.limit_store_errors.get()
            );
        }
    }
}
