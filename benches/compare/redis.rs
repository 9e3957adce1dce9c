//! The Redis of workload 10: a `redis-server` started for the run on a free
//! loopback port, with nothing written to disk, and Redis's own round trip
//! (`PING` on a connection of the harness's) timed beside the proxy's load,
//! so the time the limit store adds to a request can be read next to what
//! one round trip to it costs on the same machine at the same moment.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

use crate::process::{find_program, free_port, Server};
use crate::samples::Latencies;

/// A `PING` this often while the proxy is under load: often enough for a
/// p99 over a 5 s window (2,500 samples), seldom enough to add nothing
/// measurable to Redis's load.
const PING_EVERY: Duration = Duration::from_millis(2);

/// `redis-server` on 127.0.0.1. Dropping it stops it.
pub struct RedisServer {
    pub addr: SocketAddr,
    _server: Server,
}

impl RedisServer {
    /// Starts `redis-server` on `cpus` (a `taskset` list, if pinning)
    /// without persistence. `Err` says why workload 10's Redis rows are
    /// skipped.
    pub fn start(dir: &Path, cpus: Option<&str>) -> Result<RedisServer, String> {
        let program = find_program("redis-server")
            .ok_or("redis-server is not installed (apt-get install -y redis-server)")?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let addr = free_port()?;
        let args = [
            "--port",
            &addr.port().to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let server = Server::start(addr, (program, args, dir.join("redis.log")), cpus)?;
        Ok(RedisServer {
            addr,
            _server: server,
        })
    }

    /// Times a `PING` every [`PING_EVERY`] from `from` until `until`, on
    /// one connection; an error ends the sampling with what it has.
    pub async fn ping_rtt(&self, from: Instant, until: Instant) -> Latencies {
        let mut out = Latencies::default();
        let Ok(mut conn) = TcpStream::connect(self.addr).await else {
            return out;
        };
        let _ = conn.set_nodelay(true);
        let mut buf = [0u8; 16];
        while Instant::now() < until {
            let sent = Instant::now();
            if conn.write_all(b"PING\r\n").await.is_err() {
                break;
            }
            // `+PONG\r\n`, seven bytes, usually in one read.
            let mut got = 0;
            while got < 7 {
                match conn.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => return out,
                    Ok(n) => got += n,
                }
            }
            if sent >= from {
                out.push(sent.elapsed());
            }
            sleep(PING_EVERY).await;
        }
        out
    }
}
