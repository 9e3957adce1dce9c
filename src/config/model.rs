//! The checked configuration the proxy runs on.
//!
//! Every value here has been validated and carries its default: durations are
//! `Duration`s, URLs are socket addresses, regexes are compiled. The proxy and
//! the reload path only ever see these types, never the file format.

pub use crate::auth::AuthSpec;
pub use crate::balance::queue::QueueSpec;
pub use crate::edge::AddressRules;
pub use crate::forwarding::TrustedProxies;
pub use crate::health::circuit::CircuitSpec;
pub use crate::limits::{LimitSet, LimitsSpec};
pub use crate::tls::{Certificate, TlsListener};
use regex::Regex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A whole, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    /// Sorted by name.
    pub pools: Vec<PoolSpec>,
    /// In file order: the first match wins.
    pub routes: Vec<RouteSpec>,
    pub models: ModelsSpec,
    /// The admin listener; `None` when not configured.
    pub admin: Option<AdminSettings>,
    /// `access_log:`; `None` (the default) writes none.
    pub access_log: Option<AccessLogSpec>,
    /// `auth:`: the API keys; `None` lets every request in.
    pub auth: Option<AuthSpec>,
    /// `limits:`: defaults per client address and per key, and the store.
    pub limits: LimitsSpec,
}

/// `admin:`: the listener for `/metrics`, apart from the proxy's, so that
/// it can be firewalled apart and does not share the proxy's limits.
/// Defaults and ranges: [`crate::config::validate::admin`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Where it accepts; never a proxy listener. A restart applies a change.
    pub listen: SocketAddr,
    /// The bearer token every request must carry (`Authorization: Bearer
    /// ...`), from `token_env` or `token_file`; read again by every
    /// reload. `None` lets every request in, which only a loopback
    /// `listen` may do.
    pub token: Option<Secret>,
}

/// A secret read from the environment or a file. `Debug` does not show
/// it, and no message names it, so it stays out of logs and `-t` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that must read it (an API
    /// key's digest).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The value, for the one place that sends it (a backend's header).
    /// Nothing that logs, prints or answers may call this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is the secret, in a time that does not depend
    /// on where the two first differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let differ = expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        differ == 0 && expected.len() == presented.len()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `access_log:`: where the line of each request goes, and in what form.
/// A reload applies a change at once, and SIGUSR1 reopens the file.
/// Checks: [`crate::config::validate::access_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSpec {
    pub path: LogPath,
    pub format: LogFormat,
}

/// Where access log lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPath {
    /// The process's standard output, for a service manager's journal or
    /// a container's log collector.
    Stdout,
    /// A file, opened for appending and created if missing; an absolute
    /// path.
    File(std::path::PathBuf),
}

impl std::fmt::Display for LogPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogPath::Stdout => f.write_str("stdout"),
            LogPath::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How a line is written. One JSON object per line is the only form for
/// now; the key is there so that another can be added without changing
/// the meaning of files that name none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Json,
}

/// `models:`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelsSpec {
    /// How often each backend's model list is fetched. Default 30s.
    pub refresh: Duration,
    /// Requested name to the name backends know; resolved once, not chained.
    pub aliases: BTreeMap<String, String>,
    /// When no healthy backend serves a model, these are tried in order.
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

impl Config {
    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolSpec> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// What is allowed but unsafe, said by `-t`, at start and on each
    /// reload: certificates that expire within
    /// [`crate::tls::certificate::EXPIRY_WARNING`] or have expired, and
    /// backends whose certificate is not checked.
    pub fn warnings(&self, now: std::time::SystemTime) -> Vec<String> {
        let tls = self.server.tls.iter();
        let mut out: Vec<String> = tls.flat_map(|l| l.expiry_warnings(now)).collect();
        out.extend(self.unverified_backends());
        out
    }

    /// Every address listened on: the proxy's, then the admin listener's.
    pub fn listeners(&self) -> Vec<SocketAddr> {
        let admin = self.admin.as_ref().map(|a| a.listen);
        self.server.listen.iter().copied().chain(admin).collect()
    }
}

