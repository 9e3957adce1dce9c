//! Limits counted in this process: the default store.
//!
//! Requests are a GCRA per bucket from the `governor` crate (exact: a full
//! bucket admits `burst`, then one per `per / limit`). Tokens are a bucket
//! that may go into debt, which `governor` cannot: a request is admitted
//! while the bucket is not empty, and charged whatever its response
//! reports once it ends. Concurrency is a count per bucket.
//!
//! The buckets are made for one configuration and kept across a reload for
//! every key, pool and address scope whose limits did not change, so a
//! SIGHUP does not hand every caller a fresh burst.

use super::window::Window;
use super::{Limit, Refused, Subject, SubjectId};
use crate::limits::{LimitSet, RequestRate, TokenRate};
use crate::state::Snapshot;
use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Direct = governor::DefaultDirectRateLimiter<StateInformationMiddleware>;
type Keyed = governor::DefaultKeyedRateLimiter<IpAddr, StateInformationMiddleware>;

/// Per-address tables are swept of full buckets (which hold nothing worth
/// keeping) every this many checks, so a scan from many addresses does not
/// grow them for ever.
const SWEEP_EVERY: u64 = 4096;

/// The buckets of every scope, for the configuration of one snapshot
/// generation.
struct Tables {
    generation: u64,
    address: Option<Arc<AddressBuckets>>,
    keys: HashMap<String, Arc<Buckets>>,
    pools: HashMap<String, Arc<Buckets>>,
}

/// The local store.
pub struct Local {
    tables: ArcSwap<Tables>,
    /// Held while tables are rebuilt, so a reload builds them once.
    rebuild: Mutex<()>,
    clock: DefaultClock,
    /// Token buckets count nanoseconds from here.
    epoch: Instant,
    checks: AtomicU64,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            tables: ArcSwap::from_pointee(Tables {
                generation: 0,
                address: None,
                keys: HashMap::new(),
                pools: HashMap::new(),
            }),
            rebuild: Mutex::new(()),
            clock: DefaultClock::default(),
            epoch: Instant::now(),
            checks: AtomicU64::new(0),
        }
    }
}

/// A bucket a request was checked against, to release and charge later.
#[derive(Clone)]
pub enum Bucket {
    Named(Arc<Buckets>),
    Address(Arc<AddressBuckets>, IpAddr),
}

impl Local {
    /// The buckets of `subject` in the tables for `snapshot`.
    pub fn bucket(&self, snapshot: &Snapshot, subject: &Subject) -> Option<Bucket> {
        let tables = self.tables(snapshot);
        match subject.id {
            SubjectId::Address(ip) => Some(Bucket::Address(tables.address.clone()?, ip)),
            SubjectId::Key(name) => tables.keys.get(name).cloned().map(Bucket::Named),
            SubjectId::Pool(name) => tables.pools.get(name).cloned().map(Bucket::Named),
        }
    }

    fn tables(&self, snapshot: &Snapshot) -> Arc<Tables> {
        let current = self.tables.load_full();
        if current.generation == snapshot.generation {
            return current;
        }
        let _one = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.tables.load_full();
        if current.generation == snapshot.generation {
            return current;
        }
        let next = Arc::new(build(snapshot, &current));
        self.tables.store(next.clone());
        next
    }

