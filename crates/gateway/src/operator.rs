//! `herald publish`, `herald presence` and `herald disconnect`: an operator's calls to a live
//! node's gRPC API, with the API key and address of the node's own configuration, so the
//! same environment (or `--config` file) that runs a node can poke at it. Each prints one
//! JSON object.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use herald_api::BearerToken;
use herald_api::v1::herald_client::HeraldClient;
use herald_api::v1::{DisconnectRequest, PresenceRequest, PresenceStatsRequest, PublishRequest};
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::Config;

/// How long one call may take, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("HERALD_API_KEYS is not set: the gRPC API needs one of its keys")]
    NoApiKey,
    #[error("the API key is not a valid header value")]
    ApiKey,
    #[error("--data must be JSON: {0}")]
    Data(serde_json::Error),
    #[error("bad gRPC URL {url:?}: {source}")]
    Url {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("cannot reach the gRPC API at {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("{method} failed: {code:?}: {message}")]
    Call {
        method: &'static str,
        code: tonic::Code,
        message: String,
    },
}

/// A gRPC client of one node, authenticated with its first API key.
pub struct Operator {
    /// Sends `Bearer <the first API key>`.
    client: HeraldClient<InterceptedService<Channel, BearerToken>>,
}

impl Operator {
    /// Connects to `url`, or to the configured gRPC address (loopback when it listens on
    /// every interface; `https` when the node serves gRPC over TLS).
    pub async fn connect(config: &Config, url: Option<String>) -> Result<Self, OperatorError> {
        let api_key = config.api_keys.first().ok_or(OperatorError::NoApiKey)?;
        let api_key = BearerToken::new(api_key.expose()).map_err(|_| OperatorError::ApiKey)?;
        let url = url.unwrap_or_else(|| default_url(config));
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|source| OperatorError::Url {
                url: url.clone(),
                source,
            })?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| OperatorError::Connect { url, source })?;
        Ok(Self {
            client: HeraldClient::with_interceptor(channel, api_key),
        })
    }

    pub async fn publish(
        &mut self,
        channel: String,
        event: String,
        data: &str,
        idempotency_key: Option<String>,
    ) -> Result<Value, OperatorError> {
        // Checked here for a clear message; the node compacts and checks it again.
        let data: Value = serde_json::from_str(data).map_err(OperatorError::Data)?;
        let request = PublishRequest {
            channel,
            event,
            data: data.to_string().into_bytes(),
            idempotency_key: idempotency_key.unwrap_or_default(),
        };
        let reply = self.client.publish(request).await;
        let reply = answered("Publish", reply)?;
        Ok(json!({ "offset": reply.offset, "epoch": reply.epoch }))
    }

    /// The channel's members, or only their counts with `stats`.
    pub async fn presence(&mut self, channel: String, stats: bool) -> Result<Value, OperatorError> {
        if stats {
            let reply = self
                .client
                .presence_stats(PresenceStatsRequest { channel })
                .await;
            let reply = answered("PresenceStats", reply)?;
            return Ok(json!({ "users": reply.users, "clients": reply.clients }));
        }
        let reply = self.client.presence(PresenceRequest { channel }).await;
        let members: Vec<Value> = answered("Presence", reply)?
            .members
            .into_iter()
            .map(|member| {
                // Empty bytes (none) are null.
                let info: Value = serde_json::from_slice(&member.info).unwrap_or(Value::Null);
                let state: Value = serde_json::from_slice(&member.state).unwrap_or(Value::Null);
                json!({
                    "user": member.user,
                    "client": member.client,
                    "info": info,
                    "joinedAt": member.joined_at,
                    "status": member.status,
                    "state": state,
                })
            })
            .collect();
        Ok(json!({ "members": members }))
    }

    pub async fn disconnect(
        &mut self,
        user: String,
        code: u32,
        reason: String,
    ) -> Result<Value, OperatorError> {
        let request = DisconnectRequest { user, code, reason };
        let reply = self.client.disconnect(request).await;
        let reply = answered("Disconnect", reply)?;
        Ok(json!({ "connections": reply.connections }))
    }
}

fn answered<T>(
    method: &'static str,
    reply: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, OperatorError> {
    reply
        .map(tonic::Response::into_inner)
        .map_err(|status| OperatorError::Call {
            method,
            code: status.code(),
            message: status.message().to_owned(),
        })
}

fn default_url(config: &Config) -> String {
    let scheme = if config.tls.is_some() && config.grpc_tls {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", reachable(config.grpc_addr))
}

/// The address to call a node listening on `addr` at: loopback for the unspecified address.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_on_every_interface_is_called_on_loopback() {
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        assert_eq!(reachable(any), "127.0.0.1:50051".parse().unwrap());
        let any6: SocketAddr = "[::]:50051".parse().unwrap();
        assert_eq!(reachable(any6), "[::1]:50051".parse().unwrap());
        let host: SocketAddr = "10.0.0.7:50051".parse().unwrap();
        assert_eq!(reachable(host), host);
    }
}
