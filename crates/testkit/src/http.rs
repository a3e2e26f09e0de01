//! A minimal HTTP/1.0 GET, so the tests and the load generator need no HTTP client crate.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::within;

/// `GET path` (HTTP/1.0, so the body ends with the connection): (status, body). Unbounded:
/// the caller bounds it.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .with_context(|| format!("not an HTTP response: {:?}", response.lines().next()))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// [`get`], bounded, failing the test on an error.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    within("HTTP GET", get(addr, path))
        .await
        .unwrap_or_else(|error| panic!("GET {path} on {addr}: {error:#}"))
}
