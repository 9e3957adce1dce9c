//! Response timeouts that Pingora cannot express: the wait for the first
//! byte and the silence allowed between two body chunks.
//!
//! Pingora has one `read_timeout` for every read of an upstream response, so
//! `first_byte: 300s` and `idle: 60s` cannot both hold through it. Instead a
//! [`Watchdog`] holds a duplicate of the upstream socket's descriptor and,
//! when its deadline passes, shuts the socket down. The proxy's pending read
//! then fails at once, and the request ends as a timeout. The duplicate
//! keeps the socket alive, so the shutdown can never reach a different
//! connection that reused the descriptor number; the watchdog is disarmed
//! before the connection can return to the keep-alive pool.

use std::net::{Shutdown, TcpStream};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
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
        // SAFETY: `fd` is the live upstream socket Pingora just handed to
        // `connected_to_upstream`; it is only borrowed long enough to dup it.
        let owned: OwnedFd = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        let socket = TcpStream::from(owned);
        let shared = Arc::new(Shared {
            deadline_ms: AtomicU64::new(0),
            base: Instant::now(),
            fired: AtomicBool::new(false),
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
                let at = shared.base + Duration::from_millis(deadline);
                if Instant::now() >= at {
                    shared.fired.store(true, Ordering::Release);
                    let _ = socket.shutdown(Shutdown::Both);
                    return;
                }
                tokio::time::sleep_until(at).await;
            }
        });
        let dog = Watchdog { shared, task };
        dog.reset(first);
        Ok(dog)
    }

    /// Moves the deadline to `after` from now.
    pub fn reset(&self, after: Duration) {
        let ms = (Instant::now() - self.shared.base + after).as_millis() as u64;
        self.shared
            .deadline_ms
            .store(ms.min(u64::MAX - 1), Ordering::Release);
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
