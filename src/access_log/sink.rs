//! Where the lines go: standard output or a file opened for appending,
//! reopened on demand, and what happens when writing fails.
//!
//! A failure (a full disk, a missing directory, a file that cannot be
//! opened) is one episode: it is logged once at WARN when it begins and
//! once at INFO when it ends, with the lines it cost, not once per batch.
//! While it lasts, each batch is tried and, if it fails, dropped, so lines
//! are written again as soon as the disk allows.
//!
//! A reopen that fails keeps the file already open (logrotate's renamed
//! one, or the one before a reload changed the path): lines go on to a
//! file that exists rather than nowhere, and the new path is tried again
//! before each batch. Files are opened with `O_APPEND`, so each batch (one
//! `write`, whole lines) lands whole after whatever another process, such
//! as the old binary during an upgrade, appended to the same file.

use crate::config::LogPath;
use log::{info, warn};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;
use tokio::time::Instant;

/// How often a file that cannot be opened is tried again while batches
/// keep coming: often enough that lines flow again within a second of the
/// directory's return, rarely enough to cost nothing.
const RETRY_OPEN: Duration = Duration::from_secs(1);

/// Access logs name clients: readable by the service's group (a log
/// shipper), not by everyone.
const FILE_MODE: u32 = 0o640;

/// The destination of the lines.
pub(super) struct Sink {
    /// Where lines should go; `None` when the access log is off.
    path: Option<LogPath>,
    /// Where they go now; may be an older file than `path` says.
    out: Option<Out>,
    /// `out` is not (or not yet) `path`: open `path` before the next batch.
    stale: bool,
    /// No earlier than this is a failed open tried again.
    next_open: Option<Instant>,
    /// The failure being lived through, if any.
    episode: Option<Episode>,
    /// A write failed part-way through a line: the next batch starts with
    /// a newline, so the fragment is a line of its own and the next line
    /// is whole.
    torn: bool,
}

enum Out {
    Stdout,
    File(File),
}

/// A failure that has been logged once and has not ended.
struct Episode {
    /// Lines dropped since it began.
    dropped: u64,
}

impl Sink {
    pub(super) fn new(path: Option<LogPath>) -> Self {
        Sink {
            stale: path.is_some(),
            path,
            out: None,
            next_open: None,
            episode: None,
            torn: false,
        }
    }

    pub(super) fn path(&self) -> Option<&LogPath> {
        self.path.as_ref()
    }

    /// Sends lines to `path` from now on (`None`: nowhere).
    pub(super) fn set_path(&mut self, path: Option<LogPath>) {
        if path.is_none() {
            self.out = None;
            self.episode = None;
        }
        self.path = path;
        self.reopen();
    }

    /// Opens the path again, for a file that was renamed or moved: new
    /// lines go to a new file of the configured name.
    pub(super) fn reopen(&mut self) {
        self.stale = self.path.is_some();
        self.next_open = None;
        self.open_if_stale();
    }

    /// Writes a batch of `lines` whole lines; returns how many were
    /// dropped.
    pub(super) fn write(&mut self, batch: &[u8], lines: usize) -> usize {
        self.open_if_stale();
        let Some(out) = &mut self.out else {
            // With no path, these are lines that raced the log being
            // turned off: lost, but no failure to report.
            if self.path.is_some() {
                self.dropped(lines);
            }
            return lines;
        };
        let mut written = 0;
        let result = if std::mem::take(&mut self.torn) {
            write_all(out, b"\n", &mut 0).and_then(|()| write_all(out, batch, &mut written))
        } else {
            write_all(out, batch, &mut written)
        };
        match result {
            Ok(()) => {
                if let Some(episode) = self.episode.take() {
                    info!(
                        "access log: writing to {} again; {} lines were dropped",
                        self.shown(),
                        episode.dropped
                    );
                }
                0
            }
            Err(e) => {
                // Lines written whole before the failure are kept.
                let kept = memchr::memchr_iter(b'\n', &batch[..written]).count();
                self.torn = written > 0 && batch[written - 1] != b'\n';
                let lost = lines - kept;
                if self.episode.is_none() {
                    warn!(
                        "access log: cannot write to {}: {e}; dropping lines until it can",
                        self.shown()
                    );
                }
                self.dropped(lost);
                lost
            }
        }
    }