    /// Checks `buckets` in order (concurrency, then tokens, then
    /// requests, so that a refusal takes as little as it can). On a
    /// refusal, the slots already taken are given back.
    pub fn admit(&self, buckets: &[(Subject, Bucket)]) -> Result<Checked, Refused> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(buckets);
        }
        let mut checked = Checked::default();
        for (i, (subject, bucket)) in buckets.iter().enumerate() {
            if let Some(limit) = subject.set.concurrent {
                if !bucket.acquire(limit) {
                    buckets[..i].iter().for_each(|(s, b)| b.release(s.set));
                    return Err(Refused::new(subject, Limit::Concurrent, None));
                }
            }
        }
        // The clock is read only when a token bucket needs it.
        let mut now = None;
        let refuse = |subject: &Subject, limit, wait| {
            buckets.iter().for_each(|(s, b)| b.release(s.set));
            Refused::new(subject, limit, wait)
        };
        for (subject, bucket) in buckets {
            if let Some(rate) = subject.set.tokens {
                let now = *now.get_or_insert_with(|| self.nanos());
                let window = bucket.tokens(rate, now);
                checked.tokens = Some(Window::tighter(checked.tokens, window.0));
                if let Some(wait) = window.1 {
                    let mut r = refuse(subject, Limit::Tokens, Some(wait));
                    r.tokens = checked.tokens;
                    return Err(r);
                }
            }
        }
        for (subject, bucket) in buckets {
            if let Some(rate) = subject.set.requests {
                match bucket.request(&self.clock, rate) {
                    Ok(window) => {
                        checked.requests = Some(Window::tighter(checked.requests, window))
                    }
                    Err(wait) => {
                        let mut r = refuse(subject, Limit::Requests, Some(wait));
                        r.requests = Some(Window {
                            limit: u64::from(rate.limit),
                            remaining: 0,
                            reset: wait,
                        });
                        r.tokens = checked.tokens;
                        return Err(r);
                    }
                }
            }
        }
        Ok(checked)
    }

    /// Charges `tokens` to the token bucket of each of `buckets`.
    pub fn charge(&self, buckets: &[(LimitSet, Bucket)], tokens: u64) {
        let now = self.nanos();
        for (set, bucket) in buckets {
            if let Some(rate) = set.tokens {
                bucket.charge(rate, tokens, now);
            }
        }
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn sweep(&self, buckets: &[(Subject, Bucket)]) {
        let now = self.nanos();
        for (_, bucket) in buckets {
            if let Bucket::Address(table, _) = bucket {
                if let Some(keyed) = &table.requests {
                    keyed.retain_recent();
                    keyed.shrink_to_fit();
                }
                lock(&table.tokens).retain(|_, tat| *tat > now);
            }
        }
    }
}

/// The tightest windows of an admitted request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checked {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

/// The buckets of one key or pool.
pub struct Buckets {
    set: LimitSet,
    requests: Option<Direct>,
    /// When the bucket is full again, in nanoseconds from the epoch.
    tokens: Mutex<u64>,
    in_flight: AtomicU32,
}

