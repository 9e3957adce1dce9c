//! `pools.NAME.backends`: each backend's address, weight and model list,
//! and the caps on what a pool, and the whole file, may cost to build.
//!
//! A reload builds every pool's selector before it swaps the new snapshot
//! in, on the same process that is serving. Pingora's weighted selectors
//! expand the weights into a table of 2-byte entries, and its Ketama ring
//! (`consistent_hash`) holds [`RING_POINTS_PER_WEIGHT`] points of 8 bytes per
//! unit of weight, allocated in one piece and sorted. Without caps, 10,000
//! backends at weight 1000 ask for a 12.8 GB ring and the allocation aborts
//! the process. With them, every selector of the largest file this module
//! accepts is built in well under a second and a few tens of MB.

use super::{headers, Errors};
use crate::config::model::{BackendHeader, BackendKind, BackendSpec, HostHeader, PoolSpec};
use crate::config::raw::{RawBackend, RawBackendTls};
use crate::config::tls::{self, BackendTls, SystemRoots, TlsFiles};
use crate::models::scan::check_model_name;
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;

/// Drains a backend at 0; every backend counts the same unless told.
pub const DEFAULT_WEIGHT: usize = 1;

/// A share of traffic: 1000 to 1 is finer than any fleet needs, and keeps
/// a pool's weighted table (one entry per unit) at most 2 MB.
pub const WEIGHT: RangeInclusive<usize> = 0..=1000;

/// Backends in one pool. A GPU fleet behind one pool is tens of servers;
/// Pingora's selectors number backends with 16 bits, and a selection walks
/// at most 4096 candidates, well above this.
pub const MAX_POOL_BACKENDS: usize = 1024;

/// Backends in the whole file, counted once per pool that lists them. Each
/// one is health-checked and asked for its models; four full pools are more
/// than any fleet.
pub const MAX_BACKENDS: usize = 4096;

/// Points Pingora's Ketama ring (`pingora-ketama`'s `DEFAULT_POINT_MULTIPLE`)
/// places per unit of weight; each point is 8 bytes.
pub const RING_POINTS_PER_WEIGHT: usize = 160;

/// The sum of the weights of a `consistent_hash` pool: 1.6 million ring
/// points, 12.8 MB, built (hashed and sorted) in under a tenth of a second
/// (45 to 75 ms measured on one Xeon core, release build; 1024 backends at
/// weight 1000 took 8.7 s and 1.3 GB). That is 100 backends at weight 100,
/// or 10 at the largest weight.
pub const MAX_RING_WEIGHT: usize = 10_000;

/// The sum over all `consistent_hash` pools: two full rings, 25.6 MB and
/// about 0.1 s to build. A reload holds the old rings until it has built
/// the new ones, so the peak is twice that.
pub const MAX_TOTAL_RING_WEIGHT: usize = 20_000;

/// Entries of one backend's `model_map`: a fleet's model catalogue.
pub const MAX_MODEL_MAP: usize = 1000;

/// What a pool gives each of its backends.
pub(super) struct PoolDefaults<'a> {
    /// The pool's `headers`.
    pub headers: &'a [BackendHeader],
    /// The pool's `host_header`; `None` lets the scheme decide.
    pub host_header: Option<HostHeader>,
}

