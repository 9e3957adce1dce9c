//! The access log: one JSON line per request, written off the request path.
//!
//! A request's last hook builds its [`Entry`], writes it as a line and
//! hands the line to the [`AccessLog`]'s bounded buffer; that is all a
//! request ever does here, and it never waits. The writer
//! (`background::access_log`) takes the buffer's lines in batches and
//! writes each with one `write`. When the disk cannot keep up, or refuses,
//! lines are dropped and counted (`Metrics::access_log_dropped`), and the
//! failure is logged once, not per line.
//!
//! A reload applies `access_log:` at once (on, off, another path) and
//! reopens the file; SIGUSR1 reopens it, for logrotate. At exit, what is
//! still buffered is written before the process ends.
//!
//! # Layout
//! - [`entry`]: a request's line: its fields and their JSON.
//! - [`buffer`]: the lines waiting for the writer, bounded.
//! - [`sink`]: stdout or the file, reopening, and write failures.

pub mod entry;

mod buffer;
mod sink;

pub use entry::{Entry, Failure, Reason};

use crate::config::AccessLogSpec;
use crate::metrics::Metrics;
use buffer::{Buffer, Pushed};
use log::{info, warn};
use sink::Sink;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Lines held for the writer at most. At the highest rate one core of
/// Switchyard serves (about 35,000 requests a second), about a second of
/// requests: a disk that stalls for less loses nothing.
pub const MAX_PENDING_LINES: usize = 32 * 1024;

/// Bytes held for the writer at most: the bound on the buffer's memory
/// (and as much again for the batch being written) when lines are long,
/// as a path may be up to `server.max_header_size`. A typical line is
/// 400 to 500 bytes, so the line count is usually the limit.
pub const MAX_PENDING_BYTES: usize = 16 << 20;

/// Room reserved for a line before writing it: most fit without growing.
const LINE_CAPACITY: usize = 512;

/// How long the last lines at exit wait for a write under way: longer
/// than any write to a disk that works, short enough not to hold up a
/// stop or an upgrade.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The batch's capacity kept after a write. A stall can grow the buffer
/// to [`MAX_PENDING_BYTES`]; once it has passed, the memory is given back
/// down to a batch of a busy tenth of a second.
const RETAINED: usize = 4 << 20;

/// The access log of a running server, shared by the proxy (which adds
/// lines), the writer (which writes them), the reload (which changes the
/// destination) and the drain (which writes the last lines at exit).
pub struct AccessLog {
    /// Whether requests write lines: `access_log:` is configured.
    on: AtomicBool,
    buffer: Buffer,
    /// Wakes the writer: see [`buffer`] for when.
    wake: Notify,
    /// The destination, and the batch being written. Held by whoever
    /// writes, never by a request.
    out: Mutex<Out>,
    /// Counts the lines dropped.
    metrics: Arc<Metrics>,
    /// Lines refused by a full buffer since the writer last looked: the
    /// writer, not the request, says so in the log.
    overflowed: AtomicU64,
}

struct Out {
    sink: Sink,
    /// The batch being written; its capacity is kept from one to the next.
    batch: Vec<u8>,
    /// Lines are coming faster than they are written, and it was said.
    behind: bool,
}

impl AccessLog {
    /// The access log `spec` asks for (`None`: off until a reload turns it
    /// on). Nothing is opened until the writer starts.
    pub fn new(spec: Option<&AccessLogSpec>, metrics: Arc<Metrics>) -> Self {
        AccessLog {
            on: AtomicBool::new(spec.is_some()),
            buffer: Buffer::new(MAX_PENDING_LINES, MAX_PENDING_BYTES),
            wake: Notify::new(),
            out: Mutex::new(Out {
                sink: Sink::new(spec.map(|s| s.path.clone())),
                batch: Vec::new(),
                behind: false,
            }),
            metrics,
            overflowed: AtomicU64::new(0),
        }
    }

    /// An access log with counters of its own, for benchmarks.
    pub fn detached(spec: Option<&AccessLogSpec>) -> Self {
        AccessLog::new(spec, Arc::new(Metrics::default()))
    }

