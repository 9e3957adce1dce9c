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
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