    /// Opens `path` if `out` is not it, at most every [`RETRY_OPEN`] after
    /// a failure. On failure the old `out`, if any, is kept.
    fn open_if_stale(&mut self) {
        if !self.stale || self.next_open.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let Some(path) = &self.path else { return };
        match open(path) {
            Ok(out) => {
                let was_open = self.out.is_some();
                self.out = Some(out);
                self.stale = false;
                self.next_open = None;
                match self.episode.take() {
                    Some(episode) => info!(
                        "access log: writing to {path} again; {} lines were dropped",
                        episode.dropped
                    ),
                    None if was_open => info!("access log: reopened {path}"),
                    None => info!("access log: writing to {path}"),
                }
            }
            Err(e) => {
                self.next_open = Instant::now().checked_add(RETRY_OPEN);
                if self.episode.is_none() {
                    let fallback = if self.out.is_some() {
                        "still writing to the file open before"
                    } else {
                        "dropping lines until it can be opened"
                    };
                    warn!("access log: cannot open {path}: {e}; {fallback}");
                    self.episode = Some(Episode { dropped: 0 });
                }
            }
        }
    }

    fn dropped(&mut self, lines: usize) {
        self.episode.get_or_insert(Episode { dropped: 0 }).dropped += lines as u64;
    }

    fn shown(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "nowhere".into(), |p| p.to_string())
    }
}

fn open(path: &LogPath) -> io::Result<Out> {
    match path {
        LogPath::Stdout => Ok(Out::Stdout),
        LogPath::File(file) => OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(file)
            .map(Out::File),
    }
}

/// `write_all`, counting in `written` what reached the destination.
fn write_all(out: &mut Out, mut bytes: &[u8], written: &mut usize) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = match out {
            Out::File(f) => f.write(bytes),
            Out::Stdout => io::stdout().lock().write(bytes),
        };
        match n {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *written += n;
                bytes = &bytes[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if let Out::Stdout = out {
        io::stdout().lock().flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &std::path::Path) -> Option<LogPath> {
        Some(LogPath::File(path.to_path_buf()))
    }

    #[test]
    fn writes_append_and_a_reopen_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut sink = Sink::new(file(&path));
        assert_eq!(sink.write(b"1\n2\n", 2), 0);
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        assert_eq!(sink.write(b"3\n", 1), 0, "still the renamed file");
        sink.reopen();
        assert_eq!(sink.write(b"4\n", 1), 0);
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("access.log.1"), "1\n2\n3\n");
        assert_eq!(read("access.log"), "4\n");
    }

    #[test]
    fn a_full_device_drops_every_line_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = Sink::new(file(std::path::Path::new("/dev/full")));
        assert_eq!(sink.write(b"1\n2\n", 2), 2);
        assert_eq!(sink.write(b"3\n", 1), 1);
        assert_eq!(sink.episode.as_ref().map(|e| e.dropped), Some(3));
        sink.set_path(file(&dir.path().join("a.log")));
        assert!(sink.episode.is_none(), "the episode ends with a good open");
        assert_eq!(sink.write(b"4\n", 1), 0);
    }

    #[test]
    fn a_missing_directory_drops_lines_and_a_failed_reopen_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone/a.log");
        let mut sink = Sink::new(file(&missing));
        assert_eq!(sink.write(b"1\n", 1), 1, "nothing to write to");
        let good = dir.path().join("a.log");
        sink.set_path(file(&good));
        assert_eq!(sink.write(b"2\n", 1), 0);
        sink.set_path(file(&missing));
        assert_eq!(sink.write(b"3\n", 1), 0, "the old file takes it");
        assert_eq!(std::fs::read_to_string(&good).unwrap(), "2\n3\n");
        std::fs::create_dir(dir.path().join("gone")).unwrap();
        sink.next_open = None;
        assert_eq!(sink.write(b"4\n", 1), 0);
        assert_eq!(std::fs::read_to_string(&missing).unwrap(), "4\n");
    }
}
