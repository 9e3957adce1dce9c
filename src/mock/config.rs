//! What a mock backend is told to be: its name, the models it serves, how fast
//! it "generates", and how it misbehaves.
//!
//! The configuration is a plain value. [`MockServer`](super::MockServer) keeps
//! it in an `ArcSwap` so tests can change timing, models and failure mode while
//! the server runs; each request reads one snapshot, so a change never applies
//! to half a request.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Models served when none are configured explicitly. Two names, so tests of
/// model-aware routing have something to tell apart out of the box.
pub const DEFAULT_MODELS: [&str; 2] = ["llama3", "qwen2.5"];

/// Default delay before the first token. Small enough that a test suite of
/// hundreds of requests stays fast, large enough that a stream is visibly
/// not instantaneous.
pub const DEFAULT_TTFT: Duration = Duration::from_millis(10);

/// Default delay between two tokens of a stream.
pub const DEFAULT_TOKEN_GAP: Duration = Duration::from_millis(5);

/// Default number of generated tokens per completion.
pub const DEFAULT_TOKENS: usize = 8;

/// How the backend misbehaves. Applied per request, from the snapshot of the
/// configuration taken when the request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Failure {
    /// Behave.
    #[default]
    None,
    /// Answer every request, including `/` and `/health` (so active health
    /// checks see it), with this status and an OpenAI-style JSON error.
    /// 429 and 503 carry `Retry-After: 1`, as real servers do when overloaded.
    Status(u16),
    /// Read the request, then never answer, on every path including
    /// `/health`: a wedged process whose socket is still open.
    Hang,
    /// Generation requests: a stream sends this many token chunks, then the
    /// TCP connection is closed without the terminating chunk; a non-streamed
    /// completion has its connection closed without any response. Other
    /// paths answer normally. This is a backend that crashes mid-generation.
    DropMidStream {
        /// Token chunks written before the connection is cut.
        after_tokens: usize,
    },
    /// As `DropMidStream`, but the cut falls in the middle of the next
    /// token's event (or NDJSON line): half of it is sent first. A backend
    /// whose process dies between two writes of one event.
    SplitMidEvent {
        /// Whole token chunks written before the half one.
        after_tokens: usize,
    },
}

/// The error of parsing a [`Failure`] from its command-line spelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid failure mode {0:?}: expected none, a status code 100-599, hang, drop:N or split:N"
)]
pub struct ParseFailureError(String);

impl FromStr for Failure {
    type Err = ParseFailureError;

    /// Parses the `--fail` spelling: `none`, `503` (any status 100-599),
    /// `hang`, or `drop:N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseFailureError(s.to_string());
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "none" | "" => Ok(Failure::None),
            "hang" => Ok(Failure::Hang),
            _ => {
                if let Some(n) = t.strip_prefix("split:") {
                    let after_tokens = n.trim().parse().map_err(|_| err())?;
                    Ok(Failure::SplitMidEvent { after_tokens })
                } else if let Some(n) = t.strip_prefix("drop:") {
                    let after_tokens = n.trim().parse().map_err(|_| err())?;
                    Ok(Failure::DropMidStream { after_tokens })
                } else {
                    match t.parse::<u16>() {
                        Ok(code) if (100..=599).contains(&code) => Ok(Failure::Status(code)),
                        _ => Err(err()),
                    }
                }
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::None => f.write_str("none"),
            Failure::Status(code) => write!(f, "{code}"),
            Failure::Hang => f.write_str("hang"),
            Failure::DropMidStream { after_tokens } => write!(f, "drop:{after_tokens}"),
            Failure::SplitMidEvent { after_tokens } => write!(f, "split:{after_tokens}"),
        }
    }
}

