//! OpenAI-style JSON error responses, `{"error":{"message","type","code"}}`.
//!
//! Every error Switchyard itself answers with goes through here, so clients
//! written against the OpenAI API (and tools that only print
//! `error.message`) see a useful body whatever went wrong.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// An error answered by the proxy itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// OpenAI's `type`: `invalid_request_error`, `server_error`, ...
    pub kind: &'static str,
    /// A stable machine-readable reason, e.g. `no_route`.
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header, when waiting helps.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "code": self.code,
            }
        });
        Bytes::from(body.to_string())
    }

    /// The status and the error type OpenAI uses for it, for errors that
    /// reach us only as a status code (e.g. Pingora's own).
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        let (kind, code) = match status {
            400 => ("invalid_request_error", "bad_request"),
            404 => ("invalid_request_error", "not_found"),
            413 => ("invalid_request_error", "request_too_large"),
            429 => ("rate_limit_error", "rate_limited"),
            502 => ("server_error", "bad_gateway"),
            503 => ("server_error", "service_unavailable"),
            504 => ("server_error", "gateway_timeout"),
            s if s < 500 => ("invalid_request_error", "bad_request"),
            _ => ("server_error", "internal_error"),
        };
        ApiError::new(status, kind, code, message)
    }

    /// The whole response as HTTP/1.1 bytes, for answers written straight
    /// to a client connection outside Pingora's HTTP layer (a refused
    /// connection, a header too large or too slow). The connection closes
    /// after it.
    pub fn raw_response(&self) -> Bytes {
        let body = self.body();
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n",
            self.status,
            body.len()
        );
        if let Some(secs) = self.retry_after {
            head.push_str(&format!("retry-after: {secs}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    /// Writes the whole response to the client and closes the connection
    /// afterwards, since a request refused early may have left its body
    /// unread.
    pub async fn send(&self, session: &mut Session) -> pingora_error::Result<()> {
        session.set_keepalive(None);
        send_json(session, self.status, self.body(), self.retry_after).await
    }
}

/// Writes a complete JSON response answered by Switchyard itself.
pub async fn send_json(
    session: &mut Session,
    status: u16,
    body: Bytes,
    retry_after: Option<u64>,
) -> pingora_error::Result<()> {
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    if let Some(secs) = retry_after {
        header.insert_header(http::header::RETRY_AFTER, secs.to_string())?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let e = ApiError::new(404, "invalid_request_error", "no_route", "no route for /x");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "no route for /x");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "no_route");
    }

    #[test]
    fn raw_response_is_complete_http() {
        let mut e = ApiError::new(503, "server_error", "too_many_connections", "busy");
        e.retry_after = Some(1);
        let raw = e.raw_response();
        let text = std::str::from_utf8(&raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("retry-after: 1"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
    }

    #[test]
    fn status_maps_to_type() {
        assert_eq!(ApiError::from_status(503, "x").kind, "server_error");
        assert_eq!(
            ApiError::from_status(400, "x").kind,
            "invalid_request_error"
        );
        assert_eq!(ApiError::from_status(429, "x").code, "rate_limited");
    }
}
