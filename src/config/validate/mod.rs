//! Turns the file format ([`super::raw`]) into the checked model ([`super::model`]).
//!
//! Validation never stops at the first problem: each check pushes an error
//! naming its key path and the offending value, and carries on with a
//! placeholder, so `switchyard -t` lists everything wrong with a file at once.
//! A value of the wrong YAML type ([`super::mistyped`]) is reported here too,
//! saying what its key takes with the same range the check of its value uses.
//!
//! Every number and duration has a range, and its error says the bound
//! (`pools.chat.health_check.interval: "500000000000y" is more than the
//! maximum 1h`): an unbounded value is a panic or an allocation waiting for
//! the code that uses it. The defaults and ranges are constants, each with
//! the reason for its value, in the module of their section:
//! - [`server`], `server:`: the process and the client side;
//! - [`tls`], `server.listen[i].tls`: certificates, read and checked;
//! - [`pools`], `pools.NAME`: timeouts, health check, circuit and queue;
//! - [`backends`], `pools.NAME.backends`: and what a pool may cost to build;
//! - [`headers`], `headers` of a pool or a backend, and their credentials;
//! - [`routes`], `routes`;
//! - [`models`], `models:`;
//! - [`admin`], `admin:`: the admin listener and its token;
//! - [`access_log`], `access_log:`;
//! - [`auth`], `auth:`: the API keys;
//! - [`limits`], `limits:` and the limits of keys and pools.

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod backends;
pub mod headers;
pub mod limits;
pub mod models;
pub mod pools;
pub mod routes;
pub mod server;
pub mod tls;

use super::mistyped::Mistyped;
use super::model::*;
use super::raw::*;
use super::{ConfigError, ConfigErrors};
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Collects errors while validating.
#[derive(Default)]
struct Errors {
    /// In the order found.
    list: Vec<ConfigError>,
    /// Values of the wrong type, already taken out of the raw structs: each
    /// is reported once, saying what its key takes, and nothing else is
    /// said about its key (it is not also missing, or empty).
    mistyped: Vec<Mistyped>,
}

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if self.mistyped.iter().any(|m| m.covers(&path)) {
            return;
        }
        self.list.push(ConfigError {
            path,
            message: message.into(),
        });
    }

    /// Whether the value at `path` was of the wrong type.
    fn is_mistyped(&self, path: &str) -> bool {
        self.mistyped.iter().any(|m| m.path == path)
    }

    /// Whether the value at `path` was of the wrong type; if so, its error
    /// says the key takes `takes` (`a whole number from 0 to 1000`).
    fn mistyped(&mut self, path: &str, takes: impl FnOnce() -> String) -> bool {
        match self.mistyped.iter_mut().find(|m| m.path == path) {
            Some(m) => {
                m.takes = takes();
                true
            }
            None => false,
        }
    }

    /// Checks `value` against `range`; `shown` is how the value was written
    /// and `show` writes a bound the same way.
    fn within<T: PartialOrd + Copy>(
        &mut self,
        path: &str,
        value: T,
        shown: impl Display,
        range: &RangeInclusive<T>,
        show: impl Fn(T) -> String,
    ) -> bool {
        if value < *range.start() {
            let min = show(*range.start());
            self.push(path, format!("{shown} is less than the minimum {min}"));
            false
        } else if value > *range.end() {
            let max = show(*range.end());
            self.push(path, format!("{shown} is more than the maximum {max}"));
            false
        } else {
            true
        }
    }

    /// A duration such as `500ms`, `2s` or `5m`, within `range`.
    fn duration(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: Duration,
        range: &RangeInclusive<Duration>,
    ) -> Duration {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        let Some(text) = value else {
            self.mistyped(path, || {
                let (min, max) = (show(*range.start()), show(*range.end()));
                format!("a duration from {min} to {max}, such as {}", show(default))
            });
            return default;
        };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if self.within(path, d, format_args!("{text:?}"), range, show) => d,
            Ok(_) => default,
            // Too large for a `Duration` is above any maximum.
            Err(humantime::DurationError::NumberOverflow) => {
                let max = show(*range.end());
                self.push(path, format!("{text:?} is more than the maximum {max}"));
                default
            }
            Err(_) => {
                self.push(
                    path,
                    format!("{text:?} is not a duration (use a unit: 500ms, 2s, 5m)"),
                );
                default
            }
        }
    }

    /// A count within `range`.
    fn count(
        &mut self,
        path: &str,
        value: Option<usize>,
        default: usize,
        range: &RangeInclusive<usize>,
    ) -> usize {
        match value {
            None => {
                self.mistyped(path, || {
                    let (min, max) = (range.start(), range.end());
                    format!("a whole number from {min} to {max}")
                });
                default
            }
            Some(n) if self.within(path, n, n, range, |b| b.to_string()) => n,
            Some(_) => default,
        }
    }

    /// A size such as `512KiB` or `32MiB`, within `range`.
    fn size(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: usize,
        range: &RangeInclusive<usize>,
    ) -> usize {
        let Some(text) = value else {
            self.mistyped(path, || {
                let (min, max) = (show_size(*range.start()), show_size(*range.end()));
                format!("a size from {min} to {max}, such as {}", show_size(default))
            });
            return default;
        };
        let Some(n) = parse_size(text) else {
            self.push(
                path,
                format!("{text:?} is not a size (use a unit: 512KiB, 32MiB)"),
            );
            return default;
        };
        // Compared as u128 so that a size beyond usize is above the maximum.
        let wide = *range.start() as u128..=*range.end() as u128;
        let show = |b: u128| show_size(b as usize);
        if self.within(path, n, format_args!("{text:?}"), &wide, show) {
            n as usize
        } else {
            default
        }
    }
}