/// Configuration of one mock backend, built with chained setters:
///
/// ```
/// use std::time::Duration;
/// use switchyard::mock::{Failure, MockConfig};
/// let cfg = MockConfig::new("b1")
///     .models(["llama3"])
///     .ttft(Duration::from_millis(50))
///     .tokens(4)
///     .fail_with(503);
/// assert_eq!(cfg.failure, Failure::Status(503));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockConfig {
    /// Reported in the `x-mock-backend` header and in every JSON body, so a
    /// test can tell which backend served a request. Default `"mock"`.
    pub name: String,
    /// Models this backend serves; listed by `/v1/models` and `/api/tags`.
    /// A request naming another model gets 404 `model_not_found`; an empty
    /// list accepts any model. Default [`DEFAULT_MODELS`].
    pub models: Vec<String>,
    /// Delay before the response head and the first token (for a
    /// non-streamed completion, before the response). Default [`DEFAULT_TTFT`].
    pub ttft: Duration,
    /// Delay between consecutive tokens. Default [`DEFAULT_TOKEN_GAP`].
    pub token_gap: Duration,
    /// Tokens generated per completion. Default [`DEFAULT_TOKENS`].
    pub tokens: usize,
    /// How to misbehave. Default [`Failure::None`].
    pub failure: Failure,
    /// A path prefix every request must carry, as behind a reverse proxy
    /// or at a cloud provider (`/openai`); stripped before routing, and a
    /// request without it gets 404. Default none.
    pub base_path: String,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            name: "mock".to_string(),
            models: DEFAULT_MODELS.iter().map(|m| m.to_string()).collect(),
            ttft: DEFAULT_TTFT,
            token_gap: DEFAULT_TOKEN_GAP,
            tokens: DEFAULT_TOKENS,
            failure: Failure::None,
            base_path: String::new(),
        }
    }
}

impl MockConfig {
    /// The default configuration under another name.
    pub fn new(name: impl Into<String>) -> Self {
        MockConfig::default().name(name)
    }

    /// Sets [`MockConfig::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`MockConfig::models`].
    pub fn models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`MockConfig::ttft`].
    pub fn ttft(mut self, ttft: Duration) -> Self {
        self.ttft = ttft;
        self
    }

    /// Sets [`MockConfig::token_gap`].
    pub fn token_gap(mut self, token_gap: Duration) -> Self {
        self.token_gap = token_gap;
        self
    }

    /// Sets [`MockConfig::tokens`].
    pub fn tokens(mut self, tokens: usize) -> Self {
        self.tokens = tokens;
        self
    }

    /// Sets [`MockConfig::failure`].
    pub fn failure(mut self, failure: Failure) -> Self {
        self.failure = failure;
        self
    }

    /// Shorthand for `.failure(Failure::Status(status))`.
    pub fn base_path(mut self, prefix: impl Into<String>) -> Self {
        self.base_path = prefix.into();
        self
    }

    pub fn fail_with(self, status: u16) -> Self {
        self.failure(Failure::Status(status))
    }

    /// Whether this backend serves `model`. Ollama clients often spell the
    /// default tag out, so `llama3` and `llama3:latest` are the same model.
    pub fn serves(&self, model: &str) -> bool {
        let bare = |m: &str| m.strip_suffix(":latest").unwrap_or(m).to_string();
        self.models.is_empty() || self.models.iter().any(|m| bare(m) == bare(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_failure_spellings() {
        assert_eq!("none".parse(), Ok(Failure::None));
        assert_eq!("503".parse(), Ok(Failure::Status(503)));
        assert_eq!("HANG".parse(), Ok(Failure::Hang));
        assert_eq!(
            "drop:3".parse(),
            Ok(Failure::DropMidStream { after_tokens: 3 })
        );
        for bad in ["42", "700", "drop:", "drop:x", "sometimes"] {
            assert!(bad.parse::<Failure>().is_err(), "{bad} should not parse");
        }
        for f in [
            Failure::Status(429),
            Failure::Hang,
            Failure::DropMidStream { after_tokens: 2 },
        ] {
            assert_eq!(f.to_string().parse(), Ok(f));
        }
    }

    #[test]
    fn model_matching_ignores_latest_tag() {
        let cfg = MockConfig::new("b").models(["llama3", "qwen2.5:7b"]);
        assert!(cfg.serves("llama3:latest"));
        assert!(cfg.serves("qwen2.5:7b"));
        assert!(!cfg.serves("qwen2.5"));
        assert!(MockConfig::new("b")
            .models(Vec::<String>::new())
            .serves("anything"));
    }
}
