//! `routes`: which pool serves a request.

use super::Errors;
use crate::config::model::{HeaderMatch, PoolSpec, RouteSpec};
use crate::config::raw::RawRoute;
use regex::Regex;

pub(super) fn route(
    errors: &mut Errors,
    i: usize,
    raw: RawRoute,
    pools: &[PoolSpec],
) -> Option<RouteSpec> {
    let at = format!("routes[{i}]");
    let pool = match raw.pool {
        Some(p) if pools.iter().any(|x| x.name == p) => p,
        Some(p) => {
            errors.push(
                format!("{at}.pool"),
                format!("{p:?} is not a pool defined under pools"),
            );
            return None;
        }
        None => {
            errors.push(format!("{at}.pool"), "is required");
            return None;
        }
    };
    if let Some(prefix) = &raw.path_prefix {
        if !prefix.starts_with('/') {
            errors.push(
                format!("{at}.path_prefix"),
                format!("{prefix:?} must start with /"),
            );
        }
    }
    let header = match raw.header {
        None => None,
        Some(h) => {
            let name = match h.name {
                Some(n) if http::HeaderName::from_bytes(n.as_bytes()).is_ok() => {
                    n.to_ascii_lowercase()
                }
                Some(n) => {
                    errors.push(
                        format!("{at}.header.name"),
                        format!("{n:?} is not a header name"),
                    );
                    return None;
                }
                None => {
                    errors.push(format!("{at}.header.name"), "is required");
                    return None;
                }
            };
            let text = h.regex.unwrap_or_default();
            match Regex::new(&text) {
                Ok(regex) => Some(HeaderMatch { name, regex }),
                Err(e) => {
                    let why = e.to_string().lines().last().unwrap_or_default().to_string();
                    errors.push(
                        format!("{at}.header.regex"),
                        format!("{text:?} is not a regex: {why}"),
                    );
                    return None;
                }
            }
        }
    };
    if let Some(glob) = &raw.model {
        if glob.is_empty() {
            errors.push(format!("{at}.model"), "the pattern is empty");
        }
    }
    Some(RouteSpec {
        path_prefix: raw.path_prefix,
        header,
        model: raw.model,
        pool,
    })
}

/// Without `routes`, a config with exactly one pool sends everything to it.
pub(super) fn default_routes(errors: &mut Errors, pools: &[PoolSpec]) -> Vec<RouteSpec> {
    match pools {
        [only] => vec![RouteSpec {
            path_prefix: None,
            header: None,
            model: None,
            pool: only.name.clone(),
        }],
        [] => Vec::new(),
        _ => {
            errors.push("routes", "is required when there is more than one pool");
            Vec::new()
        }
    }
}
