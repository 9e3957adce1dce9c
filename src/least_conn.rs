//! The `least_connections` strategy: a Pingora selector that prefers the
//! backend with the fewest requests in flight relative to its weight, and
//! the per-request guard that keeps those counts.
//!
//! Pingora ships round robin, random and Ketama selectors, but no least
//! connections. LLM requests make it matter: one completion can stream for
//! minutes while another ends in milliseconds, so round robin piles long
//! requests onto whichever backend drew them. Counting what is in flight
//! and picking the least loaded backend evens that out.
//!
//! The counts must outlive any one selector: Pingora rebuilds its selector
//! on every backend update, and a reload builds whole new pools, yet a
//! request that started before either still ends against the same counter.
//! So the counts live in an [`InFlightTable`], created once per pool name
//! and carried over by reloads, and the selector gets it through Pingora's
//! [`BackendSelection::Config`] (see
//! `LoadBalancer::from_backends_with_config`). Each backend's counter is an
//! [`InFlight`]; a request holds an [`InFlightSlot`] from the moment a
//! backend is picked until its context is dropped, so the slot is given back
//! however the request ends: success, error, timeout or a client that left.
//!
//! The same counter serves per-backend concurrency caps
//! ([`InFlight::try_acquire`] with a limit), and the table can tell a
//! listener whenever a slot is released ([`OnRelease`]), which is how a
//! pool's admission queue learns that a waiter may proceed. This module does
//! not know about that queue: the listener is whatever the caller passes.

use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Told each time an [`InFlightSlot`] is released, after the count has gone
/// down. It runs inside a `Drop`, so it must be quick and must not block.
/// Any `Fn(SocketAddr) + Send + Sync` closure is one.
pub trait OnRelease: Send + Sync {
    /// A request to `addr` has ended.
    fn released(&self, addr: SocketAddr);
}

impl<F: Fn(SocketAddr) + Send + Sync> OnRelease for F {
    fn released(&self, addr: SocketAddr) {
        self(addr)
    }
}

/// The requests in flight to one backend of one pool.
pub struct InFlight {
    addr: SocketAddr,
    count: AtomicUsize,
    /// The table's listener, copied here so that releasing a slot needs no
    /// table lookup and no lock.
    on_release: Option<Arc<dyn OnRelease>>,
}

impl InFlight {
    /// The backend this counter belongs to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests in flight now.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Takes a slot unconditionally: for backends without a cap.
    pub fn acquire(self: &Arc<Self>) -> InFlightSlot {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightSlot {
            counter: self.clone(),
        }
    }

    /// Takes a slot if fewer than `limit` are taken; `None` is no limit.
    ///
    /// The check and the increment are one atomic step, so two requests
    /// racing for the last slot cannot both get it: a cap such as Ollama's
    /// `OLLAMA_NUM_PARALLEL` is never exceeded, even briefly.
    pub fn try_acquire(self: &Arc<Self>, limit: Option<usize>) -> Option<InFlightSlot> {
        let Some(limit) = limit else {
            return Some(self.acquire());
        };
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(InFlightSlot {
            counter: self.clone(),
        })
    }
}

/// One request in flight to one backend. Dropping it gives the slot back
/// and tells the table's [`OnRelease`] listener.
#[must_use = "the slot is released as soon as the guard is dropped"]
pub struct InFlightSlot {
    counter: Arc<InFlight>,
}

impl InFlightSlot {
    /// The backend the slot is held on.
    pub fn addr(&self) -> SocketAddr {
        self.counter.addr
    }
}

impl std::fmt::Debug for InFlightSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightSlot")
            .field("addr", &self.counter.addr)
            .finish()
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        // Every slot was counted once when it was made, so this cannot wrap.
        self.counter.count.fetch_sub(1, Ordering::AcqRel);
        if let Some(listener) = &self.counter.on_release {
            listener.released(self.counter.addr);
        }
    }
}

/// The in-flight counters of one pool, by backend address.
///
/// Create one per pool name and hand the same `Arc` to every selector and
/// pool built for that name, across reloads, so that requests already in
/// flight stay counted. Counters are per pool: a backend listed in two
/// pools is counted in each separately.
pub struct InFlightTable {
    /// Only touched when a selector or pool is built, never per request: the
    /// selector and the request path hold the `Arc<InFlight>` directly.
    counters: Mutex<HashMap<SocketAddr, Arc<InFlight>>>,
    on_release: Option<Arc<dyn OnRelease>>,
}

impl Default for InFlightTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InFlightTable {
    /// A table whose releases tell no one.
    pub fn new() -> Self {
        InFlightTable {
            counters: Mutex::new(HashMap::new()),
            on_release: None,
        }
    }

    /// A table that calls `listener` after each release, e.g. to wake the
    /// pool's admission queue.
    pub fn with_on_release(listener: Arc<dyn OnRelease>) -> Self {
        InFlightTable {
            counters: Mutex::new(HashMap::new()),
            on_release: Some(listener),
        }
    }

