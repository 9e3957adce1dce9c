//! What an admitted request holds: its concurrency slots, the buckets its
//! tokens are charged to, and the windows its response's headers report.
//! Dropped when the request ends however it ends (a client that hangs up
//! included), which gives the slots back.

use super::local::{self, Bucket, Local};
use super::redis::{key_of, Admitted, Finish, RedisStore};
use super::window::{reset_text, Window};
use super::Subject;
use crate::limits::{LimitSet, TokenRate};
use pingora_http::ResponseHeader;
use std::sync::Arc;

/// An admitted request's share of its limits.
#[derive(Default)]
pub struct Admission {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
    held: Held,
}

#[derive(Default)]
enum Held {
    #[default]
    Nothing,
    Local(Vec<(LimitSet, Bucket)>),
    Redis {
        store: Arc<RedisStore>,
        /// Concurrency counts to give back.
        slots: Vec<String>,
        /// Token buckets to charge.
        tokens: Vec<(String, TokenRate)>,
    },
}

impl Admission {
    pub(super) fn local(buckets: Vec<(Subject, Bucket)>, checked: local::Checked) -> Self {
        Admission {
            requests: checked.requests,
            tokens: checked.tokens,
            held: Held::Local(
                buckets
                    .into_iter()
                    .map(|(s, b)| (s.set.clone(), b))
                    .collect(),
            ),
        }
    }

    pub(super) fn redis(store: Arc<RedisStore>, subjects: &[Subject], admitted: Admitted) -> Self {
        let slots = subjects
            .iter()
            .filter(|s| s.set.concurrent.is_some())
            .map(|s| key_of(s, "c"))
            .collect();
        let tokens = subjects
            .iter()
            .filter_map(|s| Some((key_of(s, "t"), s.set.tokens?)))
            .collect();
        Admission {
            requests: admitted.requests,
            tokens: admitted.tokens,
            held: Held::Redis {
                store,
                slots,
                tokens,
            },
        }
    }

    /// OpenAI's `x-ratelimit-*` headers for the tightest buckets.
    pub fn write_headers(&self, response: &mut ResponseHeader) -> pingora_error::Result<()> {
        write_windows(response, self.requests, self.tokens)
    }

    /// Charges `tokens` and gives the slots back.
    pub(super) fn finish(mut self, local: &Local, tokens: Option<u64>) {
        match std::mem::take(&mut self.held) {
            Held::Nothing => {}
            Held::Local(buckets) => {
                if let Some(n) = tokens.filter(|n| *n > 0) {
                    local.charge(&buckets, n);
                }
                release_local(&buckets);
            }
            Held::Redis {
                store,
                slots,
                tokens: buckets,
            } => {
                let mut work: Vec<Finish> = slots
                    .into_iter()
                    .map(|key| Finish::Release { key })
                    .collect();
                if let Some(n) = tokens.filter(|n| *n > 0) {
                    work.extend(buckets.into_iter().map(|(key, rate)| Finish::Charge {
                        key,
                        tokens: n,
                        rate,
                    }));
                }
                store.finish(work);
            }
        }
    }
}

impl Drop for Admission {
    /// A request dropped without `finish` (its context went away) still
    /// gives its slots back.
    fn drop(&mut self) {
        match std::mem::take(&mut self.held) {
            Held::Nothing => {}
            Held::Local(buckets) => release_local(&buckets),
            Held::Redis { store, slots, .. } => store.finish(
                slots
                    .into_iter()
                    .map(|key| Finish::Release { key })
                    .collect(),
            ),
        }
    }
}

fn release_local(buckets: &[(LimitSet, Bucket)]) {
    for (set, bucket) in buckets {
        bucket.release(set);
    }
}

/// The `x-ratelimit-*` names (limit, remaining, reset) of requests and of
/// tokens: static, so that writing them on every admitted request formats
/// and allocates no name.
const NAMES: [[&str; 3]; 2] = [
    [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ],
    [
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ],
];

/// Writes the `x-ratelimit-*` headers of `requests` and `tokens`.
pub fn write_windows(
    response: &mut ResponseHeader,
    requests: Option<Window>,
    tokens: Option<Window>,
) -> pingora_error::Result<()> {
    for ([limit, remaining, reset], window) in NAMES.into_iter().zip([requests, tokens]) {
        let Some(w) = window else { continue };
        response.insert_header(limit, http::HeaderValue::from(w.limit))?;
        response.insert_header(remaining, http::HeaderValue::from(w.remaining))?;
        response.insert_header(reset, reset_text(w.reset))?;
    }
    Ok(())
}
