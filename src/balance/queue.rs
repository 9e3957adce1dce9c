//! Admission: what a request does when every backend of its pool is at its
//! concurrency cap. It waits in the pool's FIFO queue and proceeds the
//! moment a slot frees, or gives up with a clear error.
//!
//! Inference servers serve a fixed number of requests at once (Ollama's
//! `OLLAMA_NUM_PARALLEL`, vLLM's `max_num_seqs`) and queue or reject the
//! rest themselves, each by its own rules and out of our sight. Capping
//! in-flight requests per backend here, and queueing the excess in one
//! place per pool, means an overflow waits for whichever backend frees
//! first rather than behind a slow one it happened to be sent to, and the
//! wait is bounded in length ([`QueueSpec::max`]) and time
//! ([`QueueSpec::timeout`]).
//!
//! The queue does not know what a slot is. [`PoolQueue::wait`] takes the
//! caller's `try_acquire`, which picks a backend with a free slot and takes
//! the slot (in Switchyard: the pool's selection with a cap check, taking a
//! `in_flight::InFlightSlot`); whatever releases a slot calls
//! [`PoolQueue::notify_released`].
//!
//! Fairness is FIFO per key (Switchyard keys on the request's model, which
//! decides the backends it can use): while requests with the same key
//! wait, a newcomer queues behind them instead of trying, and only the
//! first waiter of each key tries when woken. A request for another model
//! does not wait behind them: its backends may be idle while theirs are
//! full, and a request that can be served now never waits behind one that
//! cannot. A release wakes the first waiter of every key. Whenever a first
//! waiter leaves the queue, whether served, timed out or cancelled because
//! its client went away, it wakes the next one of its key, so a wake-up is
//! never lost with a waiter that no longer needs it and a burst of releases
//! serves one waiter after another. Within a key the price of strictness is
//! head-of-line blocking: a first waiter that can only use some of the
//! backends (a retry that must avoid those it tried) holds up the waiters
//! behind it until one of those frees. Across keys, a newcomer may take a
//! slot that a woken waiter of another key was about to try for, when both
//! can use the same backend; that waiter tries again at the next release.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a pool's queue may grow, and how long a request may wait in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Requests that may wait at once; beyond it, [`QueueError::Full`].
    /// Default 256: a few minutes of work for a small fleet, and a bound on
    /// the memory held by waiting requests. 0 turns queueing off.
    pub max: usize,
    /// How long one request may wait; then [`QueueError::TimedOut`].
    /// Default 30s: longer than most clients wait for a first token, so a
    /// request that times out here would likely have been abandoned anyway.
    pub timeout: Duration,
}

