//! The probes: Pingora's [`TcpHealthCheck`] or [`HttpHealthCheck`], one
//! per backend so the HTTP probe carries the backend's own `Host`, base
//! path and headers (its credentials: a vLLM started with `--api-key`
//! refuses a check without them). For an HTTPS backend the TCP probe is a
//! TLS handshake and the HTTP probe is made over TLS, both checking the
//! certificate as requests do, so a backend whose certificate would fail
//! every request is taken out by its checks.

use crate::balance::peer::http_peer;
use crate::config::{BackendSpec, HealthKind, HealthSpec};
use pingora_http::ResponseHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;
use std::sync::Arc;
use std::time::Duration;

/// Builds the probe for one backend, or `None` for `type: none`.
pub fn probe(
    spec: &HealthSpec,
    backend: &BackendSpec,
) -> Option<Arc<dyn HealthCheck + Send + Sync>> {
    match &spec.kind {
        HealthKind::None => None,
        HealthKind::Tcp => {
            let mut check = TcpHealthCheck::default();
            if let Some(tls) = &backend.tls {
                let peer = &mut check.peer_template;
                peer.sni = tls.sni.clone();
                peer.options.verify_cert = tls.verify;
                peer.options.verify_hostname = tls.verify;
                peer.options.ca = tls.ca.clone();
            }
            check.peer_template.options.connection_timeout = Some(spec.timeout);
            Some(Arc::new(check))
        }
        HealthKind::Http {
            path,
            expect_status,
        } => {
            let host = backend.host();
            let mut check = HttpHealthCheck::new(host, backend.tls.is_some());
            check.peer_template = http_peer(backend);
            check.peer_template.options.connection_timeout = Some(spec.timeout);
            check.peer_template.options.read_timeout = Some(spec.timeout);
            // A fresh connection each time: a reused one can hide a backend
            // that no longer accepts.
            check.reuse_connection = false;
            if let Ok(uri) = backend.path(path).parse() {
                check.req.set_uri(uri);
            }
            for header in &backend.headers {
                // Checked by validation to be a valid header.
                let _ = check
                    .req
                    .insert_header(header.name.clone(), header.value.value());
            }
            let expect = *expect_status;
            check.validator = Some(Box::new(move |resp: &ResponseHeader| {
                let status = resp.status.as_u16();
                let ok = match expect {
                    Some(want) => status == want,
                    None => resp.status.is_success(),
                };
                if ok {
                    Ok(())
                } else {
                    pingora_error::Error::e_explain(
                        pingora_error::ErrorType::HTTPStatus(status),
                        "health check status",
                    )
                }
            }));
            Some(Arc::new(check))
        }
    }
}

/// Runs one probe with the pool's timeout over the whole check.
pub async fn check_once(
    check: &(dyn HealthCheck + Send + Sync),
    addr: &Backend,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, check.check(addr)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// A failed check in one line: the kinds of error and their cause, without
/// the contexts in which Pingora's connector prints the whole peer (every
/// option, the CA's certificates among them), which made one log line of
/// several kilobytes for an HTTPS backend.
fn describe(e: &pingora_error::Error) -> String {
    let mut parts = vec![kind(&e.etype)];
    let mut at = e;
    loop {
        if let Some(context) = &at.context {
            if !context.as_str().contains("Peer {") {
                parts.push(context.as_str().to_string());
            }
        }
        let Some(cause) = at.cause.as_deref() else {
            break;
        };
        // Pingora chains its errors boxed (`BError`).
        let next = cause
            .downcast_ref::<Box<pingora_error::Error>>()
            .map(|b| &**b)
            .or_else(|| cause.downcast_ref::<pingora_error::Error>());
        match next {
            Some(next) => {
                if next.etype != at.etype {
                    parts.push(kind(&next.etype));
                }
                at = next;
            }
            None => {
                parts.push(cause.to_string());
                break;
            }
        }
    }
    parts.join(": ")
}

/// An error's kind; a status says which.
fn kind(etype: &pingora_error::ErrorType) -> String {
    match etype {
        pingora_error::ErrorType::HTTPStatus(code) => format!("status {code}"),
        other => other.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;
    use pingora_error::{Error, ErrorType};

    #[test]
    fn a_failed_check_is_one_short_line_without_the_peer() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused here");
        let inner = Error::because(
            ErrorType::ConnectRefused,
            "Fail to connect to 127.0.0.1:9",
            io,
        );
        let outer = Error::because(
            ErrorType::ConnectRefused,
            "Fail to connect to BasicPeer { _address: Inet(127.0.0.1:9), ca: Some([..]) }",
            inner,
        );
        assert_eq!(
            describe(&outer),
            "ConnectRefused: Fail to connect to 127.0.0.1:9: refused here"
        );
        let status = Error::explain(ErrorType::HTTPStatus(503), "health check status");
        assert_eq!(describe(&status), "status 503: health check status");
    }
}