    /// Whether requests should build their lines at all.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Adds the line of a finished request. Never waits on the writer: a
    /// line that does not fit in the buffer is dropped and counted.
    pub fn record(&self, entry: &Entry) {
        if !self.is_on() {
            return;
        }
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        entry.write_line(&mut line);
        match self.buffer.push(&line) {
            Pushed::Queued => {}
            Pushed::Wake => self.wake.notify_one(),
            Pushed::Dropped => {
                self.metrics.access_log_dropped.inc();
                self.overflowed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Applies `access_log:` of a reloaded configuration: the lines so far
    /// go where they were going, then the file is reopened, at its new
    /// path if it changed.
    pub fn configure(&self, spec: Option<&AccessLogSpec>) {
        let path = spec.map(|s| s.path.clone());
        if path.is_none() {
            self.on.store(false, Ordering::Relaxed);
        }
        let mut out = self.lock();
        self.write_pending(&mut out);
        let was = out.sink.path().cloned();
        if was == path {
            out.sink.reopen();
        } else {
            match (&was, &path) {
                (Some(was), None) => info!("access log: off (was {was})"),
                (Some(was), Some(now)) => info!("access log: moving from {was} to {now}"),
                _ => {}
            }
            out.sink.set_path(path.clone());
        }
        drop(out);
        if path.is_some() {
            self.on.store(true, Ordering::Relaxed);
        }
    }

    /// Opens the file again at its configured path: after logrotate
    /// renamed it (SIGUSR1), and at the writer's start.
    pub fn reopen(&self) {
        let mut out = self.lock();
        self.write_pending(&mut out);
        out.sink.reopen();
    }

    /// Writes what is buffered. Returns whether there was anything; when
    /// not, the next line wakes the writer ([`AccessLog::woken`]).
    pub fn flush(&self) -> bool {
        let mut out = self.lock();
        self.write_pending(&mut out)
    }

    /// Writes what is buffered and says how many lines were lost since
    /// start, if any: the last thing before the process exits. A writer
    /// stuck in a write (a disk or network file system that does not
    /// answer) is waited for [`CLOSE_WAIT`] at most, so that it cannot
    /// hold the process up; what is buffered is then lost, and counted.
    pub fn close(&self) {
        self.flush_within(CLOSE_WAIT);
        let dropped = self.metrics.access_log_dropped.get();
        if dropped > 0 {
            warn!("access log: {dropped} lines were dropped since start");
        }
    }

    /// Writes what is buffered unless a write already under way does not
    /// end within `wait`; then drops what is buffered, and says so.
    pub fn flush_within(&self, wait: Duration) {
        let began = Instant::now();
        loop {
            match self.out.try_lock() {
                Ok(mut out) => {
                    self.write_pending(&mut out);
                    return;
                }
                Err(TryLockError::Poisoned(p)) => {
                    self.write_pending(&mut p.into_inner());
                    return;
                }
                Err(TryLockError::WouldBlock) if began.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => break,
            }
        }
        let lost = self.buffer.take(&mut Vec::new());
        self.metrics.access_log_dropped.inc_by(lost as u64);
        warn!(
            "access log: a write has not returned for {wait:?}; \
             {lost} buffered lines are lost"
        );
    }

    /// Resolves when the writer is wanted before its next round: the first
    /// line after an idle spell, or a buffer half full.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    fn write_pending(&self, out: &mut Out) -> bool {
        let Out {
            sink,
            batch,
            behind,
        } = out;
        let lines = self.buffer.take(batch);
        // A full buffer is an episode too, logged once when it begins and
        // once when it ends.
        let overflowed = self.overflowed.swap(0, Ordering::Relaxed);
        match (overflowed > 0, *behind) {
            (true, false) => warn!(
                "access log: lines come faster than {} takes them; \
                 dropping what the buffer cannot hold ({MAX_PENDING_LINES} lines)",
                sink.path()
                    .map_or_else(|| "nowhere".into(), |p| p.to_string())
            ),
            (false, true) => info!("access log: keeping up again"),
            _ => {}
        }
        *behind = overflowed > 0;
        if lines == 0 {
            return false;
        }
        let dropped = sink.write(batch, lines);
        self.metrics.access_log_dropped.inc_by(dropped as u64);
        batch.clear();
        if batch.capacity() > RETAINED {
            batch.shrink_to(RETAINED);
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogFormat, LogPath};
    use std::time::SystemTime;

    fn spec(path: &std::path::Path) -> AccessLogSpec {
        AccessLogSpec {
            path: LogPath::File(path.to_path_buf()),
            format: LogFormat::Json,
        }
    }

    fn entry(path: &str) -> Entry<'_> {
        Entry {
            time: SystemTime::now(),
            request_id: None,
            client: None,
            key: None,
            method: "GET",
            path,
            status: 200,
            pool: None,
            backend: None,
            model: None,
            served_model: None,
            attempts: 0,
            failures: &[],
            queue: Duration::ZERO,
            ttft: None,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
            prompt_tokens: None,
            completion_tokens: None,
            tokens_estimated: false,
            error: None,
        }
    }

    fn paths_in(file: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
            .collect()
    }

    #[test]
    fn lines_reach_the_file_and_follow_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        let log = AccessLog::detached(Some(&spec(&a)));
        log.record(&entry("/1"));
        log.record(&entry("/2"));
        assert!(log.flush());
        assert!(!log.flush(), "nothing left");
        log.record(&entry("/3"));
        log.configure(Some(&spec(&b)));
        log.record(&entry("/4"));
        log.close();
        assert_eq!(paths_in(&a), ["\"/1\"", "\"/2\"", "\"/3\""]);
        assert_eq!(paths_in(&b), ["\"/4\""]);
        log.configure(None);
        assert!(!log.is_on());
        log.record(&entry("/5"));
        assert!(!log.flush(), "off: nothing is kept");
    }

    #[test]
    fn a_full_buffer_or_a_full_disk_counts_what_it_drops() {
        let metrics = Arc::new(Metrics::default());
        let log = AccessLog::new(Some(&spec("/dev/full".as_ref())), metrics.clone());
        for _ in 0..MAX_PENDING_LINES + 5 {
            log.record(&entry("/"));
        }
        assert_eq!(metrics.access_log_dropped.get(), 5, "past the cap");
        log.flush();
        assert!(log.lock().behind, "said once");
        assert_eq!(
            metrics.access_log_dropped.get(),
            MAX_PENDING_LINES as u64 + 5,
            "every write fails on /dev/full"
        );
    }
}

#[cfg(test)]
mod close_tests {
    use super::*;
    use crate::config::{LogFormat, LogPath};

    #[test]
    fn a_stuck_writer_does_not_hold_up_the_exit() {
        let metrics = Arc::new(Metrics::default());
        let spec = AccessLogSpec {
            path: LogPath::File("/dev/null".into()),
            format: LogFormat::Json,
        };
        let log = AccessLog::new(Some(&spec), metrics.clone());
        assert_eq!(log.buffer.push(b"{}\n"), Pushed::Wake);
        let stuck = log.lock();
        let began = std::time::Instant::now();
        log.flush_within(Duration::from_millis(50));
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!(metrics.access_log_dropped.get(), 1, "the buffered line");
        drop(stuck);
    }
}
