//! The `least_connections` strategy: a Pingora selector that prefers the
//! backend with the fewest requests in flight relative to its weight.
//!
//! Pingora ships round robin, random and Ketama selectors, but no least
//! connections. LLM requests make it matter: one completion can stream for
//! minutes while another ends in milliseconds, so round robin piles long
//! requests onto whichever backend drew them. Counting what is in flight
//! and picking the least loaded backend evens that out.
//!
//! The counts are a pool's [`InFlightTable`], which outlives any one
//! selector (Pingora rebuilds its selector on every backend update, and a
//! reload builds whole new pools); the selector gets it through Pingora's
//! [`BackendSelection::Config`] (see
//! `LoadBalancer::from_backends_with_config`).

use super::in_flight::{InFlightCount, InFlightTable};
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One backend as the selector sees it.
struct Entry {
    backend: Backend,
    /// `None` for a Unix socket backend, which Switchyard never configures;
    /// such a backend is ordered as if idle.
    in_flight: Option<Arc<InFlightCount>>,
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
    use std::net::SocketAddr;

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
