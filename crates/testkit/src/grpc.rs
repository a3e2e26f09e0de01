//! gRPC clients of a gateway's API.

use std::net::SocketAddr;

use herald_api::BearerToken;
use herald_api::v1::herald_client::HeraldClient;
use herald_api::v1::{SubscribeRequest, UnsubscribeRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::within;

pub type Grpc = HeraldClient<InterceptedService<Channel, BearerToken>>;

/// A gRPC client of the API at `addr`, sending `key` as the API key.
pub async fn grpc_client(addr: SocketAddr, key: Option<&str>) -> Grpc {
    let channel = within(
        "gRPC connect",
        Channel::from_shared(format!("http://{addr}"))
            .expect("valid URI")
            .connect(),
    )
    .await
    .expect("gRPC connects");
    let key = key.map_or_else(BearerToken::none, |key| {
        BearerToken::new(key).expect("the API key is a valid header value")
    });
    HeraldClient::with_interceptor(channel, key)
}

/// A `Subscribe` of `user`'s connections to `channel`, or of the one connection `client`
/// when it is not empty.
pub fn subscribe_request(user: &str, channel: &str, client: &str) -> SubscribeRequest {
    SubscribeRequest {
        user: user.into(),
        channel: channel.into(),
        client: client.into(),
    }
}

/// The `Unsubscribe` that ends what [`subscribe_request`] started.
pub fn unsubscribe_request(user: &str, channel: &str, client: &str) -> UnsubscribeRequest {
    UnsubscribeRequest {
        user: user.into(),
        channel: channel.into(),
        client: client.into(),
    }
}
