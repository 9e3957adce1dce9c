//! The lines waiting to be written, bounded in lines and in bytes.
//!
//! Requests append here and never wait: a line that does not fit is
//! refused, for the caller to count, so a disk that is slow or full costs
//! lines rather than latency. The writer takes everything at once by
//! swapping its empty buffer for the full one, so the lock is held for a
//! copy of one line or a swap of two pointers, never for a write.
//!
//! The writer is woken only when it needs to be: for the first line after
//! it found nothing to write (so a quiet proxy's lines are written at
//! once), and when the buffer is half full (so a busy one's are written
//! before it fills). Otherwise it collects a batch on a timer, and a busy
//! proxy's requests never pay for waking it.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Why a line was not taken, or whether the writer must be woken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Queued; the writer will find it.
    Queued,
    /// Queued; wake the writer.
    Wake,
    /// Refused: the buffer is full.
    Dropped,
}

/// Lines not yet written.
pub(super) struct Buffer {
    pending: Mutex<Pending>,
    max_lines: usize,
    max_bytes: usize,
}

struct Pending {
    /// Whole lines, each ending with a newline.
    bytes: Vec<u8>,
    lines: usize,
    /// The writer found nothing last time and waits to be woken.
    idle: bool,
    /// The writer was woken for a buffer half full and has not taken it
    /// yet: the lines after it need not wake it again.
    urged: bool,
}

impl Buffer {
    pub(super) fn new(max_lines: usize, max_bytes: usize) -> Self {
        Buffer {
            pending: Mutex::new(Pending {
                bytes: Vec::new(),
                lines: 0,
                idle: true,
                urged: false,
            }),
            max_lines,
            max_bytes,
        }
    }

    /// Appends `line` (newline included) if it fits.
    pub(super) fn push(&self, line: &[u8]) -> Pushed {
        let mut p = self.lock();
        if p.lines >= self.max_lines || p.bytes.len() + line.len() > self.max_bytes {
            return Pushed::Dropped;
        }
        p.bytes.extend_from_slice(line);
        p.lines += 1;
        let half = p.lines * 2 >= self.max_lines || p.bytes.len() * 2 >= self.max_bytes;
        if p.idle || (half && !p.urged) {
            p.idle = false;
            p.urged |= half;
            Pushed::Wake
        } else {
            Pushed::Queued
        }
    }

    /// Moves every pending line into `batch`, which must be empty (its
    /// capacity is kept for the next lines), and returns how many there
    /// were. With none, the writer is idle: the next line wakes it.
    pub(super) fn take(&self, batch: &mut Vec<u8>) -> usize {
        debug_assert!(batch.is_empty());
        let mut p = self.lock();
        if p.lines == 0 {
            p.idle = true;
            return 0;
        }
        std::mem::swap(&mut p.bytes, batch);
        p.urged = false;
        std::mem::take(&mut p.lines)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics while holding it; if something did, the lines are
        // still whole lines.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_in_lines_or_in_bytes_refuses_and_taking_makes_room() {
        let b = Buffer::new(3, 1000);
        assert_eq!(b.push(b"a\n"), Pushed::Wake, "the writer starts idle");
        assert_eq!(b.push(b"b\n"), Pushed::Wake, "half of 3 lines");
        assert_eq!(b.push(b"c\n"), Pushed::Queued, "already urged");
        assert_eq!(b.push(b"d\n"), Pushed::Dropped, "3 lines at most");
        let mut batch = Vec::new();
        assert_eq!(b.take(&mut batch), 3);
        assert_eq!(batch, b"a\nb\nc\n");
        assert_eq!(
            b.push(b"e\n"),
            Pushed::Queued,
            "the writer is busy, not idle"
        );

        let b = Buffer::new(100, 10);
        assert_eq!(b.push(b"0123\n"), Pushed::Wake);
        assert_eq!(b.push(b"4567\n"), Pushed::Queued);
        assert_eq!(b.push(b"x\n"), Pushed::Dropped, "10 bytes at most");
        batch.clear();
        assert_eq!(b.take(&mut batch), 2);
        assert_eq!(batch, b"0123\n4567\n");
        // A line longer than the whole buffer never fits.
        assert_eq!(b.push(b"0123456789\n"), Pushed::Dropped);
    }

    #[test]
    fn an_empty_take_leaves_the_writer_waiting_for_a_wake() {
        let b = Buffer::new(100, 1000);
        let mut batch = Vec::new();
        assert_eq!(b.push(b"a\n"), Pushed::Wake);
        assert_eq!(b.push(b"b\n"), Pushed::Queued);
        assert_eq!(b.take(&mut batch), 2);
        batch.clear();
        assert_eq!(b.push(b"c\n"), Pushed::Queued, "taken on the next tick");
        assert_eq!(b.take(&mut batch), 1);
        batch.clear();
        assert_eq!(b.take(&mut batch), 0);
        assert_eq!(b.push(b"d\n"), Pushed::Wake, "idle after an empty take");
    }
}
