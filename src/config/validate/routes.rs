//! `routes`: which pool serves a request.
//!
//! A condition that is written but says nothing (`path_prefix: ""`,
//! `model:` with no value, a header with an empty name or regex) is an
//! error, not a missing condition: it would turn its route into a
//! catch-all that silently shadows every route after it.

use super::Errors;
use crate::config::model::{HeaderMatch, PoolSpec, RouteSpec};
use crate::config::raw::{RawHeaderMatch, RawRoute};
use regex::Regex;

/// What an empty condition is told.
const EMPTY: &str = "is empty; leave the key out for a route without this condition";

pub(super) fn route(
    errors: &mut Errors,
    i: usize,
    raw: RawRoute,
    pools: &[PoolSpec],
) -> Option<RouteSpec> {
    let at = format!("routes[{i}]");
    let before = errors.list.len();
    let pool = match raw.pool {
        // With `pools` of the wrong type, no pool is known.
        Some(p) if pools.iter().any(|x| x.name == p) || errors.is_mistyped("pools") => p,
        Some(p) => {
            errors.push(
                format!("{at}.pool"),
                format!("{p:?} is not a pool defined under pools"),
            );
            String::new()
        }
        None => {
            errors.push(format!("{at}.pool"), "is required");
            String::new()
        }
    };
    let path_prefix = match raw.path_prefix {
        None => None,
        Some(None) => {
            errors.push(format!("{at}.path_prefix"), EMPTY);
            None
        }
        Some(Some(prefix)) if prefix.is_empty() => {
            errors.push(format!("{at}.path_prefix"), EMPTY);
            None
        }
        Some(Some(prefix)) if !prefix.starts_with('/') => {
            errors.push(
                format!("{at}.path_prefix"),
                format!("{prefix:?} must start with /"),
            );
            None
        }
        Some(prefix) => prefix,
    };
    let header = match raw.header {
        None => None,
        Some(None) => {
            errors.push(format!("{at}.header"), EMPTY);
            None
        }
        Some(Some(h)) => header(errors, &at, h),
    };
    let model = match raw.model {
        None => None,
        Some(glob) if glob.as_deref().is_none_or(|g| g.trim().is_empty()) => {
            errors.push(format!("{at}.model"), EMPTY);
            None
        }
        Some(glob) => glob,
    };
    // A route with an error is left out: every condition was still checked.
    (errors.list.len() == before).then_some(RouteSpec {
        path_prefix,
        header,
        model,
        pool,
    })
}

fn header(errors: &mut Errors, at: &str, raw: RawHeaderMatch) -> Option<HeaderMatch> {
    let name = match raw.name {
        None => {
            errors.push(format!("{at}.header.name"), "is required");
            None
        }
        Some(n) if n.is_empty() => {
            errors.push(format!("{at}.header.name"), EMPTY);
            None
        }
        Some(n) if http::HeaderName::from_bytes(n.as_bytes()).is_err() => {
            errors.push(
                format!("{at}.header.name"),
                format!("{n:?} is not a header name"),
            );
            None
        }
        Some(n) => Some(n.to_ascii_lowercase()),
    };
    let regex = match raw.regex {
        None => {
            errors.push(
                format!("{at}.header.regex"),
                "is required (\"^\" matches any value)",
            );
            None
        }
        Some(text) if text.is_empty() => {
            errors.push(
                format!("{at}.header.regex"),
                "is empty; write \"^\" to match any value of the header",
            );
            None
        }
        Some(text) => match Regex::new(&text) {
            Ok(regex) => Some(regex),
            Err(e) => {
                let why = e.to_string().lines().last().unwrap_or_default().to_string();
                errors.push(
                    format!("{at}.header.regex"),
                    format!("{text:?} is not a regex: {why}"),
                );
                None
            }
        },
    };
    Some(HeaderMatch {
        name: name?,
        regex: regex?,
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
