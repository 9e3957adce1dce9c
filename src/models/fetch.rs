//! A small HTTP/1.1 client for the requests Switchyard makes itself:
//! backends' model lists and `/api/ps`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// `GET path` from `addr`, within `timeout`. Returns the status and body.
/// A body larger than `limit` bytes is an error: it is refused rather than
/// buffered.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
    limit: usize,
) -> Result<(u16, Bytes), String> {
    tokio::time::timeout(timeout, get_inner(addr, host, path, limit))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn get_inner(
    addr: SocketAddr,
    host: &str,
    path: &str,
    limit: usize,
) -> Result<(u16, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
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
