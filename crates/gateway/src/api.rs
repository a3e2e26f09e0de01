//! The gRPC API for backend services (`proto/herald/v1/api.proto`). Every call needs an
//! API key (`authorization: Bearer <key>`); each handler validates its input and calls the
//! node, so gRPC and client publishes take the same path.

use std::sync::Arc;

use herald_api::v1 as api;
use herald_api::v1::herald_server::{Herald, HeraldServer};
use herald_protocol::CloseCode;
use herald_protocol::publication::{validate_data, validate_event};
use serde_json::value::RawValue;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::config::Secret;
use crate::disconnect;
use crate::metrics;
use crate::node::{Node, PublishRequest};
use crate::paging::history_page;
use crate::server_subscriptions;
use crate::state::Position;

/// A `History` response carries about this much publication data at most (and at least
/// one publication), far under gRPC's default 4 MiB message limit; `more` says there is
/// more.
const HISTORY_RESPONSE_BYTES: usize = 1024 * 1024;

pub struct HeraldApi {
    node: Arc<Node>,
}

/// The service with its API-key check in front.
pub fn service(
    node: Arc<Node>,
) -> InterceptedService<HeraldServer<HeraldApi>, impl tonic::service::Interceptor + Clone> {
    let keys = node.config().api_keys.clone();
    HeraldServer::with_interceptor(HeraldApi { node }, move |request: Request<()>| {
        check_key(&keys, request)
    })
}

fn check_key(keys: &[Secret], request: Request<()>) -> Result<Request<()>, Status> {
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let valid = presented.is_some_and(|presented| {
        // Compare against every key in constant time, so timing tells nothing.
        keys.iter().fold(false, |found, key| {
            found
                | constant_time_eq::constant_time_eq(key.expose().as_bytes(), presented.as_bytes())
        })
    });
    if valid {
        Ok(request)
    } else {
        metrics::counter!(metrics::GRPC_REQUESTS, "method" => "unknown", "code" => "Unauthenticated").increment(1);
        Err(Status::unauthenticated("missing or invalid API key"))
    }
}

/// Counts the call by method and status code.
fn observe<T>(method: &'static str, result: Result<T, Status>) -> Result<Response<T>, Status> {
    let code = match &result {
        Ok(_) => "Ok".to_owned(),
        Err(status) => format!("{:?}", status.code()),
    };
    metrics::counter!(metrics::GRPC_REQUESTS, "method" => method, "code" => code).increment(1);
    result.map(Response::new)
}

fn position_response(position: Position) -> api::PublishResponse {
    api::PublishResponse {
        offset: position.offset,
        epoch: position.epoch.to_string(),
    }
}

impl HeraldApi {
    fn parse_data(&self, data: &[u8]) -> Result<Arc<RawValue>, Status> {
        let limits = &self.node.config().limits;
        validate_data(data, limits.max_message_bytes, limits.max_json_depth)
            .map_err(|e| Status::invalid_argument(format!("data: {e}")))
    }

    async fn publish_one(
        &self,
        channel: String,
        event: String,
        data: Arc<RawValue>,
        idempotency_key: &str,
    ) -> Result<api::PublishResponse, Status> {
        let request = PublishRequest {
            channel,
            event,
            data,
            from: None,
            idempotency_key: Some(idempotency_key.to_owned()).filter(|k| !k.is_empty()),
        };
        let position = self.node.publish(request).await?;
        Ok(position_response(position))
    }
}