impl Default for QueueSpec {
    fn default() -> Self {
        QueueSpec {
            max: 256,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// Every backend was full and so was the queue.
    #[error("every backend of the pool is busy and its queue is full")]
    Full,
    /// No slot freed within the queue timeout.
    #[error("no backend of the pool freed a slot within the queue timeout")]
    TimedOut,
}

/// One queued request.
struct Waiter {
    ticket: u64,
    /// Requests with the same key wait in FIFO order among themselves.
    key: Box<str>,
    /// Notified when this waiter is at the head and should try again.
    /// `Notify` keeps a permit if the waiter is not listening yet, which is
    /// what makes a wake-up between its try and its wait count.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Waiters {
    queue: VecDeque<Waiter>,
    next_ticket: u64,
}

impl Waiters {
    /// The first waiter with `key`.
    fn head_of(&self, key: &str) -> Option<&Waiter> {
        self.queue.iter().find(|w| &*w.key == key)
    }

    /// Wakes the first waiter of every key.
    fn wake_heads(&self) {
        let mut woken: Vec<&str> = Vec::new();
        for w in &self.queue {
            if !woken.contains(&&*w.key) {
                woken.push(&w.key);
                w.wake.notify_one();
            }
        }
    }
}

/// The admission queue of one pool. Create one per pool name and carry it
/// over reloads, like the pool's in-flight counters, so that waiters and
/// the releases that wake them meet in the same queue.
pub struct PoolQueue {
    /// Replaced in place by a reload that changes the pool's `queue`
    /// settings: the waiters stay, the new bounds apply to newcomers.
    spec: arc_swap::ArcSwap<QueueSpec>,
    /// Never held across an await or while calling `try_acquire`, since a
    /// slot taken and given back inside it would call back into
    /// [`PoolQueue::notify_released`].
    waiters: Mutex<Waiters>,
    /// The queue's length, readable without the lock: every request checks
    /// it once and every released slot once, and it is almost always 0.
    waiting: std::sync::atomic::AtomicUsize,
}

impl PoolQueue {
    pub fn new(spec: QueueSpec) -> Self {
        PoolQueue {
            spec: arc_swap::ArcSwap::from_pointee(spec),
            waiters: Mutex::new(Waiters::default()),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// New bounds, for requests that queue from now on.
    pub fn set_spec(&self, spec: QueueSpec) {
        self.spec.store(Arc::new(spec));
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // Each update is a single push or remove, so a poisoned lock still
        // guards a consistent queue.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests waiting now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Requests waiting now, without the lock (for metrics).
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::Acquire) == 0
    }

    /// A slot of the pool was released (or more capacity appeared: a
    /// backend came back, a reload raised a cap): the first waiter of each
    /// key tries again. Cheap when nobody waits; call it from the slot
    /// guard's `Drop`.
    pub fn notify_released(&self) {
        // Every request releases a slot: without waiters, skip the lock.
        if self.is_empty() {
            return;
        }
        self.lock().wake_heads();
    }

    /// Admits a request: returns what `try_acquire` returned once it
    /// returns `Some`.
    ///
    /// `try_acquire` should pick a backend with a free slot and take the
    /// slot, or return `None` when every candidate is at its cap. It is
    /// called at once if nobody with the same `key` waits, otherwise only
    /// once this request is the first of its key in the queue, and again
    /// after each release. To fail
    /// without waiting (no healthy backend at all, so no release will come),
    /// make `T` a `Result` and return `Some(Err(..))`.
    ///
    /// Dropping the returned future leaves the queue and hands any wake-up
    /// it had received to the next waiter.
    pub async fn wait<T>(
        &self,
        key: &str,
        try_acquire: impl FnMut() -> Option<T>,
    ) -> Result<T, QueueError> {
        self.wait_queued(key, try_acquire, &mut None).await
    }

    /// [`PoolQueue::wait`], also saying how long the request spent in the
    /// queue: `None` when it did not enter it (admitted at once, or
    /// refused because the queue was full).
    pub async fn wait_timed<T>(
        &self,
        key: &str,
        try_acquire: impl FnMut() -> Option<T>,
    ) -> (Result<T, QueueError>, Option<Duration>) {
        let mut queued = None;
        let result = self.wait_queued(key, try_acquire, &mut queued).await;
        (result, queued.map(|at: Instant| at.elapsed()))
    }

    /// [`PoolQueue::wait`], noting in `queued` when the request entered the
    /// queue.
    async fn wait_queued<T>(
        &self,
        key: &str,
        mut try_acquire: impl FnMut() -> Option<T>,
        queued: &mut Option<Instant>,
    ) -> Result<T, QueueError> {
        if self.is_empty() || self.lock().head_of(key).is_none() {
            if let Some(admitted) = try_acquire() {
                return Ok(admitted);
            }
        }
        let place = self.enqueue(key)?;
        *queued = Some(Instant::now());
        let timeout = tokio::time::sleep(self.spec.load().timeout);
        tokio::pin!(timeout);
        loop {
            // A release between the failed try above and this point either
            // found us queued (and left a permit) or is seen by this try.
            if self.is_head(key, place.ticket) {
                if let Some(admitted) = try_acquire() {
                    return Ok(admitted);
                }
            }
            tokio::select! {
                // A wake-up that arrives with the deadline still counts.
                biased;
                () = place.wake.notified() => {}
                () = &mut timeout => return Err(QueueError::TimedOut),
            }
        }
    }

    fn enqueue(&self, key: &str) -> Result<Place<'_>, QueueError> {
        let mut waiters = self.lock();
        if waiters.queue.len() >= self.spec.load().max {
            return Err(QueueError::Full);
        }
        let ticket = waiters.next_ticket;
        waiters.next_ticket += 1;
        let wake = Arc::new(Notify::new());
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        waiters.queue.push_back(Waiter {
            ticket,
            key: key.into(),
            wake: wake.clone(),
        });
        Ok(Place {
            queue: self,
            ticket,
            wake,
        })
    }

    fn is_head(&self, key: &str, ticket: u64) -> bool {
        self.lock().head_of(key).is_some_and(|w| w.ticket == ticket)
    }
}

/// A request's place in the queue; leaving it, for whatever reason, is its
/// `Drop`.
struct Place<'a> {
    queue: &'a PoolQueue,
    ticket: u64,
    wake: Arc<Notify>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut waiters = self.queue.lock();
        let Some(index) = waiters.queue.iter().position(|w| w.ticket == self.ticket) else {
            return;
        };
        let Some(left) = waiters.queue.remove(index) else {
            return;
        };
        self.queue
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        // Only the first of a key is ever woken, so only a departing first
        // can take a wake-up with it; the next of its key tries in its
        // place. If it was served, there may be capacity for that one too.
        let was_first = !waiters.queue.iter().take(index).any(|w| w.key == left.key);
        if was_first {
            if let Some(next) = waiters.head_of(&left.key) {
                next.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::task::{yield_now, JoinHandle};
    use tokio::time::Instant;

    /// A pool's free slots, as the test's `try_acquire` sees them.
    #[derive(Default)]
    struct Slots {
        free: AtomicUsize,
        order: Mutex<Vec<usize>>,
    }

    impl Slots {
        fn take(&self, who: usize) -> Option<usize> {
            self.free
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .ok()?;
            self.order.lock().unwrap().push(who);
            Some(who)
        }

        fn give(&self, queue: &PoolQueue, n: usize) {
            for _ in 0..n {
                self.free.fetch_add(1, Ordering::SeqCst);
                queue.notify_released();
            }
        }

        fn order(&self) -> Vec<usize> {
            self.order.lock().unwrap().clone()
        }
    }

    fn setup(max: usize) -> (Arc<PoolQueue>, Arc<Slots>) {
        let queue = Arc::new(PoolQueue::new(QueueSpec {
            max,
            timeout: Duration::from_secs(30),
        }));
        (queue, Arc::new(Slots::default()))
    }

    fn spawn_waiter(
        queue: &Arc<PoolQueue>,
        slots: &Arc<Slots>,
        who: usize,
    ) -> JoinHandle<Result<usize, QueueError>> {
        let (queue, slots) = (queue.clone(), slots.clone());
        tokio::spawn(async move { queue.wait("", || slots.take(who)).await })
    }

    /// Lets the spawned tasks run until `cond` holds; time does not move.
    /// Gives up after enough turns for every task to have run many times.
    async fn until(cond: impl Fn() -> bool) {
        for _ in 0..1000 {
            if cond() {
                return;
            }
            yield_now().await;
        }
        panic!("condition not reached while the waiters ran");
    }

    /// Queues waiters `0..n` in that order.
    async fn queue_up(
        queue: &Arc<PoolQueue>,
        slots: &Arc<Slots>,
        n: usize,
    ) -> Vec<JoinHandle<Result<usize, QueueError>>> {
        let mut handles = Vec::new();
        for who in 0..n {
            handles.push(spawn_waiter(queue, slots, who));
            until(|| queue.len() == who + 1).await;
        }
        handles
    }

    #[test]
    fn defaults() {
        let spec = QueueSpec::default();
        assert_eq!((spec.max, spec.timeout), (256, Duration::from_secs(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn free_slot_admits_at_once() {
        let (queue, slots) = setup(4);
        slots.give(&queue, 1);
        assert_eq!(queue.wait("", || slots.take(7)).now_or_never(), Some(Ok(7)));
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_fifo_order() {
        let (queue, slots) = setup(8);
        let handles = queue_up(&queue, &slots, 4).await;
        for served in 1..=4 {
            slots.give(&queue, 1);
            until(|| slots.order().len() == served).await;
            assert_eq!(queue.len(), 4 - served);
        }
        assert_eq!(slots.order(), vec![0, 1, 2, 3]);
        for (who, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.ok(), Some(Ok(who)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_releases_serves_a_waiter_each() {
        let (queue, slots) = setup(8);
        let handles = queue_up(&queue, &slots, 3).await;
        slots.give(&queue, 3);
        for h in handles {
            assert!(matches!(h.await, Ok(Ok(_))));
        }
        assert_eq!(slots.order(), vec![0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_refuses() {
        let (queue, slots) = setup(2);
        let _handles = queue_up(&queue, &slots, 2).await;
        let third = queue.wait("", || slots.take(9)).now_or_never();
        assert_eq!(third, Some(Err(QueueError::Full)));
        // With queueing off, a busy pool refuses at once.
        let (queue, slots) = setup(0);
        assert_eq!(
            queue.wait("", || slots.take(0)).now_or_never(),
            Some(Err(QueueError::Full))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_times_out() {
        let (queue, slots) = setup(2);
        let start = Instant::now();
        let result = queue.wait("", || slots.take(0)).await;
        assert_eq!(result, Err(QueueError::TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_spent_queued_is_told() {
        let (queue, slots) = setup(2);
        slots.give(&queue, 1);
        let (admitted, waited) = queue.wait_timed("", || slots.take(0)).await;
        assert_eq!((admitted, waited), (Ok(0), None), "admitted at once");
        let waiter = {
            let (queue, slots) = (queue.clone(), slots.clone());
            tokio::spawn(async move { queue.wait_timed("", || slots.take(1)).await })
        };
        until(|| queue.len() == 1).await;
        tokio::time::advance(Duration::from_secs(2)).await;
        slots.give(&queue, 1);
        let (admitted, waited) = waiter.await.unwrap();
        assert_eq!((admitted, waited), (Ok(1), Some(Duration::from_secs(2))));
        let (refused, waited) = setup(0).0.wait_timed("", || None::<()>).await;
        assert_eq!((refused, waited), (Err(QueueError::Full), None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_head_passes_its_wake_up_on() {
        let (queue, slots) = setup(8);
        let mut handles = queue_up(&queue, &slots, 2).await;
        let start = Instant::now();
        // The slot's wake-up goes to waiter 0, whose client leaves before it
        // runs again.
        slots.give(&queue, 1);
        handles[0].abort();
        // Had the wake-up been lost, waiter 1 would time out after 30s.
        let second = handles.pop().expect("two waiters");
        assert_eq!(second.await.ok(), Some(Ok(1)));
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(handles
            .pop()
            .expect("two waiters")
            .await
            .is_err_and(|e| e.is_cancelled()));
        assert!(queue.is_empty());
        assert_eq!(slots.order(), vec![1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_behind_the_head_is_simply_removed() {
        let (queue, slots) = setup(8);
        let handles = queue_up(&queue, &slots, 3).await;
        handles[1].abort();
        until(|| queue.len() == 2).await;
        slots.give(&queue, 2);
        until(|| slots.order().len() == 2).await;
        assert_eq!(slots.order(), vec![0, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn newcomers_do_not_overtake() {
        let (queue, slots) = setup(8);
        let handles = queue_up(&queue, &slots, 1).await;
        // A slot frees; before waiter 0 runs, a newcomer arrives.
        slots.give(&queue, 1);
        let newcomer = queue.wait("", || slots.take(1)).now_or_never();
        assert_eq!(newcomer, None, "the newcomer must queue");
        assert_eq!(slots.free.load(Ordering::SeqCst), 1);
        for h in handles {
            assert_eq!(h.await.ok(), Some(Ok(0)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn another_key_does_not_wait_behind_a_queue() {
        let (queue, slots) = setup(8);
        // Waiter 0 wants model x, whose backends are all busy.
        let x = {
            let (queue, slots) = (queue.clone(), slots.clone());
            tokio::spawn(async move { queue.wait("x", || slots.take(0)).await })
        };
        until(|| queue.len() == 1).await;
        // A request for y whose backend is free is admitted at once...
        let y = queue.wait("y", || Some(1)).now_or_never();
        assert_eq!(y, Some(Ok(1)));
        // ...while another request for x queues behind the first.
        slots.free.fetch_add(1, Ordering::SeqCst);
        assert_eq!(queue.wait("x", || slots.take(2)).now_or_never(), None);
        queue.notify_released();
        assert_eq!(x.await.ok(), Some(Ok(0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_wakes_the_first_of_every_key() {
        let (queue, slots) = setup(8);
        let mut handles = Vec::new();
        for (who, key) in [(0, "x"), (1, "x"), (2, "y")] {
            let (q, s) = (queue.clone(), slots.clone());
            handles.push(tokio::spawn(
                async move { q.wait(key, || s.take(who)).await },
            ));
            until(|| queue.len() == who + 1).await;
        }
        // Two slots free: the first x and the first y are served, not the
        // two x waiters in a row.
        slots.give(&queue, 2);
        until(|| slots.order().len() == 2).await;
        let mut order = slots.order();
        order.sort();
        assert_eq!(order, vec![0, 2]);
        slots.give(&queue, 1);
        for h in handles {
            assert!(matches!(h.await, Ok(Ok(_))));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_during_the_first_try_is_not_lost() {
        let (queue, slots) = setup(8);
        // The slot frees right after the fast-path try fails, while the
        // queue is still empty, so nobody is woken for it.
        let mut tries = 0;
        let result = queue
            .wait("", || {
                tries += 1;
                let got = slots.take(0);
                if tries == 1 {
                    slots.give(&queue, 1);
                }
                got
            })
            .now_or_never();
        assert_eq!(result, Some(Ok(0)));
    }
}
