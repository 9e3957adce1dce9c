//! Response timeouts that Pingora cannot express: the wait for the first
//! byte and the silence allowed between two body chunks.
//!
//! Pingora has one `read_timeout` for every read of an upstream response, so
//! `first_byte: 300s` and `idle: 60s` cannot both hold through it. Instead a
//! [`Watchdog`] watches the upstream socket's descriptor and, when its
//! deadline passes, shuts the socket down. The proxy's pending read then
//! fails at once, and the request ends as a timeout.
//!
//! The descriptor stays Pingora's: duplicating it would cost a third file
//! descriptor per open stream. Before shutting down, the watchdog checks
//! that the descriptor still names the same connection (its local and peer
//! addresses), so a number reused by another connection is never touched.
//! The watchdog is disarmed before the connection can return to the
//! keep-alive pool.
//!
//! It measures the backend's silence only. When a client reads its stream
//! slowly, Pingora stops reading the backend until the client catches up,
//! and no chunk arrives although the backend is sending: the deadline
//! passes with the backend's bytes waiting unread in the socket. The
//! watchdog looks (`FIONREAD`) before firing and, finding bytes there,
//! grants another period instead: a slow client is its own timeout's
//! business (`server.timeouts.client_send`), never the backend's fault.

use std::mem::ManuallyDrop;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the watchdog and its owner share.
struct Shared {
    /// When the deadline was last set, as milliseconds since `base`;
    /// `u64::MAX` when disarmed.
    deadline_ms: AtomicU64,
    base: Instant,
    /// Set once the watchdog has shut the socket down.
    fired: AtomicBool,
    /// The deadline the task is sleeping towards, in the same unit. A reset
    /// to an earlier time must wake it; a later one (every body chunk) need
    /// not, which keeps the per-chunk cost to two atomic operations.
    sleeping_until_ms: AtomicU64,
    /// The last allowance given (`start`'s or `reset`'s), in milliseconds:
    /// what a deadline is extended by while the backend's bytes wait unread.
    period_ms: AtomicU64,
    wake: Notify,
}

/// A TCP connection's local and peer address: no two open connections share
/// them.
type Identity = (std::net::SocketAddr, std::net::SocketAddr);

/// Runs `f` on the socket behind `fd` without taking ownership of it.
fn with_socket<R>(fd: RawFd, f: impl FnOnce(&TcpStream) -> R) -> R {
    // SAFETY: the `TcpStream` is never dropped, so the descriptor is not
    // closed here; the calls made through it (getsockname, getpeername,
    // shutdown) fail harmlessly on a descriptor that is not a socket.
    let socket = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    f(&socket)
}

fn identity_of(fd: RawFd) -> std::io::Result<Identity> {
    with_socket(fd, |s| Ok((s.local_addr()?, s.peer_addr()?)))
}

/// Whether the socket behind `fd` holds received bytes nobody has read.
fn has_unread(fd: RawFd) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int; on a descriptor that is not a socket
    // it fails and `n` stays 0.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    rc == 0 && n > 0
}

/// Milliseconds, saturated below the "disarmed" marker.
fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128 - 1) as u64
}

impl Shared {
    /// `after` from now, in the unit of `deadline_ms`.
    fn ms_after(&self, after: Duration) -> u64 {
        millis((Instant::now() - self.base).saturating_add(after))
    }
}

