//! One attempt of a request at one backend, and the one place that decides
//! what each of its events means.
//!
//! A request may make several attempts (retries now, hedged attempts
//! later). Everything that belongs to one attempt lives in an [`Attempt`],
//! replaced whole when the next begins: the backend, its in-flight slot,
//! its circuit permit, the watchdog on its socket. Its methods are the
//! attempt's events (connected, header, chunk, finished), so the hooks only
//! report what happened, and the watchdog and the circuit verdict are
//! handled the same way whichever hook saw it. Dropping an attempt gives
//! the slot back and stops the watchdog; a permit dropped without a verdict
//! counts for nothing (the client left, say).

use super::watchdog::Watchdog;
use crate::access_log::Reason;
use crate::balance::in_flight::InFlightSlot;
use crate::balance::pool::Upstream;
use crate::config::Timeouts;
use crate::health::circuit::CircuitPermit;
use pingora_error::{Error, ErrorType};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

/// What an attempt says of its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It answered in full.
    Served,
    /// It failed: no connection, no answer in time, a 5xx or 429, a
    /// connection dropped mid-response.
    Failed,
}

/// One attempt at one backend.
pub(super) struct Attempt {
    pub(super) upstream: Arc<Upstream>,
    /// The backend's in-flight count, held until the attempt is dropped.
    _slot: InFlightSlot,
    /// The attempt's say in the backend's circuit, spent by its verdict.
    permit: Option<CircuitPermit>,
    /// `first_byte` and `idle` of the pool, when the attempt began.
    first_byte: Duration,
    idle: Duration,
    /// The upstream socket, once connected.
    fd: Option<RawFd>,
    /// Enforces `first_byte` and `idle` where Pingora's one read timeout
    /// cannot (see the watchdog's docs).
    watchdog: Option<Watchdog>,
}

impl Attempt {
    pub(super) fn new(
        upstream: Arc<Upstream>,
        slot: InFlightSlot,
        permit: CircuitPermit,
        timeouts: &Timeouts,
    ) -> Self {
        Attempt {
            upstream,
            _slot: slot,
            permit: Some(permit),
            first_byte: timeouts.first_byte,
            idle: timeouts.idle,
            fd: None,
            watchdog: None,
        }
    }

    /// Connected (or given a pooled connection). Most attempts need no
    /// watchdog yet: Pingora's read timeout, set to `first_byte`, covers
    /// the wait for the header, and the watchdog starts only for a streamed
    /// body. That saves a task and two system calls per request. Only when
    /// `idle` is longer than `first_byte` does the watchdog take the header
    /// too.
    pub(super) fn on_connected(&mut self, fd: RawFd) {
        self.stop_watching();
        self.fd = Some(fd);
        if self.idle > self.first_byte {
            self.watch(self.first_byte);
        }
    }

    /// The response header arrived: a streamed body (no length) is watched
    /// for silence from now on.
    pub(super) fn on_header(&mut self, streamed: bool) {
        match &self.watchdog {
            Some(dog) => dog.reset(self.idle),
            None if streamed => self.watch(self.idle),
            None => {}
        }
    }

    /// A chunk of a watched body arrived. At the end the watchdog stops
    /// before Pingora can return the connection to its pool, and the
    /// backend has served.
    pub(super) fn on_chunk(&mut self, end: bool) {
        let Some(dog) = &self.watchdog else { return };
        if end {
            self.stop_watching();
            self.finish(Verdict::Served);
        } else {
            dog.reset(self.idle);
        }
    }

    /// The backend's verdict; only the first one counts.
    pub(super) fn finish(&mut self, verdict: Verdict) {
        if let Some(permit) = self.permit.take() {
            match verdict {
                Verdict::Served => permit.success(),
                Verdict::Failed => permit.failure(),
            }
        }
    }

    /// The backend failed; returns whether this was the attempt's verdict
    /// (no other came first).
    pub(super) fn fail(&mut self) -> bool {
        let first = self.permit.is_some();
        self.finish(Verdict::Failed);
        first
    }

    /// Whether the watchdog cut the backend off (a timeout).
    pub(super) fn timed_out(&self) -> bool {
        self.watchdog.as_ref().is_some_and(|d| d.fired())
    }

    /// Stops the watchdog; the connection may be reused.
    pub(super) fn stop_watching(&mut self) {
        if let Some(dog) = self.watchdog.take() {
            dog.disarm();
        }
    }

    fn watch(&mut self, after: Duration) {
        let Some(fd) = self.fd else { return };
        match Watchdog::start(fd, after) {
            Ok(dog) => self.watchdog = Some(dog),
            Err(e) => log::warn!("cannot watch upstream socket: {e}"),
        }
    }
}

/// Why a connect failed.
pub(super) fn connect_failure(e: &Error) -> Reason {
    match e.etype() {
        ErrorType::ConnectRefused => Reason::ConnectRefused,
        ErrorType::ConnectTimedout => Reason::ConnectTimeout,
        _ => Reason::ConnectFailed,
    }
}

/// Why an attempt failed after it connected: a timeout (Pingora's read
/// timeout, or the watchdog's shutdown, `timed_out`) before the response
/// header or after it (`header`), or a connection that broke.
pub(super) fn proxy_failure(e: &Error, timed_out: bool, header: bool) -> Reason {
    let timeout = timed_out || *e.etype() == ErrorType::ReadTimedout;
    match (timeout, e.etype()) {
        (true, _) if header => Reason::IdleTimeout,
        (true, _) => Reason::FirstByteTimeout,
        (false, ErrorType::HTTPStatus(status)) => Reason::Status(*status),
        _ => Reason::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_named_by_what_went_wrong() {
        let e = |t| Error::new_up(t);
        assert_eq!(
            connect_failure(&e(ErrorType::ConnectRefused)),
            Reason::ConnectRefused
        );
        assert_eq!(
            connect_failure(&e(ErrorType::ConnectTimedout)),
            Reason::ConnectTimeout
        );
        assert_eq!(
            connect_failure(&e(ErrorType::ConnectNoRoute)),
            Reason::ConnectFailed
        );
        let read = e(ErrorType::ReadTimedout);
        assert_eq!(proxy_failure(&read, false, false), Reason::FirstByteTimeout);
        assert_eq!(proxy_failure(&read, false, true), Reason::IdleTimeout);
        let closed = e(ErrorType::ConnectionClosed);
        assert_eq!(proxy_failure(&closed, true, true), Reason::IdleTimeout);
        assert_eq!(proxy_failure(&closed, false, true), Reason::Closed);
        assert_eq!(
            proxy_failure(&e(ErrorType::HTTPStatus(503)), false, false),
            Reason::Status(503)
        );
    }
}