    /// The counter of `addr`, created at zero the first time it is asked for.
    pub fn counter(&self, addr: SocketAddr) -> Arc<InFlight> {
        // A panic elsewhere while holding this lock cannot leave the map
        // half-updated (insert is the only write), so a poisoned lock is
        // still safe to use.
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(InFlight {
                    addr,
                    count: AtomicUsize::new(0),
                    on_release: self.on_release.clone(),
                })
            })
            .clone()
    }

    /// Requests in flight to `addr` now; 0 for an unknown backend.
    pub fn current(&self, addr: SocketAddr) -> usize {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.get(&addr).map_or(0, |c| c.current())
    }

    /// Forgets the counters of backends that `keep` rejects, after a reload
    /// removed them. Requests still in flight to them keep their counter
    /// alive through their slots; if such a backend comes back, it starts
    /// from a fresh counter while the old requests drain.
    pub fn retain(&self, keep: impl Fn(SocketAddr) -> bool) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.retain(|addr, _| keep(*addr));
    }
}

/// One backend as the selector sees it.
struct Entry {
    backend: Backend,
    /// `None` for a Unix socket backend, which Switchyard never configures;
    /// such a backend is ordered as if idle.
    in_flight: Option<Arc<InFlight>>,
}

impl Entry {
    fn load(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |c| c.current())
    }

    /// A weight of 0 would make every load infinite; Switchyard leaves such
    /// backends out of the selector, and anything else is treated as 1.
    fn weight(&self) -> usize {
        self.backend.weight.max(1)
    }
}

/// Pingora selector for `least_connections`: see the module docs.
///
/// [`BackendSelection::iter`] orders every backend by in-flight / weight,
/// least loaded first, so `select_with`'s `accept` callback can still pass
/// over unhealthy, tried or full backends and land on the next least loaded.
/// Backends with equal load take turns being first: a cursor advances on
/// each selection and rotates the order among ties, so an idle pool is
/// served round robin rather than always by the same backend.
pub struct LeastConnections {
    entries: Box<[Entry]>,
    /// Advanced once per selection; ties are broken starting from it.
    cursor: AtomicUsize,
}

impl BackendSelection for LeastConnections {
    type Iter = LeastConnectionsIter;
    type Config = Arc<InFlightTable>;

    fn build_with_config(backends: &BTreeSet<Backend>, table: &Arc<InFlightTable>) -> Self {
        let entries = backends
            .iter()
            .map(|b| Entry {
                backend: b.clone(),
                in_flight: b.addr.as_inet().map(|addr| table.counter(*addr)),
            })
            .collect();
        LeastConnections {
            entries,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Without a table the counts belong to this selector alone and are
    /// lost on the next rebuild. Pool code always passes the pool's table
    /// through `LoadBalancer::from_backends_with_config`; this exists
    /// because the trait requires it.
    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &Arc::new(InFlightTable::new()))
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> LeastConnectionsIter {
        let n = self.entries.len();
        let start = if n == 0 {
            0
        } else {
            self.cursor.fetch_add(1, Ordering::Relaxed) % n
        };
        // Sample every load once, so the order is consistent even while
        // other requests start and end around us.
        let loads: Vec<usize> = self.entries.iter().map(Entry::load).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            // a.load / a.weight vs b.load / b.weight, without division.
            let lhs = loads[a] as u128 * self.entries[b].weight() as u128;
            let rhs = loads[b] as u128 * self.entries[a].weight() as u128;
            lhs.cmp(&rhs)
                .then_with(|| ((a + n - start) % n).cmp(&((b + n - start) % n)))
        });
        LeastConnectionsIter {
            selector: self.clone(),
            order,
            next: 0,
        }
    }
}

/// The backends of one selection, least loaded first, each once.
pub struct LeastConnectionsIter {
    selector: Arc<LeastConnections>,
    order: Vec<usize>,
    next: usize,
}