#[tonic::async_trait]
impl Herald for HeraldApi {
    async fn publish(
        &self,
        request: Request<api::PublishRequest>,
    ) -> Result<Response<api::PublishResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            let data = self.parse_data(&request.data)?;
            self.publish_one(
                request.channel,
                request.event,
                data,
                &request.idempotency_key,
            )
            .await
        }
        .await;
        observe("Publish", result)
    }

    async fn broadcast(
        &self,
        request: Request<api::BroadcastRequest>,
    ) -> Result<Response<api::BroadcastResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            if request.channels.is_empty() || request.channels.len() > 1000 {
                return Err(Status::invalid_argument("channels: 1-1000 channels"));
            }
            // Check everything first, so a bad channel does not leave a partial broadcast.
            let data = self.parse_data(&request.data)?;
            validate_event(&request.event)
                .map_err(|e| Status::invalid_argument(format!("invalid event: {e}")))?;
            for channel in &request.channels {
                self.node.channel(channel)?;
            }
            let mut results = Vec::with_capacity(request.channels.len());
            for channel in request.channels {
                results.push(
                    self.publish_one(
                        channel,
                        request.event.clone(),
                        data.clone(),
                        &request.idempotency_key,
                    )
                    .await?,
                );
            }
            Ok(api::BroadcastResponse { results })
        }
        .await;
        observe("Broadcast", result)
    }

    async fn history(
        &self,
        request: Request<api::HistoryRequest>,
    ) -> Result<Response<api::HistoryResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            // Every read is capped to the namespace's history size by `Node::history`.
            let limit = match request.limit {
                0 => usize::MAX,
                limit => limit as usize,
            };
            let page = history_page(
                |since, count| {
                    let count = u32::try_from(count).unwrap_or(u32::MAX);
                    self.node.history(&request.channel, since, Some(count))
                },
                request.since_offset,
                limit,
                HISTORY_RESPONSE_BYTES,
            )
            .await?;
            let publications = page
                .publications
                .into_iter()
                .map(|p| api::Publication {
                    offset: p.offset,
                    event: p.event.to_string(),
                    data: p.data.get().as_bytes().to_vec(),
                    ts: p.ts,
                    from: p.from.map(|f| f.to_string()).unwrap_or_default(),
                })
                .collect();
            Ok(api::HistoryResponse {
                publications,
                offset: page.position.offset,
                epoch: page.position.epoch.to_string(),
                more: page.more,
            })
        }
        .await;
        observe("History", result)
    }

    async fn disconnect(
        &self,
        request: Request<api::DisconnectRequest>,
    ) -> Result<Response<api::DisconnectResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            if request.user.is_empty() {
                return Err(Status::invalid_argument("user is required"));
            }
            let code = match request.code {
                0 => CloseCode::Shutdown,
                code => u16::try_from(code)
                    .ok()
                    .and_then(CloseCode::from_code)
                    .ok_or_else(|| {
                        Status::invalid_argument(format!("code {code} is not a Herald close code"))
                    })?,
            };
            let closed =
                disconnect::disconnect(&self.node, &request.user, code, &request.reason).await?;
            Ok(api::DisconnectResponse {
                connections: closed as u32,
            })
        }
        .await;
        observe("Disconnect", result)
    }

    async fn subscribe(
        &self,
        request: Request<api::SubscribeRequest>,
    ) -> Result<Response<api::SubscribeResponse>, Status> {
        let request = request.into_inner();
        let client = Some(request.client.as_str()).filter(|c| !c.is_empty());
        let result =
            server_subscriptions::subscribe(&self.node, &request.user, &request.channel, client)
                .await
                .map(|()| api::SubscribeResponse {})
                .map_err(Status::from);
        observe("Subscribe", result)
    }

    async fn unsubscribe(
        &self,
        request: Request<api::UnsubscribeRequest>,
    ) -> Result<Response<api::UnsubscribeResponse>, Status> {
        let request = request.into_inner();
        let client = Some(request.client.as_str()).filter(|c| !c.is_empty());
        let result =
            server_subscriptions::unsubscribe(&self.node, &request.user, &request.channel, client)
                .await
                .map(|()| api::UnsubscribeResponse {})
                .map_err(Status::from);
        observe("Unsubscribe", result)
    }

    async fn info(
        &self,
        _request: Request<api::InfoRequest>,
    ) -> Result<Response<api::InfoResponse>, Status> {
        let node = &self.node;
        let connections = node.connections().all();
        let subscriptions = connections
            .iter()
            .map(|c| c.subscription_count() as u64)
            .sum();
        let info = api::NodeInfo {
            id: node.id().to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            connections: connections.len() as u64,
            subscriptions,
            uptime_seconds: node.uptime().as_secs(),
        };
        observe("Info", Ok(api::InfoResponse { nodes: vec![info] }))
    }

    async fn presence(
        &self,
        request: Request<api::PresenceRequest>,
    ) -> Result<Response<api::PresenceResponse>, Status> {
        let result = async {
            let channel = self.presence_channel(&request.into_inner().channel)?;
            let members = self.node.presence().members(&channel).await?;
            Ok(api::PresenceResponse {
                members: members
                    .into_iter()
                    .map(|(member, status)| api::PresenceMember {
                        user: member.user.to_string(),
                        client: member.client.to_string(),
                        info: member
                            .info
                            .map(|info| info.get().as_bytes().to_vec())
                            .unwrap_or_default(),
                        joined_at: member.joined_at,
                        status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                        state: member
                            .state
                            .map(|state| state.get().as_bytes().to_vec())
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
        }
        .await;
        observe("Presence", result)
    }

    async fn presence_stats(
        &self,
        request: Request<api::PresenceStatsRequest>,
    ) -> Result<Response<api::PresenceStatsResponse>, Status> {
        let result = async {
            let channel = self.presence_channel(&request.into_inner().channel)?;
            let (users, clients) = self.node.presence().stats(&channel).await?;
            Ok(api::PresenceStatsResponse { users, clients })
        }
        .await;
        observe("PresenceStats", result)
    }

    async fn user_status(
        &self,
        request: Request<api::UserStatusRequest>,
    ) -> Result<Response<api::UserStatusResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            if request.org.is_empty() || request.users.len() > MAX_STATUS_USERS {
                return Err(Status::invalid_argument(format!(
                    "org is required, and at most {MAX_STATUS_USERS} users"
                )));
            }
            let users: Vec<Arc<str>> = request
                .users
                .iter()
                .map(|u| Arc::from(u.as_str()))
                .collect();
            let statuses = self.node.presence().statuses(&request.org, &users).await?;
            Ok(api::UserStatusResponse {
                statuses: statuses
                    .into_iter()
                    .map(|status| api::UserStatus {
                        user: status.user.to_string(),
                        status: status.status.as_str().to_owned(),
                        last_seen: status.last_seen,
                    })
                    .collect(),
            })
        }
        .await;
        observe("UserStatus", result)
    }
}

/// Most users one `UserStatus` call may ask about.
const MAX_STATUS_USERS: usize = 1000;

impl HeraldApi {
    /// A valid channel whose namespace has presence.
    fn presence_channel(&self, name: &str) -> Result<herald_protocol::ChannelName, Status> {
        let (channel, _, options) = self.node.channel(name)?;
        if !options.presence {
            return Err(Status::failed_precondition("the channel has no presence"));
        }
        Ok(channel)
    }
}