/// The buckets of every client address, one scope.
pub struct AddressBuckets {
    set: LimitSet,
    requests: Option<Keyed>,
    tokens: Mutex<HashMap<IpAddr, u64>>,
    in_flight: Mutex<HashMap<IpAddr, u32>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn quota(rate: RequestRate) -> Quota {
    let interval = rate.interval().max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl Buckets {
    fn new(set: LimitSet) -> Self {
        Buckets {
            requests: set
                .requests
                .map(|r| RateLimiter::direct(quota(r)).with_middleware()),
            tokens: Mutex::new(0),
            in_flight: AtomicU32::new(0),
            set,
        }
    }
}

impl AddressBuckets {
    fn new(set: LimitSet) -> Self {
        AddressBuckets {
            requests: set
                .requests
                .map(|r| RateLimiter::keyed(quota(r)).with_middleware()),
            tokens: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            set,
        }
    }
}

impl Bucket {
    fn acquire(&self, limit: u32) -> bool {
        match self {
            Bucket::Named(b) => b
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok(),
            Bucket::Address(t, ip) => {
                let mut map = lock(&t.in_flight);
                let n = map.entry(*ip).or_insert(0);
                if *n < limit {
                    *n += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Gives back the slot `acquire` took, when `set` has a concurrency
    /// limit.
    pub fn release(&self, set: &LimitSet) {
        if set.concurrent.is_none() {
            return;
        }
        match self {
            Bucket::Named(b) => {
                let _ = b
                    .in_flight
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            }
            Bucket::Address(t, ip) => {
                let mut map = lock(&t.in_flight);
                if let Some(n) = map.get_mut(ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        map.remove(ip);
                    }
                }
            }
        }
    }

    /// The token window now, and how long until it admits if it does not.
    fn tokens(&self, rate: TokenRate, now: u64) -> (Window, Option<Duration>) {
        let tat = match self {
            Bucket::Named(b) => *lock(&b.tokens),
            Bucket::Address(t, ip) => lock(&t.tokens).get(ip).copied().unwrap_or(0),
        };
        token_window(rate, tat, now)
    }

    fn charge(&self, rate: TokenRate, tokens: u64, now: u64) {
        let add = |tat: &mut u64| {
            let cost = u128::from(tokens) * rate.per.as_nanos() / u128::from(rate.limit);
            *tat = (*tat)
                .max(now)
                .saturating_add(u64::try_from(cost).unwrap_or(u64::MAX));
        };
        match self {
            Bucket::Named(b) => add(&mut lock(&b.tokens)),
            Bucket::Address(t, ip) => add(lock(&t.tokens).entry(*ip).or_insert(0)),
        }
    }

    fn request(&self, clock: &DefaultClock, rate: RequestRate) -> Result<Window, Duration> {
        let outcome = match self {
            Bucket::Named(b) => b.requests.as_ref().map(|l| l.check()),
            Bucket::Address(t, ip) => t.requests.as_ref().map(|l| l.check_key(ip)),
        };
        match outcome {
            None => Ok(Window {
                limit: u64::from(rate.limit),
                remaining: u64::from(rate.limit),
                reset: Duration::ZERO,
            }),
            Some(Ok(state)) => {
                let remaining = state.remaining_burst_capacity();
                Ok(Window {
                    limit: u64::from(rate.limit),
                    remaining: u64::from(remaining),
                    reset: rate.interval() * rate.burst.saturating_sub(remaining),
                })
            }
            Some(Err(not_until)) => Err(not_until.wait_time_from(clock.now())),
        }
    }
}

/// A token bucket that is full at `tat` (nanoseconds), seen at `now`: it
/// admits while it has room for a token, however many the request then
/// takes.
pub fn token_window(rate: TokenRate, tat: u64, now: u64) -> (Window, Option<Duration>) {
    let per = u64::try_from(rate.per.as_nanos()).unwrap_or(u64::MAX);
    let level = tat.saturating_sub(now);
    let free = per.saturating_sub(level);
    let remaining = u128::from(free) * u128::from(rate.limit) / u128::from(per.max(1));
    let window = Window {
        limit: rate.limit,
        remaining: u64::try_from(remaining).unwrap_or(u64::MAX),
        reset: Duration::from_nanos(level),
    };
    // Empty is less than one token's room left.
    let token = per / rate.limit.max(1);
    let wait =
        (remaining == 0).then(|| Duration::from_nanos((level + token).saturating_sub(per).max(1)));
    (window, wait)
}

/// Tables for `snapshot`, keeping every bucket of `previous` whose limits
/// are unchanged.
fn build(snapshot: &Snapshot, previous: &Tables) -> Tables {
    let config = &snapshot.config;
    let limits = &config.limits;
    let address = (!limits.per_address.is_empty()).then(|| match &previous.address {
        Some(a) if a.set == limits.per_address => a.clone(),
        _ => Arc::new(AddressBuckets::new(limits.per_address.clone())),
    });
    let keep = |old: &HashMap<String, Arc<Buckets>>, name: &str, set: &LimitSet| match old.get(name)
    {
        Some(b) if &b.set == set => b.clone(),
        _ => Arc::new(Buckets::new(set.clone())),
    };
    let keys = config
        .auth
        .iter()
        .flat_map(|a| a.keys.iter())
        .map(|k| (k, k.limits.as_ref().unwrap_or(&limits.per_key)))
        .filter(|(_, set)| !set.is_empty())
        .map(|(k, set)| (k.name.clone(), keep(&previous.keys, &k.name, set)))
        .collect();
    let pools = config
        .pools
        .iter()
        .filter(|p| !p.limits.is_empty())
        .map(|p| (p.name.clone(), keep(&previous.pools, &p.name, &p.limits)))
        .collect();
    Tables {
        generation: snapshot.generation,
        address,
        keys,
        pools,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_bucket_admits_while_it_has_room_for_a_token() {
        let rate = TokenRate {
            per: Duration::from_secs(60),
            limit: 3000,
        };
        let (w, wait) = token_window(rate, 0, 1_000);
        assert_eq!((w.remaining, wait), (3000, None));
        // 1000 tokens cost 20 s of the minute.
        let tat = 20_000_000_000;
        let (w, wait) = token_window(rate, tat, 0);
        assert_eq!(
            (w.remaining, w.reset, wait),
            (2000, Duration::from_secs(20), None)
        );
        let (w, wait) = token_window(rate, 3 * tat, 0);
        assert_eq!(w.remaining, 0);
        assert!(wait.is_some_and(|d| d > Duration::ZERO && d < Duration::from_millis(100)));
    }
}