impl BackendIter for LeastConnectionsIter {
    fn next(&mut self) -> Option<&Backend> {
        let index = *self.order.get(self.next)?;
        self.next += 1;
        self.selector.entries.get(index).map(|e| &e.backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use pingora_load_balancing::discovery::Static;
    use pingora_load_balancing::{Backends, LoadBalancer};

    fn backend(port: u16, weight: usize) -> Backend {
        Backend {
            addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(addr(port)),
            weight,
            ext: Default::default(),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn ports(selector: &Arc<LeastConnections>) -> Vec<u16> {
        let mut iter = selector.iter(b"");
        let mut out = Vec::new();
        while let Some(b) = iter.next() {
            out.push(b.addr.as_inet().map_or(0, |a| a.port()));
        }
        out
    }

    fn first(selector: &Arc<LeastConnections>) -> u16 {
        ports(selector)[0]
    }

    fn build(table: &Arc<InFlightTable>, backends: &[Backend]) -> Arc<LeastConnections> {
        let set = BTreeSet::from_iter(backends.iter().cloned());
        Arc::new(LeastConnections::build_with_config(&set, table))
    }

    #[test]
    fn orders_by_load_relative_to_weight() {
        let table = Arc::new(InFlightTable::new());
        let sel = build(&table, &[backend(1, 4), backend(2, 1), backend(3, 2)]);
        let _a: Vec<_> = (0..6).map(|_| table.counter(addr(1)).acquire()).collect(); // 6/4
        let _b = table.counter(addr(2)).acquire(); // 1/1
        let _c: Vec<_> = (0..1).map(|_| table.counter(addr(3)).acquire()).collect(); // 1/2
        assert_eq!(ports(&sel), vec![3, 2, 1]);
        // Every backend is yielded exactly once, then the iterator ends.
        let mut iter = sel.iter(b"");
        for _ in 0..3 {
            assert!(iter.next().is_some());
        }
        assert!(iter.next().is_none());
    }

    #[test]
    fn ties_rotate() {
        let table = Arc::new(InFlightTable::new());
        let sel = build(&table, &[backend(1, 1), backend(2, 1), backend(3, 1)]);
        let firsts: Vec<u16> = (0..6).map(|_| first(&sel)).collect();
        assert_eq!(firsts, vec![1, 2, 3, 1, 2, 3]);

        // Only the tied backends rotate; the loaded one stays last.
        let _busy = table.counter(addr(2)).acquire();
        let orders: Vec<Vec<u16>> = (0..2).map(|_| ports(&sel)).collect();
        assert_eq!(orders, vec![vec![1, 3, 2], vec![3, 1, 2]]);
    }

    #[test]
    fn counters_return_to_zero_when_slots_drop() {
        let released = Arc::new(AtomicUsize::new(0));
        let seen = released.clone();
        let table = InFlightTable::with_on_release(Arc::new(move |_: SocketAddr| {
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        let counter = table.counter(addr(1));
        let slots: Vec<_> = (0..3).map(|_| counter.acquire()).collect();
        assert_eq!(table.current(addr(1)), 3);
        assert_eq!(slots[0].addr(), addr(1));
        drop(slots);
        assert_eq!(table.current(addr(1)), 0);
        assert_eq!(released.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn try_acquire_respects_the_limit() {
        let table = InFlightTable::new();
        let counter = table.counter(addr(1));
        let a = counter.try_acquire(Some(2));
        let b = counter.try_acquire(Some(2));
        assert!(a.is_some() && b.is_some());
        assert!(counter.try_acquire(Some(2)).is_none());
        assert_eq!(counter.current(), 2);
        drop(a);
        assert!(counter.try_acquire(Some(2)).is_some());
        assert!(counter.try_acquire(None).is_some());
        assert_eq!(counter.current(), 1);
    }

    #[test]
    fn counters_survive_a_rebuild() {
        let table = Arc::new(InFlightTable::new());
        let old = build(&table, &[backend(1, 1), backend(2, 1)]);
        let slot = table.counter(addr(1)).acquire();
        // A reload adds a backend; the request on :1 is still counted.
        let new = build(&table, &[backend(1, 1), backend(2, 1), backend(3, 1)]);
        assert_eq!(*ports(&new).last().unwrap_or(&0), 1);
        // Both selectors see a slot taken through either.
        let _more = new.entries[1].in_flight.as_ref().map(|c| c.acquire());
        assert_eq!(ports(&old), vec![1, 2]);
        drop(slot);
        assert_eq!(table.current(addr(1)), 0);
        assert_eq!(table.current(addr(2)), 1);
    }

    #[test]
    fn retain_forgets_removed_backends() {
        let table = InFlightTable::new();
        let slot = table.counter(addr(1)).acquire();
        table.retain(|a| a != addr(1));
        assert_eq!(table.current(addr(1)), 0);
        // The old request still releases its own counter without harm.
        drop(slot);
        assert_eq!(table.counter(addr(1)).current(), 0);
    }

    #[test]
    fn works_inside_a_pingora_load_balancer() {
        let table = Arc::new(InFlightTable::new());
        let backends = BTreeSet::from_iter([backend(1, 1), backend(2, 1)]);
        let lb: LoadBalancer<LeastConnections> = LoadBalancer::from_backends_with_config(
            Backends::new(Static::new(backends)),
            Some(table.clone()),
        );
        // Static discovery answers at once; this builds the selector.
        assert!(matches!(lb.update().now_or_never(), Some(Ok(()))));
        let pick = |skip: Option<u16>| {
            lb.select_with(b"", 16, |b, _| b.addr.as_inet().map(|a| a.port()) != skip)
                .and_then(|b| b.addr.as_inet().map(|a| a.port()))
        };
        let _slot = table.counter(addr(1)).acquire();
        assert_eq!(pick(None), Some(2));
        assert_eq!(pick(Some(2)), Some(1));
        assert_eq!(pick(None), Some(2));
    }

    #[test]
    fn empty_pool_yields_nothing() {
        let sel = Arc::new(LeastConnections::build(&BTreeSet::new()));
        assert!(sel.iter(b"").next().is_none());
    }
}
