//! One API key: its name, the SHA-256 of its secret, what it may use and
//! the limits it overrides.

use crate::limits::LimitSet;
use crate::models::glob_match;
use sha2::{Digest as _, Sha256};

/// The SHA-256 of a key.
pub type Digest = [u8; 32];

/// The SHA-256 of `secret`.
pub fn digest(secret: &[u8]) -> Digest {
    Sha256::digest(secret).into()
}

/// `auth.keys[i]`.
#[derive(Clone, PartialEq)]
pub struct ApiKey {
    /// How logs, metrics and limits know the key; never the key itself.
    pub name: String,
    /// Of the secret; the secret itself is not kept.
    pub digest: Digest,
    pub access: Access,
    /// `limits:` of this key, over `limits.per_key`; `None` takes those.
    pub limits: Option<LimitSet>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("access", &self.access)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The pools and models a key may use; `None` is all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Names of pools.
    pub pools: Option<Vec<String>>,
    /// Globs (`*`, `?`) on the model asked for, as routes match it.
    pub models: Option<Vec<String>>,
}

impl Access {
    pub fn allows_pool(&self, pool: &str) -> bool {
        self.pools
            .as_ref()
            .is_none_or(|pools| pools.iter().any(|p| p == pool))
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|globs| globs.iter().any(|g| glob_match(g, model)))
    }

    /// Whether the key may use everything, so its model lists are the
    /// fleet's, unfiltered.
    pub fn is_unrestricted(&self) -> bool {
        self.pools.is_none() && self.models.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_by_pool_and_model_glob() {
        let access = Access {
            pools: Some(vec!["chat".into()]),
            models: Some(vec!["llama3*".into()]),
        };
        assert!(access.allows_pool("chat") && !access.allows_pool("embed"));
        assert!(access.allows_model("llama3") && access.allows_model("llama3.1:8b"));
        assert!(!access.allows_model("qwen2.5"));
        assert!(Access::default().allows_model("anything"));
        assert!(Access::default().is_unrestricted() && !access.is_unrestricted());
    }

    #[test]
    fn digest_is_sha256() {
        assert_eq!(
            hex::encode(digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
