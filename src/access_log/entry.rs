//! One request's line: its fields, and how they are written as JSON.
//!
//! An [`Entry`] borrows everything from the request it describes, so
//! building one copies nothing; [`Entry::write_line`] writes it with
//! `serde_json`, which escapes whatever a path or a model name holds. Every
//! key is always present, `null` when the request never got that far, so a
//! reader can rely on the shape.

use serde::{Serialize, Serializer};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// One finished request.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// When the request's header had been read, in UTC (RFC 3339, ms).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The `x-request-id` sent to the backend and the client.
    pub request_id: Option<&'a str>,
    /// The client's address, behind any `server.trusted_proxies`.
    pub client: Option<IpAddr>,
    /// The name of the API key the request was sent with (never the key).
    pub key: Option<&'a str>,
    pub method: &'a str,
    /// The path without its query string, which may carry secrets (API
    /// keys in `?key=`); as received, percent-escapes undecoded.
    pub path: &'a str,
    /// The status sent to the client; 0 when none was (it hung up first).
    pub status: u16,
    pub pool: Option<&'a str>,
    /// The backend of the last attempt.
    pub backend: Option<&'a str>,
    /// The model asked for, after any alias.
    pub model: Option<&'a str>,
    /// The model sent to the backend: `model`, or a fallback.
    pub served_model: Option<&'a str>,
    /// Backends tried, the one that answered included.
    pub attempts: usize,
    /// Why each failed attempt failed, in order.
    pub failures: &'a [Failure],
    /// Time spent waiting for a free backend (all attempts).
    #[serde(rename = "queue_ms", serialize_with = "millis")]
    pub queue: Duration,
    /// From the request sent to the first byte of the response body.
    #[serde(rename = "ttft_ms", serialize_with = "maybe_millis")]
    pub ttft: Option<Duration>,
    /// From the request's header to the end of its response.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes written to the client.
    pub bytes_out: u64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Whether `completion_tokens` was counted from the stream's events
    /// because the backend reported none.
    pub tokens_estimated: bool,
    /// The `error.code` of an answer Switchyard gave itself (`queue_full`,
    /// `model_not_found`, ...), including the error event that ends a
    /// broken stream.
    pub error: Option<&'static str>,
}

/// A failed attempt: which backend, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub backend: String,
    pub reason: Reason,
}

/// Why an attempt failed, short and stable for log queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Nothing listened at the backend's address.
    ConnectRefused,
    /// The connection was not made within `timeouts.connect`.
    ConnectTimeout,
    /// Any other failure to connect.
    ConnectFailed,
    /// No response header within `timeouts.first_byte`.
    FirstByteTimeout,
    /// A streamed response fell silent for `timeouts.idle`.
    IdleTimeout,
    /// The backend answered with this 5xx or 429.
    Status(u16),
    /// The connection closed or failed before the response was complete.
    Closed,
    /// A response Switchyard does not pass on (an unasked-for protocol
    /// switch, a header too large).
    BadResponse,
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Reason::ConnectRefused => s.serialize_str("connect_refused"),
            Reason::ConnectTimeout => s.serialize_str("connect_timeout"),
            Reason::ConnectFailed => s.serialize_str("connect_failed"),
            Reason::FirstByteTimeout => s.serialize_str("first_byte_timeout"),
            Reason::IdleTimeout => s.serialize_str("idle_timeout"),
            Reason::Status(code) => s.collect_str(&format_args!("status_{code}")),
            Reason::Closed => s.serialize_str("closed"),
            Reason::BadResponse => s.serialize_str("bad_response"),
        }
    }
}

impl Entry<'_> {
    /// Appends the line, newline included, to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        // Serializing these types into memory cannot fail: every key is a
        // string and every value a string, number, bool or null.
        if serde_json::to_writer(&mut *out, self).is_ok() {
            out.push(b'\n');
        }
    }
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// Milliseconds with microsecond digits: `12.345`.
fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_micros() as f64 / 1000.0)
}

