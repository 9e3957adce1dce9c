//! What one request tells the metrics, gathered as it goes and recorded
//! once, from `logging`, however the request ended.
//!
//! The hooks note instants in the request's `timing` and answers here
//! ([`Observed`]); which
//! outcome, status class and labels that makes is decided in one place,
//! [`record`]. A request costs three or four clock reads, one lookup of
//! its series ([`crate::metrics::series`], nearly always in its backend's
//! hint) and one bucket of its backend's last minute
//! ([`crate::metrics::window`]).

use super::ctx::RequestCtx;
use super::failure::refusal_for;
use super::usage;
use crate::errors::Refusal;
use crate::metrics::labels::is_fleet_model;
use crate::metrics::window::Sample;
use crate::metrics::{Metrics, Outcome, RequestRecord, TokenSource, Usage};
use pingora_error::Error;
use pingora_proxy::Session;
// Not tokio's: pingora-core turns on tokio's `test-util`, whose `Instant::now`
// goes through the runtime's mockable clock on every read, and nothing
// here is a timer a test would pause.
use std::time::Instant;

/// How one request ended and what it produced, beside its instants
/// (`RequestCtx::timing`).
#[derive(Debug, Default)]
pub struct Observed {
    /// How the request ended when Switchyard answered it itself, or the
    /// client left: the outcome and `error.code`.
    answered: Option<(Outcome, &'static str)>,
    /// The response's tokens, once read.
    usage: Option<Usage>,
}

impl Observed {
    /// Switchyard answered with `refusal`; `None` when the client was gone.
    pub(super) fn answered(&mut self, refusal: Option<&Refusal>) {
        self.answered = Some(match refusal {
            None => (Outcome::ClientCancelled, ""),
            Some(r) => (outcome_of(r), r.code()),
        });
    }

    /// The `error.code` of the answer Switchyard gave itself, if it did.
    pub(super) fn error_code(&self) -> Option<&'static str> {
        self.answered
            .map(|(_, code)| code)
            .filter(|code| !code.is_empty())
    }

    /// The response's token counts as the usage reader found them; a
    /// response without a completion count has none to record.
    pub(super) fn set_usage(&mut self, read: &usage::Usage) {
        self.usage = read.completion.map(|completion| Usage {
            prompt: read.prompt.unwrap_or(0),
            completion,
            source: match read.source {
                usage::Source::Reported => TokenSource::Reported,
                usage::Source::Estimated => TokenSource::Estimated,
            },
        });
    }
}

/// What a refusal says of how the request ended.
fn outcome_of(refusal: &Refusal) -> Outcome {
    match refusal {
        Refusal::BackendError { .. } => Outcome::BackendError,
        Refusal::BackendTimeout { .. } => Outcome::Timeout,
        _ => Outcome::Refused,
    }
}

/// Records the request that ends now: once, from `logging`.
pub(super) fn record(metrics: &Metrics, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let end = Instant::now();
    let seen = &ctx.observed;
    let timing = &ctx.timing;
    let status = session.response_written().map(|r| r.status.as_u16());
    let pool = ctx.pool().map_or("", |p| p.spec.name.as_str());
    let (outcome, error_code) = match (seen.answered, e) {
        (Some(answered), _) => answered,
        // `fail_to_proxy` answers every error first; this is a backstop.
        (None, Some(e)) => refusal_for(e, false, pool, false)
            .map_or((Outcome::ClientCancelled, ""), |r| {
                (outcome_of(&r), r.code())
            }),
        // The backend's own 5xx, passed on.
        (None, None) if status.is_some_and(|s| s >= 500) => (Outcome::BackendError, ""),
        (None, None) => (Outcome::Ok, ""),
    };
    if outcome == Outcome::ClientCancelled {
        metrics.client_cancelled(pool, status.is_some());
    }
    let streamed = ctx.stream.is_some();
    let first = timing.first_byte.filter(|_| streamed);
    let record = RequestRecord {
        status,
        outcome: Some(outcome),
        error_code,
        duration: end.saturating_duration_since(timing.start),
        ttft: timing.ttft().filter(|_| streamed),
        decode: first.map(|first| end.saturating_duration_since(first)),
        usage: seen.usage,
    };
    let upstream = ctx.attempt.as_ref().map(|a| &a.upstream);
    record_windows(ctx, end, outcome, &record);
    let backend = upstream.map_or("", |u| u.spec.name.as_str());
    let model = ctx
        .served_model
        .as_deref()
        .or(ctx.model.as_deref())
        .unwrap_or("");
    let known = || {
        ctx.snapshot
            .as_ref()
            .is_some_and(|s| is_fleet_model(s, upstream.map(|u| &**u), model))
    };
    let hint = upstream.map(|u| &u.series);
    metrics.record_request((pool, backend, model), hint, known, &record);
}

/// Adds the request to the last minute of each backend it was sent to
/// (`/status`): the one that answered, with its outcome, and those of
/// earlier attempts, which failed, or the request would not have been
/// retried. A backend whose failures were retried away is then seen
/// failing on the status page, not only in its circuit.
fn record_windows(ctx: &RequestCtx, end: Instant, outcome: Outcome, record: &RequestRecord) {
    let last = ctx.attempt.as_ref().map(|a| &a.upstream);
    if let Some(up) = last {
        up.window.record(
            end,
            Sample {
                error: matches!(outcome, Outcome::BackendError | Outcome::Timeout),
                ttft: record.ttft,
                tokens: record.usage.map_or(0, |u| u.completion),
            },
        );
    }
    let Some(pool) = ctx.pool() else { return };
    let failed = Sample {
        error: true,
        ..Sample::default()
    };
    for addr in &ctx.tried {
        if last.is_some_and(|up| up.spec.addr == *addr) {
            continue;
        }
        if let Some(up) = pool.upstream(*addr) {
            up.window.record(end, failed);
        }
    }
}