/// `server:`. Most are applied at start (or binary upgrade); a reload that
/// changes them warns and keeps the running values. `max_request_body`,
/// `timeouts`, `max_header_size`, `max_connections`, `expose_backend` and
/// `trusted_proxies` are read per connection or per request, so a reload
/// applies them to new ones.
/// Defaults and ranges: [`crate::config::validate::server`].
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Addresses to accept clients on, TLS or not. Default `127.0.0.1:8080`.
    pub listen: Vec<SocketAddr>,
    /// The listeners of `listen` that terminate TLS, with their
    /// certificates. Which listeners these are is fixed at start; a reload
    /// re-reads their certificates.
    pub tls: Vec<TlsListener>,
    /// Worker threads of the proxy service. Default: the number of CPUs.
    pub threads: usize,
    /// Written by `-d`. Default `/run/switchyard/switchyard.pid`.
    pub pid_file: String,
    /// Unix socket over which `-u` takes the listeners from the old process.
    /// Default `/run/switchyard/upgrade.sock`.
    pub upgrade_sock: String,
    /// Log file when daemonized; stderr otherwise.
    pub error_log: Option<String>,
    /// After SIGTERM (or handing the listeners to a new binary), the longest
    /// time requests in flight, streams included, get to finish. The process
    /// exits as soon as none is left. Default 60s.
    pub grace_period: Duration,
    /// After the grace period, how long Pingora's runtimes get to stop
    /// before the process exits anyway. Default 5s.
    pub graceful_shutdown_timeout: Duration,
    /// Idle upstream connections kept for reuse, per worker thread (Pingora
    /// multiplies it by `threads` for its process-wide pool). Default 1024.
    pub upstream_keepalive_pool_size: usize,
    /// Largest request body read to find its `model`; larger gets 413.
    /// Default 32 MiB.
    pub max_request_body: usize,
    /// Pingora's work-stealing runtime. Default off: each worker thread runs
    /// its own connections, as nginx's workers do, which measured a several
    /// times lower p99 at half load (see the README's Performance section).
    pub work_stealing: bool,
    /// How long Switchyard waits on a client.
    pub timeouts: ClientTimeouts,
    /// Largest request header (request line and all header fields) a client
    /// may send; more is refused. Default 32 KiB.
    pub max_header_size: usize,
    /// Client connections open at once; beyond it a new connection gets a
    /// 503 and is closed. Default 16384.
    pub max_connections: usize,
    /// Whether proxied responses name their backend (`x-switchyard-backend`)
    /// and the backends tried (`x-switchyard-attempts`). Default on; off
    /// for an edge facing the public, which need not learn the fleet's
    /// layout.
    pub expose_backend: bool,
    /// Peers whose `X-Forwarded-For`, `-Proto` and `-Host` are believed: the
    /// load balancers or CDN in front. Default none: every peer is the
    /// client, and what it claims is replaced.
    pub trusted_proxies: TrustedProxies,
    /// `server.allow` and `server.deny`: which peers may connect at all,
    /// checked when a connection is accepted. Default: every peer.
    pub addresses: AddressRules,
}

/// `server.timeouts`: how long Switchyard waits on a client, so that a slow
/// or silent one cannot hold a connection (and its memory) for ever.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTimeouts {
    /// The whole request header must arrive within this, counted from the
    /// accept, or from the first byte of a kept-alive connection's next
    /// request. Default 30s.
    pub client_header: Duration,
    /// Longest silence between two reads of a request body. Default 60s.
    pub client_body: Duration,
    /// Longest a write to the client may make no progress (nginx's
    /// `send_timeout`). Default 60s.
    pub client_send: Duration,
    /// Idle time allowed between two requests on a client connection; zero
    /// turns keep-alive off. Default 60s.
    pub keepalive: Duration,
}

/// How a pool picks a backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Weighted rotation.
    RoundRobin,
    /// Weighted random choice.
    Random,
    /// Ketama ring on a key taken from each request.
    ConsistentHash(HashKey),
    /// Fewest requests in flight relative to weight.
    LeastConnections,
    /// The highest `priority` tier with a usable backend, weighted within it.
    Priority,
}

impl Strategy {
    /// The name used in the config file.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::ConsistentHash(_) => "consistent_hash",
            Strategy::LeastConnections => "least_connections",
            Strategy::Priority => "priority",
        }
    }
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    /// A request header, lower-cased name.
    Header(String),
    /// A cookie by name.
    Cookie(String),
    /// The client's IP address.
    ClientIp,
    /// The request path (without query).
    Path,
    /// The request's model, so that one model's traffic stays on the same
    /// few backends and they swap models less.
    Model,
}

/// `pools.NAME.timeouts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// TCP connect to a backend. Default 2s.
    pub connect: Duration,
    /// From request sent to response header received. Default 300s, since a
    /// large model can take minutes before its first token.
    pub first_byte: Duration,
    /// Longest silence between two body chunks of a response. Default 60s.
    pub idle: Duration,
}

/// `pools.NAME.health_check`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub kind: HealthKind,
    /// Time between two checks of one backend. Default 5s.
    pub interval: Duration,
    /// Connect plus response time allowed to one check. Default 2s.
    pub timeout: Duration,
    /// Passing checks in a row that make an unhealthy backend healthy. Default 2.
    pub healthy_threshold: usize,
    /// Failing checks in a row that make a healthy backend unhealthy. Default 3.
    pub unhealthy_threshold: usize,
}

