//! `server:`: the process (listeners, threads, files, shutdown) and the
//! limits on clients (timeouts, header and body sizes, connections).

use super::Errors;
use crate::config::model::{AddressRules, ClientTimeouts, ServerSettings, TrustedProxies};
use crate::config::raw::{RawClientTimeouts, RawListen, RawServer};
use crate::tls::TlsListener;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

/// Loopback, so that a fresh install serves nobody else until the operator
/// writes the address to expose.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Worker threads. More than 1024 is a typo, not a machine: each thread is a
/// runtime with its own connections and upstream pool.
pub const THREADS: RangeInclusive<usize> = 1..=1024;

/// The directory systemd's `RuntimeDirectory=switchyard` creates when the
/// service starts; the default PID file and upgrade socket live in it.
pub const RUNTIME_DIR: &str = "/run/switchyard";

/// In [`RUNTIME_DIR`], where systemd's `PIDFile=` looks for it.
pub const DEFAULT_PID_FILE: &str = "/run/switchyard/switchyard.pid";

/// In [`RUNTIME_DIR`], private to the service user.
pub const DEFAULT_UPGRADE_SOCK: &str = "/run/switchyard/upgrade.sock";

/// Long enough for most generations in flight to finish on a stop or an
/// upgrade; systemd's `TimeoutStopSec=90s` leaves room for it.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(60);

/// `0s` stops at once. An hour is longer than any single generation, and a
/// stop or upgrade that hangs longer than that looks like a hung service.
pub const GRACE_PERIOD: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);

/// Pingora's runtimes stop in well under a second when nothing is left in
/// flight; 5s is slack for a slow machine.
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Pingora counts this in whole seconds, so less than 1s is 1s anyway; a
/// runtime that has not stopped in 5 minutes will not.
pub const GRACEFUL_SHUTDOWN_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(300);

/// Enough idle connections per worker thread for a fleet of a few dozen
/// backends under load, so requests rarely wait on a new TCP connection.
pub const DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE: usize = 1024;

/// Pingora multiplies this by `threads` and preallocates a table of that
/// many entries (16 bytes each, plus hash-table slack): at 4096 and the
/// largest `threads`, about 100 MB, as far as a typo should reach. `0`
/// keeps no idle connection.
pub const UPSTREAM_KEEPALIVE_POOL_SIZE: RangeInclusive<usize> = 0..=4096;

/// Room for a long conversation with its system prompt, or a few images in
/// base64, while bounding the memory a request can take.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 32 << 20;

/// A body read to find its model is held in memory whole, once per request
/// in flight, so this times the concurrent requests is memory. 1 GiB is far
/// above any prompt (a million tokens of text are a few MiB); less than 1 KiB
/// refuses ordinary chat requests.
pub const MAX_REQUEST_BODY: RangeInclusive<usize> = 1 << 10..=1 << 30;

/// From the accept (or from the first byte of a kept-alive connection's
/// next request) to the end of the request header. A client on any network
/// sends a header in well under a second; 30s only cuts off the ones that
/// hold connections open on purpose.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest silence between two reads of a request body: a client uploading
/// a large body over a slow link still sends something every minute.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest a write to the client may make no progress, like nginx's
/// `send_timeout` (also 60s): a client that reads nothing for a minute has
/// gone, and its stream holds a backend slot.
pub const DEFAULT_CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle time between requests on a client connection: chat clients send
/// their next request within seconds, and a minute spares them reconnecting
/// while bounding what idle connections cost.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The client timeouts other than keep-alive. Under 1s cuts off clients on
/// slow links; over an hour is no timeout at all.
pub const CLIENT_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// Keep-alive: `0s` turns it off; over an hour idle is a leak.
pub const KEEPALIVE_TIMEOUT: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);

/// Browsers and SDKs send a few KiB of headers; 32 KiB is what nginx takes
/// by default (`large_client_header_buffers 4 8k`), room for large cookies
/// and tokens, and a client cannot make a connection cost more.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 32 << 10;

/// Under 1 KiB refuses ordinary requests. Pingora refuses any header over
/// 1 MiB (less one byte) on its own, so a larger limit would mean nothing.
pub const MAX_HEADER_SIZE: RangeInclusive<usize> = 1 << 10..=1 << 20;

/// Client connections open at once. A held stream costs Switchyard about
/// 48 KiB (README, Performance), so 16384 of them are under 1 GiB, and the
/// systemd unit's `LimitNOFILE=262144` leaves room for as many upstream
/// connections and more.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16384;

/// At least one. Linux caps a process's descriptors at `fs.nr_open`,
/// 1,048,576 by default, so a million connections is the most it could hold.
pub const MAX_CONNECTIONS: RangeInclusive<usize> = 1..=1_000_000;

