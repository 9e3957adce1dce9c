//! `server.listen[i].tls`: the certificates of a TLS listener, read from
//! their files and checked here, so that `-t`, a start and a reload refuse
//! a missing file, one that is not PEM, or a key that is not its
//! certificate's, each error naming the key and the path. Like the admin
//! token, this reads outside the configuration file; a reload re-reads
//! every certificate.
//!
//! A certificate that expires soon or has expired is not an error but a
//! warning ([`crate::config::Config::warnings`]): refusing it would turn a
//! failed renewal into a proxy that does not start at all after its next
//! restart, plain listeners included.

use super::Errors;
use crate::config::raw::{RawCertPair, RawTls};
use crate::tls::certificate::{Certificate, Part};
use std::path::{Path, PathBuf};

/// Certificates on one listener. Each is a name or a few a client may ask
/// for by SNI; a thousand covers a multi-tenant edge while bounding what
/// every reload reads and parses.
pub const MAX_CERTS: usize = 1024;

/// What `tls` takes, for messages.
const TLS_TAKES: &str = "{ cert: FILE, key: FILE } or { certs: [{ cert: FILE, key: FILE }, ...] }";

/// The certificates of `raw`, at key `at` (`server.listen[0].tls`), with
/// relative paths taken from `dir`. Empty when any is wrong.
pub(super) fn certificates(
    errors: &mut Errors,
    at: &str,
    raw: RawTls,
    dir: &Path,
) -> Vec<Certificate> {
    if errors.mistyped(at, || format!("a mapping: {TLS_TAKES}")) {
        return Vec::new();
    }
    let single = raw.cert.is_some() || raw.key.is_some();
    let pairs: Vec<(String, RawCertPair)> = match (single, raw.certs) {
        (true, Some(_)) => {
            errors.push(
                at,
                format!("give cert and key, or certs, not both: {TLS_TAKES}"),
            );
            return Vec::new();
        }
        (true, None) => vec![(
            at.to_string(),
            RawCertPair {
                cert: raw.cert,
                key: raw.key,
            },
        )],
        (false, Some(list)) => {
            let key = format!("{at}.certs");
            if errors.mistyped(&key, || "a list of { cert: FILE, key: FILE }".into()) {
                return Vec::new();
            }
            if list.is_empty() {
                errors.push(key, "lists no certificate");
                return Vec::new();
            }
            if list.len() > MAX_CERTS {
                let n = list.len();
                errors.push(
                    key,
                    format!("has {n} certificates, more than the maximum {MAX_CERTS}"),
                );
                return Vec::new();
            }
            list.into_iter()
                .enumerate()
                .map(|(j, pair)| (format!("{at}.certs[{j}]"), pair))
                .collect()
        }
        (false, None) => {
            errors.push(at, format!("names no certificate: {TLS_TAKES}"));
            return Vec::new();
        }
    };
    let mut certs = Vec::new();
    let mut failed = false;
    for (entry, pair) in pairs {
        match certificate(errors, &entry, pair, dir) {
            Some(cert) => certs.push(cert),
            None => failed = true,
        }
    }
    if failed {
        Vec::new()
    } else {
        certs
    }
}

/// One `{ cert, key }` at `entry`, loaded.
fn certificate(
    errors: &mut Errors,
    entry: &str,
    pair: RawCertPair,
    dir: &Path,
) -> Option<Certificate> {
    let cert = file(errors, &format!("{entry}.cert"), pair.cert, dir);
    let key = file(errors, &format!("{entry}.key"), pair.key, dir);
    let (cert, key) = (cert?, key?);
    match Certificate::load(entry, &cert, &key) {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            let path = match e.part {
                Part::Cert => format!("{entry}.cert"),
                Part::Key => format!("{entry}.key"),
                Part::Pair => entry.to_string(),
            };
            errors.push(path, e.message);
            None
        }
    }
}

/// The path at `key`, relative ones joined to `dir`.
fn file(errors: &mut Errors, key: &str, raw: Option<String>, dir: &Path) -> Option<PathBuf> {
    if errors.mistyped(key, || "a file path".into()) {
        return None;
    }
    let Some(text) = raw else {
        errors.push(key, "is required: a PEM file");
        return None;
    };
    if text.is_empty() || text.contains('\0') {
        errors.push(key, format!("{text:?} is not a file path"));
        return None;
    }
    Some(dir.join(text))
}
