//! The probes: Pingora's [`TcpHealthCheck`] or [`HttpHealthCheck`], one
//! per backend so the HTTP probe carries the backend's own `Host`.

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
            check.peer_template.options.connection_timeout = Some(spec.timeout);
            Some(Arc::new(check))
        }
        HealthKind::Http {
            path,
            expect_status,
        } => {
            let host = backend.host();
            let mut check = HttpHealthCheck::new(host, false);
            check.peer_template.options.connection_timeout = Some(spec.timeout);
            check.peer_template.options.read_timeout = Some(spec.timeout);
            // A fresh connection each time: a reused one can hide a backend
            // that no longer accepts.
            check.reuse_connection = false;
            if let Ok(uri) = path.parse() {
                check.req.set_uri(uri);
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