/// Entries of `server.trusted_proxies`. Each hop of an `X-Forwarded-For`
/// from a trusted peer is compared with every entry; CDNs publish their
/// edge networks as tens to a few hundred ranges, so a thousand covers two
/// of them with room to spare while bounding that work.
pub const MAX_TRUSTED_PROXIES: usize = 1024;

/// What `server.listen` takes, for a value of the wrong type.
const LISTEN_TAKES: &str = "a list of addresses such as [\"127.0.0.1:8080\"], or of listeners \
     such as { addr: \"0.0.0.0:443\", tls: { cert: FILE, key: FILE } }";

/// `dir` is where relative certificate paths start: the configuration
/// file's directory.
pub(super) fn server(errors: &mut Errors, raw: RawServer, dir: &Path) -> ServerSettings {
    let default_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (listen, tls) = listen(errors, raw.listen, dir);
    ServerSettings {
        listen,
        tls,
        threads: errors.count("server.threads", raw.threads, default_threads, &THREADS),
        pid_file: raw.pid_file.unwrap_or_else(|| DEFAULT_PID_FILE.into()),
        upgrade_sock: raw
            .upgrade_sock
            .unwrap_or_else(|| DEFAULT_UPGRADE_SOCK.into()),
        error_log: raw.error_log,
        grace_period: errors.duration(
            "server.grace_period",
            raw.grace_period.as_ref(),
            DEFAULT_GRACE_PERIOD,
            &GRACE_PERIOD,
        ),
        graceful_shutdown_timeout: errors.duration(
            "server.graceful_shutdown_timeout",
            raw.graceful_shutdown_timeout.as_ref(),
            DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT,
            &GRACEFUL_SHUTDOWN_TIMEOUT,
        ),
        upstream_keepalive_pool_size: errors.count(
            "server.upstream_keepalive_pool_size",
            raw.upstream_keepalive_pool_size,
            DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE,
            &UPSTREAM_KEEPALIVE_POOL_SIZE,
        ),
        work_stealing: raw.work_stealing.unwrap_or(false),
        max_request_body: errors.size(
            "server.max_request_body",
            raw.max_request_body.as_ref(),
            DEFAULT_MAX_REQUEST_BODY,
            &MAX_REQUEST_BODY,
        ),
        timeouts: client_timeouts(errors, raw.timeouts.unwrap_or_default()),
        max_header_size: errors.size(
            "server.max_header_size",
            raw.max_header_size.as_ref(),
            DEFAULT_MAX_HEADER_SIZE,
            &MAX_HEADER_SIZE,
        ),
        max_connections: errors.count(
            "server.max_connections",
            raw.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            &MAX_CONNECTIONS,
        ),
        expose_backend: raw.expose_backend.unwrap_or(true),
        trusted_proxies: trusted_proxies(errors, raw.trusted_proxies),
        addresses: AddressRules::new(
            networks(errors, "server.allow", raw.allow),
            networks(errors, "server.deny", raw.deny),
        ),
    }
}

/// The addresses of `server.listen`, and the listeners among them that
/// terminate TLS, with their certificates loaded.
fn listen(
    errors: &mut Errors,
    raw: Option<Vec<RawListen>>,
    dir: &Path,
) -> (Vec<SocketAddr>, Vec<TlsListener>) {
    errors.mistyped("server.listen", || LISTEN_TAKES.into());
    let raw = raw.unwrap_or_else(|| vec![RawListen::Addr(DEFAULT_LISTEN.to_string())]);
    if raw.is_empty() {
        errors.push("server.listen", "at least one address is required");
    }
    let mut seen = HashSet::new();
    let mut listen = Vec::new();
    let mut tls = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let path = format!("server.listen[{i}]");
        let (text, raw_tls) = match entry {
            RawListen::Addr(text) => (text, None),
            RawListen::Listener(l) => {
                let Some(text) = l.addr else {
                    errors.push(
                        format!("{path}.addr"),
                        "is required, such as \"0.0.0.0:443\"",
                    );
                    continue;
                };
                if l.tls.is_none() && !errors.is_mistyped(&format!("{path}.tls")) {
                    errors.push(
                        format!("{path}.tls"),
                        "is required in a mapping; write a plain listener as the address alone",
                    );
                }
                (text, l.tls)
            }
        };
        let at = if raw_tls.is_some() {
            format!("{path}.addr")
        } else {
            path.clone()
        };
        let addr = match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                errors.push(
                    at,
                    format!("{text:?} has port 0, which would listen on a random port"),
                );
                None
            }
            Ok(addr) if !seen.insert(addr) => {
                errors.push(at, format!("{text:?} is listed twice"));
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                errors.push(at, format!("{text:?} is not an IP:port address"));
                None
            }
        };
        let certs =
            raw_tls.map(|t| super::tls::certificates(errors, &format!("{path}.tls"), t, dir));
        if let Some(addr) = addr {
            listen.push(addr);
            if let Some(certs) = certs.filter(|c| !c.is_empty()) {
                tls.push(TlsListener { addr, certs });
            }
        }
    }
    (listen, tls)
}

