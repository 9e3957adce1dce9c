//! `auth:`: the API keys, what each may use, and its limits.
//!
//! A key is never written in the file: it is given as its SHA-256
//! (`switchyard key hash` prints the line), or read from an environment
//! variable or a file, here, so that `-t` and a reload find a missing one.
//! No message shows a key or a digest; they name the key by its `name`.

use super::admin::{from_env, from_file};
use super::Errors;
use crate::auth::{key, Access, ApiKey, AuthSpec};
use crate::config::model::PoolSpec;
use crate::config::raw::{RawAuth, RawKey};
use std::collections::HashMap;

/// Keys in one file. Each is a few hundred bytes in memory and a line of
/// YAML; ten thousand covers a company's users and services without a
/// database, and a generated file past it is a mistake.
pub const MAX_KEYS: usize = 10_000;

/// Globs in one key's `models`, each compared with the request's model.
pub const MAX_MODEL_GLOBS: usize = 256;

pub(super) fn auth(
    errors: &mut Errors,
    raw: Option<RawAuth>,
    pools: &[PoolSpec],
) -> Option<AuthSpec> {
    errors.mistyped("auth", || "a mapping with keys and forward".into());
    let raw = raw?;
    errors.mistyped("auth.keys", || "a list of keys".into());
    let raw_keys = raw.keys.unwrap_or_default();
    if raw_keys.is_empty() && !errors.is_mistyped("auth.keys") {
        errors.push(
            "auth.keys",
            "at least one key is required (without auth: every request is let in)",
        );
    }
    if raw_keys.len() > MAX_KEYS {
        let n = raw_keys.len();
        errors.push(
            "auth.keys",
            format!("has {n} keys, more than the maximum {MAX_KEYS}"),
        );
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut digests: HashMap<key::Digest, usize> = HashMap::new();
    let mut keys = Vec::new();
    for (i, raw) in raw_keys.into_iter().enumerate() {
        let at = format!("auth.keys[{i}]");
        let Some(k) = one_key(errors, &at, raw, pools) else {
            continue;
        };
        if let Some(first) = names.insert(k.name.clone(), i) {
            errors.push(
                format!("{at}.name"),
                format!("{:?} is also the name of auth.keys[{first}]", k.name),
            );
            continue;
        }
        if let Some(first) = digests.insert(k.digest, i) {
            errors.push(
                &at,
                format!("is the same key as auth.keys[{first}]: a key names one caller"),
            );
            continue;
        }
        keys.push(k);
    }
    Some(AuthSpec::new(keys, raw.forward.unwrap_or(false)))
}

fn one_key(errors: &mut Errors, at: &str, raw: RawKey, pools: &[PoolSpec]) -> Option<ApiKey> {
    let name = match raw.name {
        Some(name) if valid_name(&name) => Some(name),
        Some(name) => {
            errors.push(
                format!("{at}.name"),
                format!("{name:?} may only use letters, digits, '-', '_', '.' and '@' (1 to 64)"),
            );
            None
        }
        None => {
            if !errors.is_mistyped(&format!("{at}.name")) {
                errors.push(format!("{at}.name"), "is required");
            }
            None
        }
    };
    if raw.key.is_some() {
        errors.push(
            format!("{at}.key"),
            "a key is never written in the file: give its sha256 (`switchyard key hash` \
             prints the line), or read it with env: VAR or file: PATH",
        );
    }
    let given = [raw.sha256.is_some(), raw.env.is_some(), raw.file.is_some()];
    let digest = match (raw.sha256, raw.env, raw.file) {
        _ if given.iter().filter(|g| **g).count() > 1 => {
            errors.push(at, "give one of sha256, env and file");
            None
        }
        (Some(hex), _, _) => sha256(errors, &format!("{at}.sha256"), &hex),
        (_, Some(var), _) => {
            from_env(errors, &format!("{at}.env"), &var).map(|s| key::digest(s.as_bytes()))
        }
        (_, _, Some(file)) => {
            from_file(errors, &format!("{at}.file"), &file).map(|s| key::digest(s.as_bytes()))
        }
        (None, None, None) => {
            if raw.key.is_none()
                && !["sha256", "env", "file"]
                    .iter()
                    .any(|k| errors.is_mistyped(&format!("{at}.{k}")))
            {
                errors.push(
                    at,
                    "needs its key: sha256 (`switchyard key hash` prints the line), env: VAR or file: PATH",
                );
            }
            None
        }
    };
    let access = Access {
        pools: raw.pools.inspect(|list| {
            for (i, pool) in list.iter().enumerate() {
                if !pools.iter().any(|p| &p.name == pool) {
                    errors.push(
                        format!("{at}.pools[{i}]"),
                        format!("{pool:?} is not a pool"),
                    );
                }
            }
        }),
        models: raw.models.inspect(|globs| {
            if globs.len() > MAX_MODEL_GLOBS {
                errors.push(
                    format!("{at}.models"),
                    format!(
                        "has {} globs, more than the maximum {MAX_MODEL_GLOBS}",
                        globs.len()
                    ),
                );
            }
            for (i, glob) in globs.iter().enumerate() {
                if glob.trim().is_empty() {
                    errors.push(format!("{at}.models[{i}]"), "is empty");
                }
            }
        }),
    };
    let limits = raw
        .limits
        .map(|l| super::limits::set(errors, &format!("{at}.limits"), Some(l)));
    Some(ApiKey {
        name: name?,
        digest: digest?,
        access,
        limits,
    })
}

/// Names go into logs and metric labels as they are.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

fn sha256(errors: &mut Errors, path: &str, text: &str) -> Option<key::Digest> {
    let mut digest = [0u8; 32];
    match hex::decode_to_slice(text.trim(), &mut digest) {
        Ok(()) => Some(digest),
        Err(_) => {
            errors.push(
                path,
                "is not a SHA-256 in hex (64 characters 0-9, a-f): \
                 `switchyard key hash` prints the line",
            );
            None
        }
    }
}