fn maybe_millis<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => millis(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn entry<'a>(path: &'a str, failures: &'a [Failure]) -> Entry<'a> {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_731_000_000_123),
            request_id: Some("r-1"),
            client: Some("10.0.0.7".parse().unwrap()),
            key: Some("alice"),
            method: "POST",
            path,
            status: 200,
            pool: Some("chat"),
            backend: Some("gpu-1"),
            model: Some("llama3"),
            served_model: Some("llama3"),
            attempts: failures.len() + 1,
            failures,
            queue: Duration::from_micros(1500),
            ttft: Some(Duration::from_micros(12_345)),
            duration: Duration::from_millis(250),
            bytes_in: 97,
            bytes_out: 2048,
            prompt_tokens: Some(31),
            completion_tokens: Some(8),
            tokens_estimated: false,
            error: None,
        }
    }

    fn line(e: &Entry) -> (Vec<u8>, Value) {
        let mut out = Vec::new();
        e.write_line(&mut out);
        assert_eq!(out.last(), Some(&b'\n'), "a line ends with a newline");
        assert_eq!(
            out.iter().filter(|&&b| b == b'\n').count(),
            1,
            "one line: {}",
            String::from_utf8_lossy(&out)
        );
        let v = serde_json::from_slice(&out).unwrap();
        (out, v)
    }

    #[test]
    fn every_field_with_its_name() {
        let failures = [Failure {
            backend: "gpu-2".into(),
            reason: Reason::Status(503),
        }];
        let (_, v) = line(&entry("/v1/chat/completions", &failures));
        assert_eq!(
            v,
            json!({
                "time": "2024-11-07T17:20:00.123Z",
                "request_id": "r-1",
                "client": "10.0.0.7",
                "key": "alice",
                "method": "POST",
                "path": "/v1/chat/completions",
                "status": 200,
                "pool": "chat",
                "backend": "gpu-1",
                "model": "llama3",
                "served_model": "llama3",
                "attempts": 2,
                "failures": [{ "backend": "gpu-2", "reason": "status_503" }],
                "queue_ms": 1.5,
                "ttft_ms": 12.345,
                "duration_ms": 250.0,
                "bytes_in": 97,
                "bytes_out": 2048,
                "prompt_tokens": 31,
                "completion_tokens": 8,
                "tokens_estimated": false,
                "error": null,
            })
        );
    }

    #[test]
    fn what_a_request_never_reached_is_null() {
        let mut e = entry("/v1/chat/completions", &[]);
        e.status = 404;
        e.pool = None;
        e.backend = None;
        e.served_model = None;
        e.attempts = 0;
        e.ttft = None;
        e.prompt_tokens = None;
        e.completion_tokens = None;
        e.error = Some("model_not_found");
        let (_, v) = line(&e);
        for key in [
            "pool",
            "backend",
            "served_model",
            "ttft_ms",
            "prompt_tokens",
        ] {
            assert_eq!(v[key], Value::Null, "{key}");
        }
        assert_eq!(v["failures"], json!([]));
        assert_eq!(v["error"], "model_not_found");
        assert_eq!(
            v.as_object().unwrap().len(),
            22,
            "every key is always there"
        );
    }

    #[test]
    fn any_path_or_model_stays_one_line_of_json() {
        // What the path of a non-UTF-8 target becomes (Pingora renders it
        // lossily), quotes, backslashes, control characters.
        let path = "/v1/\"quoted\"\\x/\n/\r/\t/\u{1}/%FF%FE/\u{FFFD}/caf\u{e9}";
        let mut e = entry(path, &[]);
        e.model = Some("model \"with\"\nnewline");
        let (out, v) = line(&e);
        assert_eq!(v["path"], path);
        assert_eq!(v["model"], "model \"with\"\nnewline");
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            !text[..text.len() - 1].contains(['\n', '\r', '\u{1}']),
            "{text}"
        );
    }

    #[test]
    fn reasons_are_short_codes() {
        let all = [
            (Reason::ConnectRefused, "connect_refused"),
            (Reason::ConnectTimeout, "connect_timeout"),
            (Reason::ConnectFailed, "connect_failed"),
            (Reason::FirstByteTimeout, "first_byte_timeout"),
            (Reason::IdleTimeout, "idle_timeout"),
            (Reason::Status(429), "status_429"),
            (Reason::Closed, "closed"),
            (Reason::BadResponse, "bad_response"),
        ];
        for (reason, code) in all {
            assert_eq!(serde_json::to_value(reason).unwrap(), code);
        }
    }
}
