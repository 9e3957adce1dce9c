//! A small HTTP/1.1 client for the requests Switchyard makes itself:
//! backends' model lists and `/api/ps`.
//!
//! Each request goes to the backend as a proxied one would: after its base
//! path, with its `Host` and its headers (credentials included), and over
//! TLS for an HTTPS backend, checked the same way (`tls.ca`, the system's
//! roots, a client certificate, or nothing with `tls.verify: false`).

use crate::config::BackendSpec;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// `GET path` from `backend`, within `timeout`. Returns the status and
/// body. A body larger than `limit` bytes is an error: it is refused rather
/// than buffered.
pub async fn get(
    backend: &BackendSpec,
    path: &str,
    timeout: Duration,
    limit: usize,
) -> Result<(u16, Bytes), String> {
    tokio::time::timeout(timeout, connect_and_get(backend, path, limit))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn connect_and_get(
    backend: &BackendSpec,
    path: &str,
    limit: usize,
) -> Result<(u16, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(backend.addr)
        .await
        .map_err(|e| e.to_string())?;
    match &backend.tls {
        None => get_over(stream, backend, path, limit).await,
        Some(tls) => {
            let name = ServerName::try_from(tls.sni.clone())
                .map_err(|e| format!("{:?} is not a TLS server name: {e}", tls.sni))?;
            let connector = tokio_rustls::TlsConnector::from(tls.client_config.clone());
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            get_over(stream, backend, path, limit).await
        }
    }
}

async fn get_over<S>(
    stream: S,
    backend: &BackendSpec,
    path: &str,
    limit: usize,
) -> Result<(u16, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let mut req = http::Request::get(backend.path(path))
        .header(http::header::HOST, backend.host())
        .header(http::header::ACCEPT, "application/json");
    for header in &backend.headers {
        req = req.header(header.name.clone(), header.value.value());
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    let result = match resp {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let limited = http_body_util::Limited::new(resp.into_body(), limit);
            match limited.collect().await {
                Ok(body) => Ok((status, body.to_bytes())),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e),
    };
    driver.abort();
    result
}
