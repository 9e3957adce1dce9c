//! The values labels take, each a small closed set, so that no client can
//! make the number of series grow: outcomes, retry reasons, status classes,
//! token kinds, and the model names a request may be counted under.

use crate::balance::pool::Upstream;
use crate::models::same_model;
use crate::state::Snapshot;

/// What the model label says for a model outside the fleet: a client may
/// ask for any name, and each would otherwise be a new series.
pub const OTHER_MODEL: &str = "other";

/// How a request ended, from the proxy's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A backend answered (any status below 500), or Switchyard answered a
    /// list itself.
    Ok,
    /// The client went away (or stopped reading) before the end.
    ClientCancelled,
    /// The backend failed: no connection, a dropped one, a 5xx.
    BackendError,
    /// The backend did not answer or went silent in time.
    Timeout,
    /// Switchyard refused the request itself (the `error_code` says why).
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::BackendError => "backend_error",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
        }
    }
}

/// Why an attempt was made again on another backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connect failed (refused, timed out).
    Connect,
    /// The backend answered 502, 503 or 429.
    Status,
    /// No response header within `first_byte`.
    FirstByteTimeout,
    /// A pooled connection the backend had closed while it sat idle.
    ConnectionClosed,
}

impl RetryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Status => "status",
            RetryReason::FirstByteTimeout => "first_byte_timeout",
            RetryReason::ConnectionClosed => "connection_closed",
        }
    }
}

/// Where a token count comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The backend's own `usage` (or Ollama's `eval_count`).
    Reported,
    /// Counted by Switchyard where the backend said nothing.
    Estimated,
}

impl TokenSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::Reported => "reported",
            TokenSource::Estimated => "estimated",
        }
    }
}

/// `2xx` for 200..=299 and so on; empty when no response was written (the
/// client left first).
pub fn status_class(status: Option<u16>) -> &'static str {
    match status.map(|s| s / 100) {
        Some(1) => "1xx",
        Some(2) => "2xx",
        Some(3) => "3xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        _ => "",
    }
}

/// Whether `model` may be a label value: a model some backend of the
/// fleet lists, or one an alias names (its own name or its target).
/// `upstream`, the backend that served the request, is asked first, as it
/// almost always lists the model.
pub fn is_fleet_model(snapshot: &Snapshot, upstream: Option<&Upstream>, model: &str) -> bool {
    if upstream.is_some_and(|up| up.models.serves(model) == Some(true)) {
        return true;
    }
    let aliases = &snapshot.config.models.aliases;
    if aliases.contains_key(model) || aliases.values().any(|t| same_model(t, model)) {
        return true;
    }
    snapshot
        .pools
        .iter()
        .flat_map(|p| p.upstreams())
        .any(|up| up.models.serves(model) == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::SharedState;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(200)), "2xx");
        assert_eq!(status_class(Some(101)), "1xx");
        assert_eq!(status_class(Some(429)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "");
        assert_eq!(status_class(Some(0)), "");
    }

    #[test]
    fn only_models_of_the_fleet_or_its_aliases_are_labels() {
        let config = Config::from_yaml(
            "pools:\n  chat:\n    health_check: { type: none }\n    backends:\n\
             \x20     - { name: a, url: \"http://127.0.0.1:9001\", models: [llama3] }\n\
             \x20     - { name: b, url: \"http://127.0.0.1:9002\" }\n\
             models:\n  aliases: { gpt-4o: \"qwen:7b\" }\n",
        )
        .unwrap();
        let state = SharedState::new(config);
        let snapshot = state.load_full();
        let b = snapshot.pools[0].upstreams()[1].clone();
        assert!(is_fleet_model(&snapshot, None, "llama3"));
        assert!(is_fleet_model(&snapshot, None, "llama3:latest"));
        assert!(is_fleet_model(&snapshot, Some(&b), "gpt-4o"));
        assert!(is_fleet_model(&snapshot, None, "qwen:7b"));
        // b's list is unknown: it may serve anything, which does not make
        // anything a label.
        assert!(!is_fleet_model(&snapshot, Some(&b), "made-up"));
    }
}