/// Parses `123`, `512KiB`, `32MiB`, `1GiB` (also KB/MB/GB, as 1000s).
fn parse_size(text: &str) -> Option<u128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    // Only digits are left, so the one way to fail is overflow.
    let n: u128 = number.parse().unwrap_or(u128::MAX);
    let scale: u128 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    Some(n.saturating_mul(scale))
}

/// `32MiB`, `1KiB`, `1500`: the largest binary unit that divides the size.
fn show_size(bytes: usize) -> String {
    for (unit, scale) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

/// Validates a parsed file, whose values of the wrong type were taken out
/// and are in `mistyped`. Relative file paths in it start at `dir`, the
/// file's directory.
pub fn validate(
    raw: RawConfig,
    mistyped: Vec<Mistyped>,
    dir: &std::path::Path,
) -> Result<Config, ConfigErrors> {
    let mut errors = Errors {
        list: Vec::new(),
        mistyped,
    };
    let server = server::server(&mut errors, raw.server.unwrap_or_default(), dir);

    errors.mistyped("pools", || "a mapping of pool names to pools".into());
    let raw_pools = raw.pools.unwrap_or_default();
    if raw_pools.is_empty() {
        errors.push("pools", "at least one pool is required");
    }
    let mut roots = super::tls::SystemRoots::default();
    let pools: Vec<PoolSpec> = raw_pools
        .into_iter()
        .map(|(name, p)| pools::pool(&mut errors, name, p, &server.listen, &mut roots))
        .collect();
    backends::fleet_limits(&mut errors, &pools);

    let raw_routes = raw.routes.unwrap_or_default();
    let routes = if raw_routes.is_empty() {
        routes::default_routes(&mut errors, &pools)
    } else {
        raw_routes
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| routes::route(&mut errors, i, r, &pools))
            .collect()
    };

    let models = models::models(&mut errors, raw.models.unwrap_or_default());
    let admin = admin::admin(&mut errors, raw.admin, &server.listen);
    let access_log = access_log::access_log(&mut errors, raw.access_log);
    let auth = auth::auth(&mut errors, raw.auth, &pools);
    let limits = limits::limits(&mut errors, raw.limits);

    if errors.list.is_empty() && errors.mistyped.is_empty() {
        Ok(Config {
            server,
            pools,
            routes,
            models,
            admin,
            access_log,
            auth,
            limits,
        })
    } else {
        let mut all: Vec<ConfigError> = errors.mistyped.iter().map(Mistyped::error).collect();
        all.append(&mut errors.list);
        Err(ConfigErrors(all))
    }
}
