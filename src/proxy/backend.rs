//! What a backend's own settings change in a request sent to it: the base
//! path of its URL goes before the request's path, `Host` is its own when
//! its pool says so (the default for HTTPS), and its configured headers
//! are set, replacing the client's of the same name. When it has
//! credentials of its own, the client's (`Authorization`, `x-api-key`,
//! `api-key`) are not passed on: they are the client's key for
//! Switchyard, not for the provider behind it.

use crate::config::{BackendSpec, HostHeader, CREDENTIAL_HEADERS};
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::RequestHeader;

/// Applies `backend`'s settings to the request about to be sent to it.
/// Each attempt starts from the client's header, so nothing accumulates
/// across retries.
pub(super) fn to_backend(backend: &BackendSpec, request: &mut RequestHeader) -> Result<()> {
    if !backend.base_path.is_empty() {
        let target = request
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let uri = backend
            .path(&target)
            .parse::<http::Uri>()
            .or_err(ErrorType::InvalidHTTPHeader, "backend base path")?;
        request.set_uri(uri);
    }
    if backend.host_header == HostHeader::Backend {
        request.insert_header(http::header::HOST, &backend.authority)?;
    }
    if backend.has_credentials() {
        for name in CREDENTIAL_HEADERS {
            request.remove_header(name);
        }
    }
    for header in &backend.headers {
        request.insert_header(header.name.clone(), header.value.value())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The first backend of a pool written as `yaml`, where `KEY_FILE`
    /// stands for a file holding `sk-test-1234` and a newline.
    fn backend(yaml: &str) -> BackendSpec {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "sk-test-1234\n").unwrap();
        let yaml = yaml.replace("KEY_FILE", &key.display().to_string());
        let config = Config::from_yaml(&format!(
            "pools:\n  p:\n    health_check: {{ type: none }}\n{yaml}"
        ))
        .unwrap();
        config.pools[0].backends[0].clone()
    }

    fn request(path: &str) -> RequestHeader {
        let mut r = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        r.insert_header("host", "switchyard.example").unwrap();
        r.insert_header("authorization", "Bearer client-key")
            .unwrap();
        r.insert_header("x-api-key", "client-key").unwrap();
        r
    }

    #[test]
    fn a_base_path_goes_before_the_path_and_keeps_the_query() {
        let b = backend("    backends:\n      - url: http://127.0.0.1:9001/openai/\n");
        let mut r = request("/v1/chat/completions?x=1");
        to_backend(&b, &mut r).unwrap();
        assert_eq!(r.uri.to_string(), "/openai/v1/chat/completions?x=1");
        assert_eq!(
            r.headers["host"], "switchyard.example",
            "http keeps the client's Host"
        );
        assert_eq!(r.headers["authorization"], "Bearer client-key");
    }

    #[test]
    fn credentials_replace_the_clients_and_host_is_the_backends() {
        let b = backend(
            "    host_header: backend\n    headers:\n      Authorization: { file: KEY_FILE, prefix: \"Bearer \" }\n\
             \x20   backends:\n      - url: http://localhost:9001\n        headers: { OpenAI-Organization: org-1 }\n",
        );
        let mut r = request("/v1/chat/completions");
        to_backend(&b, &mut r).unwrap();
        assert_eq!(r.headers["host"], "localhost:9001");
        assert_eq!(r.headers["authorization"], "Bearer sk-test-1234");
        assert!(
            r.headers.get("x-api-key").is_none(),
            "the client's key stays"
        );
        assert_eq!(r.headers["openai-organization"], "org-1");
        assert!(!format!("{b:?}").contains("sk-test-1234"), "Debug hides it");
    }
}
