//! API keys: who a request is from, and what it may use.
//!
//! With `auth:` in the configuration every request must carry one of its
//! keys, in `Authorization: Bearer KEY` (OpenAI's SDKs) or `x-api-key: KEY`
//! (Anthropic's). The file never holds a key itself, only its SHA-256 (or
//! where to read the key: an environment variable or a file), so a leaked
//! configuration leaks no key. A presented key is hashed and its digest
//! looked up, then compared in constant time, so neither the lookup nor the
//! comparison tells an attacker how much of a guess was right.
//!
//! A key is known by its `name` everywhere else: the access log, the
//! metrics' labels, the limits. The key itself is never logged, and is
//! taken off the request before it goes to a backend unless
//! `auth.forward: true`.
//!
//! The table of keys is part of the checked configuration, so a reload
//! (SIGHUP) replaces it with the rest of the snapshot.
//!
//! # Layout
//! - [`key`]: one key: its digest, the pools and models it may use.
//! - [`presented`]: finding the key a request carries, and taking it off
//!   the forwarded request.
//! - [`keygen`]: `switchyard key hash` and `switchyard key new`.

pub mod key;
pub mod keygen;
pub mod presented;

pub use key::{Access, ApiKey, Digest};

use http::HeaderMap;
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// `auth:`: the keys, and whether a key is passed on to the backends.
/// Checks: [`crate::config::validate::auth`].
#[derive(Debug, Clone)]
pub struct AuthSpec {
    /// In file order.
    pub keys: Vec<Arc<ApiKey>>,
    /// Whether the client's `Authorization` and `x-api-key` go on to the
    /// backend. Default off: the backends do not know Switchyard's keys,
    /// and a backend (or its logs) should not learn them.
    pub forward: bool,
    /// Digest to index in `keys`.
    by_digest: HashMap<Digest, usize>,
}

impl PartialEq for AuthSpec {
    fn eq(&self, other: &Self) -> bool {
        self.forward == other.forward && self.keys == other.keys
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// It carried no key.
    Missing,
    /// It carried a key that is not one of the configured ones.
    Unknown,
}

impl AuthSpec {
    /// The keys, which validation has made sure have distinct names and
    /// digests.
    pub fn new(keys: Vec<ApiKey>, forward: bool) -> Self {
        let by_digest = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.digest, i))
            .collect();
        AuthSpec {
            keys: keys.into_iter().map(Arc::new).collect(),
            forward,
            by_digest,
        }
    }

    /// The key a request with `headers` carries.
    pub fn identify(&self, headers: &HeaderMap) -> Result<&Arc<ApiKey>, Denied> {
        let presented = presented::key(headers).ok_or(Denied::Missing)?;
        self.find(presented).ok_or(Denied::Unknown)
    }

    /// The key whose secret is `presented`.
    pub fn find(&self, presented: &[u8]) -> Option<&Arc<ApiKey>> {
        let digest = key::digest(presented);
        let key = &self.keys[*self.by_digest.get(&digest)?];
        // The map found it by a hash of the digest; this says it is the
        // same digest, in a time that does not depend on where they differ.
        bool::from(key.digest.ct_eq(&digest)).then_some(key)
    }

    /// The key called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<ApiKey>> {
        self.keys.iter().find(|k| k.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AuthSpec {
        let key = |name: &str, secret: &[u8]| ApiKey {
            name: name.into(),
            digest: key::digest(secret),
            access: Access::default(),
            limits: None,
        };
        AuthSpec::new(
            vec![key("alice", b"sk-alice"), key("bob", b"sk-bob")],
            false,
        )
    }

    #[test]
    fn finds_the_key_by_its_secret_from_either_header() {
        let spec = spec();
        let mut headers = HeaderMap::new();
        assert_eq!(spec.identify(&headers).err(), Some(Denied::Missing));
        headers.insert("authorization", "Bearer sk-bob".parse().unwrap());
        assert_eq!(spec.identify(&headers).unwrap().name, "bob");
        headers.insert("authorization", "Bearer sk-bobx".parse().unwrap());
        assert_eq!(spec.identify(&headers).err(), Some(Denied::Unknown));
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "sk-alice".parse().unwrap());
        assert_eq!(spec.identify(&headers).unwrap().name, "alice");
    }
}
