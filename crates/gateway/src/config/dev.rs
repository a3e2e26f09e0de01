//! Development mode's configuration (`herald serve --dev`): generated credentials, loopback
//! only, and the demo chat's namespace. The demo's routes are in `http::dev`.

use std::net::{IpAddr, Ipv4Addr};

use super::namespace::{Access, ChannelOptions, NamespaceRule};
use super::{Config, Secret};
use crate::random::random_token;

impl Config {
    /// Development mode: generates a JWT secret and an API key when none is set, adds the
    /// `demo` namespace unless configured, and binds loopback only, whatever the addresses say.
    pub fn into_dev(mut self) -> Config {
        self.dev = true;
        self.namespaces
            .entry("demo".into())
            .or_insert_with(demo_namespace);
        if self.jwt.secret.is_none() && self.jwt.public_key.is_none() {
            self.jwt.secret = Some(Secret(random_token(48)));
        }
        if self.api_keys.is_empty() {
            self.api_keys.push(Secret(random_token(32)));
        }
        for addr in [
            &mut self.http_addr,
            &mut self.grpc_addr,
            &mut self.metrics_addr,
        ] {
            if !addr.ip().is_loopback() {
                addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
        }
        self
    }
}

/// The `demo` namespace: `demo:<room>` channels any demo user may join, with history,
/// client publish, presence, join/leave and typing.
fn demo_namespace() -> NamespaceRule {
    NamespaceRule {
        access: Access::Public,
        options: ChannelOptions {
            history_size: 100,
            history_ttl: 3600,
            client_publish: true,
            presence: true,
            join_leave: true,
            typing: true,
            ..ChannelOptions::default()
        },
        root: None,
    }
}
