//! A minimal HTTP/1.0 GET and POST, so the tests and the load generator need no HTTP client crate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::within;

/// `GET path` (HTTP/1.0, so the body ends with the connection): (status, body). Unbounded:
/// the caller bounds it.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    request(addr, format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")).await
}

/// `POST path` with a `text/plain` body: (status, body). Unbounded: the caller bounds it.
pub async fn post(addr: SocketAddr, path: &str, body: &str) -> Result<(u16, String)> {
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    request(addr, head + body).await
}

async fn request(addr: SocketAddr, request: String) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
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

/// [`post`], bounded, failing the test on an error.
pub async fn http_post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    within("HTTP POST", post(addr, path, body))
        .await
        .unwrap_or_else(|error| panic!("POST {path} on {addr}: {error:#}"))
}

/// Polls the Prometheus `/metrics` at `addr` until a line of `series` (a metric name, or a
/// name and labels: every line starting with it) has a value that `holds`; after `limit`,
/// fails the test showing the metrics.
pub async fn wait_for_metric(
    addr: SocketAddr,
    series: &str,
    limit: Duration,
    holds: impl Fn(f64) -> bool,
) {
    let seen = |metrics: &str| {
        metrics
            .lines()
            .filter(|line| line.starts_with(series))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .any(&holds)
    };
    let found = tokio::time::timeout(limit, async {
        while !seen(&http_get(addr, "/metrics").await.1) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if found.is_err() {
        let metrics = http_get(addr, "/metrics").await.1;
        panic!("{series} never held on {addr} within {limit:?}:\n{metrics}");
    }
}