/// Shuts an upstream socket down when a deadline passes.
pub struct Watchdog {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Watchdog {
    /// Watches the socket behind `fd` (which stays owned by Pingora) and
    /// fires if `first` passes before the next [`Watchdog::reset`].
    pub fn start(fd: RawFd, first: Duration) -> std::io::Result<Watchdog> {
        let identity = identity_of(fd)?;
        let base = Instant::now();
        let shared = Arc::new(Shared {
            deadline_ms: AtomicU64::new(millis(first)),
            base,
            fired: AtomicBool::new(false),
            sleeping_until_ms: AtomicU64::new(u64::MAX),
            period_ms: AtomicU64::new(millis(first)),
            wake: Notify::new(),
        });
        let watchdog_shared = shared.clone();
        let task = tokio::spawn(async move {
            let shared = watchdog_shared;
            loop {
                let deadline = shared.deadline_ms.load(Ordering::Acquire);
                if deadline == u64::MAX {
                    // Disarmed for good: drop the duplicate now.
                    return;
                }
                let Some(at) = shared.base.checked_add(Duration::from_millis(deadline)) else {
                    return;
                };
                if Instant::now() >= at {
                    if has_unread(fd) {
                        // Not silence: the proxy has not read what came.
                        let period =
                            Duration::from_millis(shared.period_ms.load(Ordering::Acquire));
                        let next = shared.ms_after(period);
                        let _ = shared.deadline_ms.compare_exchange(
                            deadline,
                            next,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        continue;
                    }
                    if identity_of(fd).is_ok_and(|now| now == identity) {
                        shared.fired.store(true, Ordering::Release);
                        with_socket(fd, |s| s.shutdown(Shutdown::Both)).ok();
                    }
                    return;
                }
                shared.sleeping_until_ms.store(deadline, Ordering::Release);
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shared.wake.notified() => {}
                }
            }
        });
        Ok(Watchdog { shared, task })
    }

    /// Moves the deadline to `after` from now.
    pub fn reset(&self, after: Duration) {
        self.shared
            .period_ms
            .store(millis(after), Ordering::Release);
        let ms = self.shared.ms_after(after);
        self.shared.deadline_ms.store(ms, Ordering::Release);
        if ms < self.shared.sleeping_until_ms.load(Ordering::Acquire) {
            // `notify_one` keeps a permit if the task is not waiting yet.
            self.shared.wake.notify_one();
        }
    }

    /// Stops watching; the connection may now be reused.
    pub fn disarm(&self) {
        self.shared.deadline_ms.store(u64::MAX, Ordering::Release);
        self.task.abort();
    }

    /// Whether the deadline passed and the socket was shut down.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::Acquire)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use tokio::io::AsyncReadExt;

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn fires_on_silence_and_ends_the_read() {
        let (mut client, _server) = pair().await;
        let dog = Watchdog::start(client.as_raw_fd(), Duration::from_millis(50)).unwrap();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the read ends: {read:?}"
        );
        assert!(dog.fired());
    }

    #[tokio::test]
    async fn an_earlier_deadline_takes_effect() {
        let (mut client, _server) = pair().await;
        let dog = Watchdog::start(client.as_raw_fd(), Duration::from_secs(30)).unwrap();
        tokio::task::yield_now().await;
        dog.reset(Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await;
        assert!(read.is_ok(), "fired at the new, earlier deadline");
        assert!(dog.fired());
    }

    #[tokio::test]
    async fn a_reused_descriptor_is_left_alone() {
        use tokio::io::AsyncWriteExt;
        let (client, _server) = pair().await;
        let fd = client.as_raw_fd();
        let dog = Watchdog::start(fd, Duration::from_millis(100)).unwrap();
        drop(client);
        // The next socket very likely gets the same number.
        let (mut other, mut other_server) = pair().await;
        let reused = other.as_raw_fd() == fd;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !dog.fired(),
            "fired on another connection (same number: {reused})"
        );
        other_server.write_all(b"ok").await.unwrap();
        let mut buf = [0u8; 2];
        other.read_exact(&mut buf).await.unwrap();
    }

    #[tokio::test]
    async fn unread_bytes_are_not_silence() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = pair().await;
        // The peer has sent, the owner is not reading (a slow client
        // downstream): the deadline passes several times over.
        server.write_all(b"pending").await.unwrap();
        let dog = Watchdog::start(client.as_raw_fd(), Duration::from_millis(30)).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!dog.fired(), "fired with the backend's bytes unread");
        // Once read, silence counts again.
        let mut buf = [0u8; 7];
        client.read_exact(&mut buf).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        assert!(dog.fired());
    }

    #[tokio::test]
    async fn reset_and_disarm_keep_the_socket() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = pair().await;
        let dog = Watchdog::start(client.as_raw_fd(), Duration::from_millis(200)).unwrap();
        dog.reset(Duration::from_secs(30));
        dog.disarm();
        server.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        client.read_exact(&mut buf).await.unwrap();
        assert!(!dog.fired());
    }
}
