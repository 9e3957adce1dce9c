//! What the client gets when something fails.

use super::framing::StreamFormat;
use crate::errors::ApiError;
use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};

/// The answer for an error; `None` when the client is gone.
pub(super) fn error_for(e: &Error, timed_out: bool, pool: &str) -> Option<ApiError> {
    if let ErrorType::HTTPStatus(status) = e.etype() {
        let message = e
            .context
            .as_ref()
            .map_or_else(|| e.to_string(), |c| c.as_str().to_string());
        let mut api = ApiError::from_status(*status, message);
        if *status == 503 {
            api.code = "no_healthy_backend";
            api.retry_after = Some(1);
        }
        return Some(api);
    }
    if *e.esource() == ErrorSource::Downstream {
        return match e.etype() {
            // The client stalled while sending its body: its timeout, not
            // the backend's.
            ErrorType::ReadTimedout => Some(ApiError::new(
                408,
                "invalid_request_error",
                "request_timeout",
                "the request body stopped arriving (server.timeouts.client_body)",
            )),
            // Gone, or no longer reading: there is nobody to answer.
            ErrorType::WriteError
            | ErrorType::WriteTimedout
            | ErrorType::ReadError
            | ErrorType::ConnectionClosed => None,
            _ => Some(ApiError::from_status(400, "malformed request")),
        };
    }
    if timed_out
        || matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::ConnectTimedout
        )
    {
        let mut api = ApiError::from_status(504, format!("backend in pool '{pool}' timed out"));
        api.code = "backend_timeout";
        return Some(api);
    }
    match e.esource() {
        ErrorSource::Upstream => {
            let mut api = ApiError::from_status(
                502,
                format!("backend in pool '{pool}' failed: {}", e.etype().as_str()),
            );
            api.code = "backend_error";
            Some(api)
        }
        ErrorSource::Downstream => None,
        ErrorSource::Internal | ErrorSource::Unset => {
            Some(ApiError::from_status(500, "internal error"))
        }
    }
}

/// The last event of a stream that failed after it began: an SSE `data:`
/// event with an OpenAI error object, or an Ollama NDJSON `{"error": ...}`
/// line.
pub(super) fn terminal_event(format: StreamFormat, api: &ApiError) -> Bytes {
    match format {
        StreamFormat::Sse => {
            let body = String::from_utf8_lossy(&api.body()).into_owned();
            Bytes::from(format!("data: {body}\n\n"))
        }
        StreamFormat::Ndjson => {
            Bytes::from(format!("{}\n", serde_json::json!({ "error": api.message })))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_events_in_the_stream_format() {
        let api = ApiError::from_status(502, "backend went away");
        let sse = terminal_event(StreamFormat::Sse, &api);
        let text = std::str::from_utf8(&sse).unwrap();
        assert!(
            text.starts_with("data: {") && text.ends_with("}\n\n"),
            "{text}"
        );
        let v: serde_json::Value =
            serde_json::from_str(text.trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(v["error"]["message"], "backend went away");
        let nd = terminal_event(StreamFormat::Ndjson, &api);
        let v: serde_json::Value = serde_json::from_slice(&nd).unwrap();
        assert_eq!(v["error"], "backend went away");
    }

    #[test]
    fn errors_map_to_statuses() {
        let e = Error::explain(ErrorType::HTTPStatus(503), "no healthy backend in pool 'a'");
        let api = error_for(&e, false, "a").unwrap();
        assert_eq!((api.status, api.code), (503, "no_healthy_backend"));
        assert_eq!(api.message, "no healthy backend in pool 'a'");
        let e = Error::new_up(ErrorType::ConnectRefused);
        assert_eq!(error_for(&e, false, "a").unwrap().status, 502);
        assert_eq!(error_for(&e, true, "a").unwrap().status, 504);
        let e = Error::new_down(ErrorType::ConnectionClosed);
        assert!(error_for(&e, false, "a").is_none());
        let e = Error::new_down(ErrorType::ReadTimedout);
        let api = error_for(&e, true, "a").unwrap();
        assert_eq!((api.status, api.code), (408, "request_timeout"));
        let e = Error::new_down(ErrorType::WriteTimedout);
        assert!(error_for(&e, false, "a").is_none());
    }
}
