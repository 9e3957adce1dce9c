//! `pools.NAME.backends`: each backend's address, weight and model list.

use super::Errors;
use crate::config::model::{BackendKind, BackendSpec};
use crate::config::raw::RawBackend;
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;

/// Drains a backend at 0; every backend counts the same unless told.
pub const DEFAULT_WEIGHT: usize = 1;

/// A share of traffic: 1000 to 1 is finer than any fleet needs, and keeps
/// a pool's weighted table (one entry per unit) at most 2 MB.
pub const WEIGHT: RangeInclusive<usize> = 0..=1000;

pub(super) fn backends(errors: &mut Errors, at: &str, raw: Vec<RawBackend>) -> Vec<BackendSpec> {
    if raw.is_empty() {
        errors.push(format!("{at}.backends"), "at least one backend is required");
        return Vec::new();
    }
    let mut urls = BTreeMap::new();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let path = format!("{at}.backends[{i}]");
        let Some(url) = b.url else {
            errors.push(format!("{path}.url"), "is required");
            continue;
        };
        let Some((authority, addr)) = parse_url(errors, &format!("{path}.url"), &url) else {
            continue;
        };
        if let Some(first) = urls.insert(addr, i) {
            errors.push(
                format!("{path}.url"),
                format!("{url:?} is the same backend as {at}.backends[{first}]"),
            );
            continue;
        }
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
        if let Some(models) = &b.models {
            if models.iter().any(|m| m.trim().is_empty()) {
                errors.push(format!("{path}.models"), "a model name is empty");
            }
        }
        let name = b.name.unwrap_or(authority);
        if !names.insert(name.clone()) {
            errors.push(
                format!("{path}.name"),
                format!("{name:?} is used by another backend of the pool"),
            );
        }
        out.push(BackendSpec {
            name,
            url,
            addr,
            weight,
            kind,
            models: b.models,
            priority: b.priority.unwrap_or(0),
            max_in_flight: match b.max_in_flight {
                Some(0) => {
                    errors.push(format!("{path}.max_in_flight"), "0 must be at least 1");
                    None
                }
                other => other,
            },
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

/// Checks `http://host[:port][/]` and resolves it. Returns the authority and the address.
fn parse_url(errors: &mut Errors, path: &str, url: &str) -> Option<(String, SocketAddr)> {
    let not_http = |errors: &mut Errors, why: &str| {
        errors.push(path, format!("{url:?} is not an http URL{why}"));
        None
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return not_http(errors, "");
    };
    if uri.scheme_str() != Some("http") {
        return not_http(errors, " (only http:// backends are supported)");
    }
    let Some(authority) = uri.authority() else {
        return not_http(errors, "");
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return not_http(errors, " (a backend URL has no path)");
    }
    if authority.as_str().contains('@') {
        return not_http(errors, " (credentials are not supported)");
    }
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    match (host, port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => Some((authority.to_string(), addr)),
        _ => {
            errors.push(path, format!("{url:?}: host {host:?} does not resolve"));
            None
        }
    }
}