pub(super) fn backends(
    errors: &mut Errors,
    at: &str,
    raw: Vec<RawBackend>,
    listen: &[SocketAddr],
    pool: &PoolDefaults<'_>,
    roots: &mut SystemRoots,
) -> Vec<BackendSpec> {
    errors.mistyped(&format!("{at}.backends"), || {
        "a list of backends, each a mapping with a url".into()
    });
    if raw.is_empty() {
        errors.push(format!("{at}.backends"), "at least one backend is required");
        return Vec::new();
    }
    if raw.len() > MAX_POOL_BACKENDS {
        // Not resolved one by one: thousands of host names are minutes of DNS.
        errors.push(
            format!("{at}.backends"),
            format!(
                "{} backends is more than the maximum {MAX_POOL_BACKENDS} per pool",
                raw.len()
            ),
        );
        return Vec::new();
    }
    let mut urls = BTreeMap::new();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let path = format!("{at}.backends[{i}]");
        // Every key is checked before the URL, whose errors skip the rest.
        let weight = errors.count(&format!("{path}.weight"), b.weight, DEFAULT_WEIGHT, &WEIGHT);
        let kind = match b.kind.as_deref() {
            None | Some("auto") => BackendKind::Auto,
            Some("openai") => BackendKind::OpenAi,
            Some("ollama") => BackendKind::Ollama,
            Some(other) => {
                errors.push(
                    format!("{path}.type"),
                    format!("{other:?} is not one of openai, ollama, auto"),
                );
                BackendKind::Auto
            }
        };
        errors.mistyped(&format!("{path}.models"), || "a list of strings".into());
        if let Some(models) = &b.models {
            if models.iter().any(|m| m.trim().is_empty()) {
                errors.push(format!("{path}.models"), "a model name is empty");
            }
        }
        errors.mistyped(&format!("{path}.priority"), || {
            format!("a whole number from 0 to {}", u32::MAX)
        });
        errors.mistyped(&format!("{path}.max_in_flight"), || {
            "a whole number, at least 1".into()
        });
        let max_in_flight = match b.max_in_flight {
            Some(0) => {
                errors.push(format!("{path}.max_in_flight"), "0 must be at least 1");
                None
            }
            other => other,
        };
        let own_headers = headers::headers(errors, &format!("{path}.headers"), b.headers);
        let model_map = model_map(errors, &path, b.model_map);
        let Some(url) = b.url else {
            errors.push(format!("{path}.url"), "is required");
            continue;
        };
        let Some(parsed) = parse_url(errors, &format!("{path}.url"), &url) else {
            continue;
        };
        let tls = backend_tls(errors, &path, &parsed, b.tls, roots);
        let ParsedUrl {
            authority,
            addr,
            base_path,
            https,
            ..
        } = parsed;
        if https && tls.is_none() {
            continue;
        }
        if let Some(first) = urls.insert(addr, i) {
            errors.push(
                format!("{path}.url"),
                format!(
                    "{url:?} is the same backend as {at}.backends[{first}] (both reach {addr}; \
                     a backend is known by its address)"
                ),
            );
            continue;
        }
        if let Some(own) = listen.iter().find(|l| same_socket(**l, addr)) {
            errors.push(
                format!("{path}.url"),
                format!(
                    "{url:?} is Switchyard's own listener {own} (server.listen): \
                     requests would loop back into the proxy"
                ),
            );
        }
        let name = b.name.unwrap_or_else(|| authority.clone());
        if !names.insert(name.clone()) {
            errors.push(
                format!("{path}.name"),
                format!("{name:?} is used by another backend of the pool"),
            );
        }
        let host_header = pool.host_header.unwrap_or(if https {
            HostHeader::Backend
        } else {
            HostHeader::Client
        });
        out.push(BackendSpec {
            name,
            url,
            addr,
            authority,
            base_path,
            tls: tls.map(Arc::new),
            host_header,
            headers: headers::merge(pool.headers, own_headers),
            model_map,
            weight,
            kind,
            models: b.models,
            priority: b.priority.unwrap_or(0),
            max_in_flight,
        });
    }
    if !out.is_empty() && out.iter().all(|b| b.weight == 0) {
        errors.push(
            format!("{at}.backends"),
            "every weight is 0: the pool could serve nothing",
        );
    }
    out
}

/// Whether a connection to `backend` would reach the listener `listen`: the
/// same address, or the same port where one side is unspecified (`0.0.0.0`,
/// `[::]`: every local address) and the other is loopback or unspecified
/// (connecting to `0.0.0.0` reaches the local host).
fn same_socket(listen: SocketAddr, backend: SocketAddr) -> bool {
    let local = |a: SocketAddr| a.ip().is_loopback() || a.ip().is_unspecified();
    listen.port() == backend.port()
        && (listen.ip() == backend.ip()
            || (listen.ip().is_unspecified() && local(backend))
            || (backend.ip().is_unspecified() && local(listen)))
}

/// The sum of a `consistent_hash` pool's weights: see [`MAX_RING_WEIGHT`].
pub(super) fn ring_limit(errors: &mut Errors, at: &str, backends: &[BackendSpec]) {
    let total: usize = backends.iter().map(|b| b.weight).sum();
    if total > MAX_RING_WEIGHT {
        errors.push(
            format!("{at}.backends"),
            format!(
                "the weights add up to {total}, more than the maximum {MAX_RING_WEIGHT} \
                 for strategy consistent_hash ({})",
                ring_cost(MAX_RING_WEIGHT)
            ),
        );
    }
}

/// Caps over the whole file: see [`MAX_BACKENDS`] and [`MAX_TOTAL_RING_WEIGHT`].
pub(super) fn fleet_limits(errors: &mut Errors, pools: &[PoolSpec]) {
    let backends: usize = pools.iter().map(|p| p.backends.len()).sum();
    if backends > MAX_BACKENDS {
        errors.push(
            "pools",
            format!("{backends} backends in all is more than the maximum {MAX_BACKENDS}"),
        );
    }
    let ring: usize = pools
        .iter()
        .filter(|p| matches!(p.strategy, crate::config::Strategy::ConsistentHash(_)))
        .flat_map(|p| &p.backends)
        .map(|b| b.weight)
        .sum();
    if ring > MAX_TOTAL_RING_WEIGHT {
        errors.push(
            "pools",
            format!(
                "the weights of the consistent_hash pools add up to {ring}, more than the \
                 maximum {MAX_TOTAL_RING_WEIGHT} ({})",
                ring_cost(MAX_TOTAL_RING_WEIGHT)
            ),
        );
    }
}

