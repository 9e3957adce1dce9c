//! The checked limits: what `limits:`, `auth.keys[i].limits` and
//! `pools.NAME.limits` say. Ranges and defaults:
//! [`crate::config::validate::limits`].

use std::time::Duration;

/// `limits:`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitsSpec {
    /// Each client address (behind `server.trusted_proxies`) on its own.
    pub per_address: LimitSet,
    /// Each key that has no `limits` of its own.
    pub per_key: LimitSet,
    /// Where the counts are kept; `None` is in this process.
    pub store: Option<StoreSpec>,
}

/// The limits of one scope; each `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LimitSet {
    pub requests: Option<RequestRate>,
    pub tokens: Option<TokenRate>,
    /// Requests in flight at once.
    pub concurrent: Option<u32>,
}

impl LimitSet {
    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none() && self.concurrent.is_none()
    }
}

/// `requests: { per, limit, burst }`: `limit` requests each `per`, with up
/// to `burst` at once (GCRA: a request is admitted when it would fit a
/// bucket of `burst` that drains at `limit / per`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestRate {
    pub per: Duration,
    pub limit: u32,
    pub burst: u32,
}

impl RequestRate {
    /// The time one request's room takes to come back.
    pub fn interval(&self) -> Duration {
        self.per / self.limit
    }
}

/// `tokens: { per, limit }`: prompt and completion tokens, `limit` each
/// `per`, charged when a response reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenRate {
    pub per: Duration,
    pub limit: u64,
}

/// `limits.store:`: counts kept in Redis, shared by every instance that
/// names the same one.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSpec {
    /// `redis://host:port/db` (or `rediss://`), as written.
    pub redis: String,
    /// Longest a check may wait for Redis before `on_store_error` decides.
    pub timeout: Duration,
    pub on_store_error: OnStoreError,
}

/// What a request gets when the store cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Let it through, unlimited: an outage of Redis must not take the
    /// fleet down with it.
    Allow,
    /// Refuse it with a 503.
    Deny,
}