/// The probe a health check sends.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthKind {
    /// A TCP connect (the default: every server answers it).
    Tcp,
    /// `GET path`; healthy on any 2xx, or exactly `expect_status` if given.
    Http {
        path: String,
        expect_status: Option<u16>,
    },
    /// No active check: the backend is always considered up.
    None,
}

/// `pools.NAME`.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: String,
    pub strategy: Strategy,
    /// Extra attempts, each on another backend, when connecting fails. Default 2.
    pub retries: usize,
    pub timeouts: Timeouts,
    pub health: HealthSpec,
    pub backends: Vec<BackendSpec>,
    /// Passive health: when a backend's failures open its circuit.
    pub circuit: CircuitSpec,
    /// Where requests wait when every candidate is at its `max_in_flight`.
    pub queue: QueueSpec,
    /// One bucket for every request the pool serves, whoever sends it.
    pub limits: LimitSet,
}

/// `pools.NAME.backends[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// Shown in logs. Default: the URL's authority.
    pub name: String,
    /// As written in the file, for messages.
    pub url: String,
    /// Resolved when the configuration is loaded, and again by every
    /// reload; the first IPv4 address of a name that has both kinds.
    pub addr: SocketAddr,
    /// `host[:port]` of the URL, the port left out when it is the
    /// scheme's: the `Host` of the requests Switchyard makes itself, and
    /// of proxied ones when [`HostHeader::Backend`].
    pub authority: String,
    /// The URL's path without its trailing `/` (`/openai`), put before
    /// the path of every request to the backend; empty for none.
    pub base_path: String,
    /// `Some` for an `https://` backend.
    pub tls: Option<std::sync::Arc<super::tls::BackendTls>>,
    /// Whose `Host` a proxied request carries: the pool's `host_header`,
    /// by default the backend's for HTTPS and the client's for HTTP.
    pub host_header: HostHeader,
    /// Headers added to every request to the backend (proxied, health
    /// checks, model lists): the pool's, then its own by name.
    pub headers: Vec<BackendHeader>,
    /// Requested model name to the name this backend serves it under.
    pub model_map: BTreeMap<String, String>,
    /// Share of traffic relative to the pool's other backends. Default 1;
    /// 0 drains the backend.
    pub weight: usize,
    /// Which API lists its models. Default `auto`.
    pub kind: BackendKind,
    /// Models from the file: when given, discovery is off for this backend.
    pub models: Option<Vec<String>>,
    /// Tier for strategy `priority`: higher first. Default 0.
    pub priority: u32,
    /// Requests this backend serves at once (Ollama's `OLLAMA_NUM_PARALLEL`);
    /// `None` is unlimited.
    pub max_in_flight: Option<usize>,
}

impl BackendSpec {
    /// `host[:port]` from the URL, for the `Host` header of the requests
    /// Switchyard makes itself (health checks, model lists).
    pub fn host(&self) -> &str {
        &self.authority
    }

    /// `path` as the backend knows it: after its base path.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    /// Whether a header of its own carries a credential, so that the
    /// client's (`Authorization`, `x-api-key`, `api-key`) is not passed on.
    pub fn has_credentials(&self) -> bool {
        self.headers.iter().any(|h| h.value.is_secret())
    }

    /// The name this backend serves `model` under.
    pub fn served_name<'a>(&'a self, model: &'a str) -> &'a str {
        self.model_map.get(model).map_or(model, String::as_str)
    }
}

/// Whose `Host` a proxied request carries (`pools.NAME.host_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHeader {
    /// The backend's `host[:port]`: cloud endpoints route on it.
    Backend,
    /// The client's, as it sent it.
    Client,
}

/// Request headers whose value a client may carry as its own key for
/// Switchyard; not passed on to a backend that has credentials of its own,
/// and never written as plain text in the file.
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// One header a backend gets.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendHeader {
    pub name: http::HeaderName,
    pub value: HeaderText,
}

/// A header's value: as written in the file, or read from the environment
/// or a file, and then never shown.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderText {
    Plain(String),
    Secret(Secret),
}

impl HeaderText {
    /// The value to send.
    pub fn value(&self) -> &str {
        match self {
            HeaderText::Plain(text) => text,
            HeaderText::Secret(secret) => secret.expose(),
        }
    }

    pub fn is_secret(&self) -> bool {
        matches!(self, HeaderText::Secret(_))
    }
}

/// The API a backend speaks, for model discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `GET /v1/models` (vLLM, llama.cpp server, any OpenAI-compatible API).
    OpenAi,
    /// `GET /api/tags`.
    Ollama,
    /// `/v1/models`, then `/api/tags`.
    Auto,
}

/// `routes[i]`: all present conditions must hold.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub path_prefix: Option<String>,
    pub header: Option<HeaderMatch>,
    /// A glob (`*`, `?`) on the request's model.
    pub model: Option<String>,
    pub pool: String,
}

/// `routes[i].header`.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Lower-cased.
    pub name: String,
    pub regex: Regex,
}