fn trusted_proxies(errors: &mut Errors, raw: Option<Vec<String>>) -> TrustedProxies {
    const KEY: &str = "server.trusted_proxies";
    errors.mistyped(KEY, || {
        "a list of networks such as [\"10.0.0.0/8\", \"fd00::/8\"]".into()
    });
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_TRUSTED_PROXIES {
        let n = raw.len();
        errors.push(
            KEY,
            format!("has {n} entries, more than the maximum {MAX_TRUSTED_PROXIES}"),
        );
    }
    let mut nets = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        match trusted_net(text) {
            Ok(net) => nets.push(net),
            Err(why) => errors.push(format!("{KEY}[{i}]"), why),
        }
    }
    TrustedProxies::new(nets)
}

/// Entries of `server.allow` or `server.deny`: an office's or a cloud's
/// networks are tens to hundreds; every accepted connection is compared
/// with each, so a typo of a generated list should not reach millions.
pub const MAX_ADDRESS_RULES: usize = 4096;

/// `server.allow` or `server.deny` at `key`: networks or addresses.
fn networks(errors: &mut Errors, key: &str, raw: Option<Vec<String>>) -> Vec<IpNet> {
    errors.mistyped(key, || {
        "a list of networks such as [\"10.0.0.0/8\", \"fd00::/8\"]".into()
    });
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_ADDRESS_RULES {
        let n = raw.len();
        errors.push(
            key,
            format!("has {n} entries, more than the maximum {MAX_ADDRESS_RULES}"),
        );
    }
    let mut nets = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        let trimmed = text.trim();
        let net = match trimmed.parse::<IpAddr>() {
            Ok(ip) => Ok(IpNet::from(ip)),
            Err(_) => trimmed.parse::<IpNet>(),
        };
        match net {
            Ok(net) if net.trunc() != net => errors.push(
                format!("{key}[{i}]"),
                format!(
                    "{text:?} has bits set past its prefix length; the network is \"{}\"",
                    net.trunc()
                ),
            ),
            Ok(net) => nets.push(net),
            Err(_) => errors.push(
                format!("{key}[{i}]"),
                format!(
                    "{text:?} is not a network (such as \"10.0.0.0/8\" or \"fd00::/8\") or an address"
                ),
            ),
        }
    }
    nets
}

/// One entry: a network (`10.0.0.0/8`, `2001:db8::/32`) or one address,
/// which stands for itself alone.
fn trusted_net(text: &str) -> Result<IpNet, String> {
    let trimmed = text.trim();
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = trimmed.parse().map_err(|_| {
        format!(
            "{text:?} is not a network (an address and a prefix length, such as \
             \"10.0.0.0/8\" or \"fd00::/8\") or an address"
        )
    })?;
    if net.prefix_len() == 0 {
        return Err(format!(
            "{text:?} trusts every address, so any client could choose the address \
             Switchyard sees; list the networks of the proxies in front"
        ));
    }
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has bits set past its prefix length; the network is \"{}\"",
            net.trunc()
        ));
    }
    Ok(net)
}

fn client_timeouts(errors: &mut Errors, raw: RawClientTimeouts) -> ClientTimeouts {
    let mut timeout = |key: &str, value: Option<String>, default, range| {
        let path = format!("server.timeouts.{key}");
        errors.duration(&path, value.as_ref(), default, range)
    };
    ClientTimeouts {
        client_header: timeout(
            "client_header",
            raw.client_header,
            DEFAULT_CLIENT_HEADER_TIMEOUT,
            &CLIENT_TIMEOUT,
        ),
        client_body: timeout(
            "client_body",
            raw.client_body,
            DEFAULT_CLIENT_BODY_TIMEOUT,
            &CLIENT_TIMEOUT,
        ),
        client_send: timeout(
            "client_send",
            raw.client_send,
            DEFAULT_CLIENT_SEND_TIMEOUT,
            &CLIENT_TIMEOUT,
        ),
        keepalive: timeout(
            "keepalive",
            raw.keepalive,
            DEFAULT_KEEPALIVE_TIMEOUT,
            &KEEPALIVE_TIMEOUT,
        ),
    }
}