/// `1.6 million ring points, 12.8 MB`: what a ring of `weight` costs.
fn ring_cost(weight: usize) -> String {
    let points = weight * RING_POINTS_PER_WEIGHT;
    format!(
        "{RING_POINTS_PER_WEIGHT} ring points per unit of weight: {:.1} million points, {:.1} MB",
        points as f64 / 1e6,
        (points * 8) as f64 / 1e6
    )
}

/// A backend URL, checked and resolved.
struct ParsedUrl {
    /// `host[:port]`, the port left out when it is the scheme's.
    authority: String,
    /// The host alone, without the brackets of an IPv6 address.
    host: String,
    addr: SocketAddr,
    /// Without its trailing `/`; empty for none.
    base_path: String,
    https: bool,
}

/// Checks `http[s]://host[:port][/base/path]` and resolves its host.
fn parse_url(errors: &mut Errors, path: &str, url: &str) -> Option<ParsedUrl> {
    let not_http = |errors: &mut Errors, why: &str| {
        errors.push(path, format!("{url:?} is not an http or https URL{why}"));
        None
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return not_http(errors, "");
    };
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return not_http(errors, ""),
    };
    let Some(authority) = uri.authority() else {
        return not_http(errors, "");
    };
    if uri.query().is_some() {
        return not_http(errors, " (a backend URL has no query)");
    }
    if authority.as_str().contains('@') {
        return not_http(
            errors,
            " (credentials do not go in the URL: use headers with env or file)",
        );
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    let default_port = if https { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    // `Host` leaves the scheme's own port out, as clients do.
    let authority = match authority.port_u16() {
        Some(p) if p != default_port => authority.as_str().to_string(),
        _ => authority.host().to_string(),
    };
    // A name with both kinds of address gets its IPv4 one: `localhost` is
    // often `::1` first, where a server bound to 127.0.0.1 is not.
    let resolved = (host.as_str(), port).to_socket_addrs().map(|addrs| {
        let all: Vec<SocketAddr> = addrs.collect();
        all.iter().find(|a| a.is_ipv4()).or(all.first()).copied()
    });
    match resolved {
        Ok(Some(addr)) => Some(ParsedUrl {
            authority,
            host,
            addr,
            base_path,
            https,
        }),
        _ => {
            errors.push(path, format!("{url:?}: host {host:?} does not resolve"));
            None
        }
    }
}

/// `tls:` of a backend: read for `https://`, refused for `http://`.
fn backend_tls(
    errors: &mut Errors,
    at: &str,
    url: &ParsedUrl,
    raw: Option<RawBackendTls>,
    roots: &mut SystemRoots,
) -> Option<BackendTls> {
    let at = format!("{at}.tls");
    if errors.mistyped(&at, || {
        "a mapping with ca, cert and key (files) and verify (true or false)".into()
    }) {
        return None;
    }
    errors.mistyped(&format!("{at}.verify"), || "true or false".into());
    if !url.https {
        if raw.is_some() {
            errors.push(&at, "is only for https:// backends");
        }
        return None;
    }
    let raw = raw.unwrap_or_default();
    let files = TlsFiles {
        ca: raw.ca.as_deref().map(Path::new),
        cert: raw.cert.as_deref().map(Path::new),
        key: raw.key.as_deref().map(Path::new),
        verify: raw.verify.unwrap_or(true),
    };
    if !files.verify && files.ca.is_some() {
        errors.push(
            format!("{at}.ca"),
            "is not used with verify: false, which accepts any certificate",
        );
    }
    match tls::load(&url.host, &files, roots) {
        Ok(tls) => Some(tls),
        Err(problems) => {
            for p in problems {
                errors.push(format!("{at}.{}", p.key), p.message);
            }
            None
        }
    }
}

/// `model_map:` of a backend: requested name to the name it serves.
fn model_map(
    errors: &mut Errors,
    at: &str,
    raw: Option<BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let at = format!("{at}.model_map");
    if errors.mistyped(&at, || {
        "a mapping of requested model names to the names the backend serves".into()
    }) {
        return BTreeMap::new();
    }
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_MODEL_MAP {
        errors.push(
            &at,
            format!(
                "{} entries is more than the maximum {MAX_MODEL_MAP}",
                raw.len()
            ),
        );
        return BTreeMap::new();
    }
    let mut ok = true;
    for (requested, served) in &raw {
        for name in [requested, served] {
            let why = if name.trim().is_empty() {
                Some("a model name is empty")
            } else {
                check_model_name(name).err()
            };
            if let Some(why) = why {
                errors.push(format!("{at}.{requested}"), format!("{name:?}: {why}"));
                ok = false;
            }
        }
    }
    if ok {
        raw
    } else {
        BTreeMap::new()
    }
}
