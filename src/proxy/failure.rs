//! What the client gets when something fails: the [`Refusal`] a Pingora
//! error stands for, and how a stream that has begun ends with it.

use super::framing::StreamFormat;
use crate::errors::{Refusal, Shape};
use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};

/// The answer for an error; `None` when the client is gone (or has stopped
/// reading), and nobody is left to answer. Unless `expose`
/// (`server.expose_backend`), a backend's failure is told without the
/// details Pingora gives, which name the backend's address.
pub(super) fn refusal_for(e: &Error, timed_out: bool, pool: &str, expose: bool) -> Option<Refusal> {
    if let Some(refusal) = Refusal::of(e) {
        return Some(refusal.clone());
    }
    if *e.esource() == ErrorSource::Downstream {
        return match e.etype() {
            // The client stalled while sending its body: its timeout, not
            // the backend's.
            ErrorType::ReadTimedout => Some(Refusal::BodyTimeout),
            ErrorType::WriteError
            | ErrorType::WriteTimedout
            | ErrorType::ReadError
            | ErrorType::ConnectionClosed => None,
            _ => Some(Refusal::BadRequest),
        };
    }
    let pool = pool.to_string();
    if timed_out
        || matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::ConnectTimedout
        )
    {
        return Some(Refusal::BackendTimeout { pool });
    }
    match (e.esource(), e.etype()) {
        // A backend's status turned into an error for a retry that did not
        // happen, or any other failure of the backend.
        (_, ErrorType::HTTPStatus(_)) | (ErrorSource::Upstream, _) => {
            let what = match &e.context {
                Some(context) if expose => context.as_str().to_string(),
                _ => e.etype().as_str().to_string(),
            };
            Some(Refusal::BackendError { pool, what })
        }
        _ => Some(Refusal::Internal),
    }
}

/// The last event of a stream that failed after it began, where the
/// client's SDK raises it: an SSE `data:` event with an OpenAI error
/// object (OpenAI's SDKs raise on an `error` key, in chat and Responses
/// streams alike), an `event: error` in Anthropic's shape for the Messages
/// API (whose SDKs skip unnamed events), or an Ollama NDJSON
/// `{"error": ...}` line; each with the request's id, as Switchyard's
/// other error bodies.
pub(super) fn terminal_event(
    format: StreamFormat,
    shape: Shape,
    refusal: &Refusal,
    request_id: Option<&str>,
) -> Bytes {
    match format {
        StreamFormat::Sse => {
            let (name, shape) = match shape {
                Shape::Anthropic => ("event: error\n", Shape::Anthropic),
                _ => ("", Shape::OpenAi),
            };
            let body = refusal.body(shape, request_id);
            Bytes::from(format!(
                "{name}data: {}\n\n",
                String::from_utf8_lossy(&body)
            ))
        }
        StreamFormat::Ndjson => {
            let mut line = refusal.body(Shape::Ollama, request_id).to_vec();
            line.push(b'\n');
            Bytes::from(line)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_events_in_the_stream_format() {
        let refusal = Refusal::BackendError {
            pool: "a".into(),
            what: "went away".into(),
        };
        let sse = terminal_event(StreamFormat::Sse, Shape::OpenAi, &refusal, Some("r1"));
        let text = std::str::from_utf8(&sse).unwrap();
        assert!(
            text.starts_with("data: {") && text.ends_with("}\n\n"),
            "{text}"
        );
        let v: serde_json::Value =
            serde_json::from_str(text.trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(
            v["error"]["message"],
            "backend in pool 'a' failed: went away"
        );
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["request_id"], "r1");
        let nd = terminal_event(StreamFormat::Ndjson, Shape::Ollama, &refusal, Some("r1"));
        let v: serde_json::Value = serde_json::from_slice(&nd).unwrap();
        assert_eq!(v["error"], "backend in pool 'a' failed: went away");
        assert_eq!(v["request_id"], "r1");
        let anthropic = terminal_event(StreamFormat::Sse, Shape::Anthropic, &refusal, Some("r1"));
        let text = std::str::from_utf8(&anthropic).unwrap();
        let data = text
            .strip_prefix("event: error\ndata: ")
            .unwrap_or_else(|| panic!("{text}"));
        let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["error"]["type"].as_str()),
            (Some("error"), Some("api_error"))
        );
        assert_eq!(v["request_id"], "r1");
    }

    #[test]
    fn errors_map_to_refusals() {
        let carried = Refusal::NoHealthyBackend {
            pool: "a".into(),
            detail: "no healthy backend".into(),
        };
        let e = carried.clone().into_error();
        assert_eq!(refusal_for(&e, false, "a", true), Some(carried));
        let code = |e: &Error, timed_out| refusal_for(e, timed_out, "a", true).map(|r| r.code());
        let e = Error::new_up(ErrorType::ConnectRefused);
        assert_eq!(code(&e, false), Some("backend_error"));
        assert_eq!(code(&e, true), Some("backend_timeout"));
        let e = Error::new_down(ErrorType::ConnectionClosed);
        assert_eq!(code(&e, false), None);
        let e = Error::new_down(ErrorType::ReadTimedout);
        assert_eq!(code(&e, true), Some("request_timeout"));
        let e = Error::new_down(ErrorType::WriteTimedout);
        assert_eq!(code(&e, false), None);
    }

    #[test]
    fn a_hidden_backend_is_not_named_in_the_message() {
        let e = Error::explain(
            ErrorType::ConnectRefused,
            "Fail to connect to addr: 10.0.0.1:11434",
        )
        .into_up();
        let message = |expose| refusal_for(&e, false, "a", expose).unwrap().to_string();
        assert!(
            message(true).contains("10.0.0.1:11434"),
            "{}",
            message(true)
        );
        assert_eq!(message(false), "backend in pool 'a' failed: ConnectRefused");
    }
}
