//! `pools.NAME.headers` and `pools.NAME.backends[i].headers`: what a
//! backend is sent besides the client's request, its credentials above all.
//!
//! A value is plain text, or read from an environment variable or a file
//! (`{ env: OPENAI_API_KEY, prefix: "Bearer " }`, `{ file: PATH }`), here,
//! so that `-t` and a reload find a missing one and a reload applies a
//! changed key. A credential header (`Authorization`, `x-api-key`,
//! `api-key`) must take the second form: a key written into the file ends
//! up in backups, tickets and repositories. No message shows a value read
//! from outside the file; they name the variable or the file.

use super::admin::env_value;
use super::Errors;
use crate::config::model::{BackendHeader, HeaderText, Secret, CREDENTIAL_HEADERS};
use crate::config::raw::{RawHeaderValue, RawValueSource};
use std::collections::BTreeMap;

/// Headers one mapping may set: a handful is all any provider asks for.
pub const MAX_HEADERS: usize = 32;

/// The longest value, prefix included: a JWT with many claims fits.
pub const MAX_VALUE: usize = 8 << 10;

/// Headers Switchyard or HTTP itself sets for each request: setting them
/// per backend would break the request (`Content-Length`) or be
/// overwritten (`Host`: see `host_header`).
const RESERVED: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "expect",
];

/// Checks one `headers:` mapping at `at` (`pools.cloud.headers`) and reads
/// the values it points to.
pub(super) fn headers(
    errors: &mut Errors,
    at: &str,
    raw: Option<BTreeMap<String, RawHeaderValue>>,
) -> Vec<BackendHeader> {
    if errors.mistyped(at, || {
        "a mapping of header names to values: text, { env: VAR } or { file: PATH }, \
         each with an optional prefix"
            .into()
    }) {
        return Vec::new();
    }
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_HEADERS {
        errors.push(
            at,
            format!(
                "{} headers is more than the maximum {MAX_HEADERS}",
                raw.len()
            ),
        );
        return Vec::new();
    }
    let mut out: Vec<BackendHeader> = Vec::new();
    for (name, value) in raw {
        let path = format!("{at}.{name}");
        if errors.mistyped(&path, || {
            "text, or a mapping with env or file (and prefix)".into()
        }) {
            continue;
        }
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            errors.push(&path, format!("{name:?} is not an HTTP header name"));
            continue;
        };
        if RESERVED.contains(&header.as_str()) {
            errors.push(
                &path,
                format!("{name} is set by Switchyard for each request, not per backend"),
            );
            continue;
        }
        if out.iter().any(|h| h.name == header) {
            errors.push(
                &path,
                format!("{name} is given twice (header names are not case-sensitive)"),
            );
            continue;
        }
        let credential = CREDENTIAL_HEADERS.contains(&header.as_str());
        let text = match value {
            RawHeaderValue::Text(_) if credential => {
                errors.push(
                    &path,
                    format!(
                        "{name} carries a credential, which is never written in the file: \
                         use {{ env: VARIABLE }} or {{ file: PATH }} (with prefix: \"Bearer \" \
                         if the backend wants one)"
                    ),
                );
                continue;
            }
            RawHeaderValue::Text(text) => match check(&text) {
                Ok(()) => HeaderText::Plain(text),
                Err(why) => {
                    errors.push(&path, format!("{text:?} {why}"));
                    continue;
                }
            },
            RawHeaderValue::From(source) => match read(errors, &path, source) {
                Some(secret) => HeaderText::Secret(secret),
                None => continue,
            },
        };
        out.push(BackendHeader {
            name: header,
            value: text,
        });
    }
    out
}

/// The pool's headers with the backend's own: a backend's value replaces
/// the pool's of the same name.
pub(super) fn merge(pool: &[BackendHeader], own: Vec<BackendHeader>) -> Vec<BackendHeader> {
    let mut out: Vec<BackendHeader> = pool
        .iter()
        .filter(|h| !own.iter().any(|o| o.name == h.name))
        .cloned()
        .collect();
    out.extend(own);
    out
}

/// Why `value` cannot be a header value, if it cannot.
fn check(value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE {
        return Err(format!(
            "has {} bytes, more than the maximum {MAX_VALUE}",
            value.len()
        ));
    }
    if http::HeaderValue::from_str(value).is_err() {
        return Err("has characters an HTTP header cannot carry".into());
    }
    Ok(())
}

/// Reads `{ env | file, prefix }`. The value is kept as a [`Secret`]
/// whatever the header, since it came from outside the file.
fn read(errors: &mut Errors, path: &str, source: RawValueSource) -> Option<Secret> {
    let prefix = source.prefix.unwrap_or_default();
    let (value, from) = match (source.env, source.file) {
        (Some(_), Some(_)) => {
            errors.push(path, "give env or file, not both");
            return None;
        }
        (None, None) => {
            errors.push(
                path,
                "needs env: VARIABLE or file: PATH (and an optional prefix)",
            );
            return None;
        }
        (Some(name), None) => {
            let value = env_value(errors, &format!("{path}.env"), &name)?;
            (value, format!("environment variable {name}"))
        }
        (None, Some(file)) => match read_file(&file) {
            Ok(text) => (text, format!("file {file:?}")),
            Err(why) => {
                errors.push(format!("{path}.file"), why);
                return None;
            }
        },
    };
    if value.is_empty() {
        errors.push(path, format!("{from} is empty"));
        return None;
    }
    let full = prefix + &value;
    // The message names where the value came from, never the value.
    if let Err(why) = check(&full) {
        errors.push(path, format!("the value from {from} {why}"));
        return None;
    }
    Some(Secret::new(full))
}

/// A file's content without its trailing newline (the one `echo` and
/// editors leave).
fn read_file(file: &str) -> Result<String, String> {
    let limit = MAX_VALUE as u64 + 2;
    let len = std::fs::metadata(file)
        .map_err(|e| format!("cannot read {file:?}: {e}"))?
        .len();
    if len > limit {
        return Err(format!(
            "file {file:?} has {len} bytes, more than the maximum {MAX_VALUE}"
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => format!("file {file:?} is not UTF-8 text"),
        _ => format!("cannot read {file:?}: {e}"),
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Ok(text.to_string())
}
