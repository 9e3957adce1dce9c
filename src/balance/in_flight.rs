//! Requests in flight, per backend of a pool: the counts behind
//! `least_connections`, per-backend caps and the queue's wake-ups.
//!
//! The counts must outlive any one selector and any one snapshot: a
//! request that started before a reload still ends against the same
//! counter. So they live in an [`InFlightTable`], created once per pool
//! name and carried over by reloads. Each backend's counter is an
//! [`InFlightCount`]; a request holds an [`InFlightSlot`] from the moment a
//! backend is picked until its context is dropped, so the slot is given
//! back however the request ends: success, error, timeout or a client that
//! left.
//!
//! The same counter serves per-backend concurrency caps
//! ([`InFlightCount::try_acquire`] with a limit), and the table can tell a
//! listener whenever a slot is released ([`OnRelease`]), which is how a
//! pool's queue learns that a waiter may proceed. This module does not know
//! about that queue: the listener is whatever the caller passes.

use std::collections::HashMap;
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
pub struct InFlightCount {
    addr: SocketAddr,
    count: AtomicUsize,
    /// The table's listener, copied here so that releasing a slot needs no
    /// table lookup and no lock.
    on_release: Option<Arc<dyn OnRelease>>,
}

impl InFlightCount {
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
    counter: Arc<InFlightCount>,
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
    /// selector and the request path hold the `Arc<InFlightCount>` directly.
    counters: Mutex<HashMap<SocketAddr, Arc<InFlightCount>>>,
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
    pub fn counter(&self, addr: SocketAddr) -> Arc<InFlightCount> {
        // A panic elsewhere while holding this lock cannot leave the map
        // half-updated (insert is the only write), so a poisoned lock is
        // still safe to use.
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(InFlightCount {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
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
}
