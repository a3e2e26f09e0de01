//! Server-side subscriptions: the app's backend subscribes a user's connections (all of
//! them, on every node, or one connection) to a channel over gRPC, its own decision with no
//! token claim. Each connection gets a `subscribe` push, then the channel's publications,
//! as after a client `subscribe`; an `Unsubscribe` ends them with an `unsubscribe` push
//! (code 2000).
//!
//! A user-wide subscription is also kept in the state, so the user's later connections are
//! put back in it right after `connect`, recovering from the positions the client sends in
//! `connect.subs`. Changes reach every node over the broker (at most once: a node that
//! misses one restores the kept subscription at the user's next connect).
//!
//! When a subscription cannot be joined for a temporary reason (the state backend failed),
//! the connection closes with 4102 and the client reconnects after backoff, recovering: a
//! client is never left believing it is subscribed when it is not.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use herald_protocol::codes::unsubscribe_code;
use herald_protocol::command::StreamPosition;
use herald_protocol::{ChannelName, CloseCode, ErrorCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::broker::{BrokerError, SubscriptionChange, UserOrder};
use crate::connections::Connection;
use crate::disconnect;
use crate::error::PublishError;
use crate::node::Node;
use crate::session::Failure;
use crate::session::commands::{end_subscription, join};
use crate::state::{Kept, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ServerSubscriptionError {
    #[error("user is required")]
    NoUser,
    #[error(transparent)]
    Channel(#[from] PublishError),
    #[error("the user already has the most server-side subscriptions allowed ({0})")]
    Full(usize),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl From<ServerSubscriptionError> for tonic::Status {
    fn from(error: ServerSubscriptionError) -> Self {
        match error {
            ServerSubscriptionError::NoUser => tonic::Status::invalid_argument(error.to_string()),
            ServerSubscriptionError::Channel(error) => error.into(),
            ServerSubscriptionError::Full(_) => {
                tonic::Status::resource_exhausted(error.to_string())
            }
            ServerSubscriptionError::State(error) => error.into(),
            ServerSubscriptionError::Broker(error) => error.into(),
        }
    }
}

/// Subscribes `user`'s connections (or the one connection `client`) to `channel`.
pub async fn subscribe(
    node: &Node,
    user: &str,
    channel: &str,
    client: Option<&str>,
) -> Result<(), ServerSubscriptionError> {
    change(node, user, channel, client, true).await
}

/// Ends `user`'s subscriptions (or the one connection's) of `channel`.
pub async fn unsubscribe(
    node: &Node,
    user: &str,
    channel: &str,
    client: Option<&str>,
) -> Result<(), ServerSubscriptionError> {
    change(node, user, channel, client, false).await
}

async fn change(
    node: &Node,
    user: &str,
    channel: &str,
    client: Option<&str>,
    subscribe: bool,
) -> Result<(), ServerSubscriptionError> {
    if user.is_empty() {
        return Err(ServerSubscriptionError::NoUser);
    }
    let (channel, _, _) = node.channel(channel)?;
    if client.is_none() {
        if subscribe {
            if node.keep_subscription(user, &channel).await? == Kept::Full {
                let max = node.config().limits.max_subscriptions;
                return Err(ServerSubscriptionError::Full(max));
            }
        } else {
            node.forget_subscription(user, &channel).await?;
        }
    }
    let change = SubscriptionChange {
        user: user.to_owned(),
        channel: channel.to_string(),
        client: client.map(str::to_owned),
        subscribe,
    };
    node.publish_change(&UserOrder::Subscription(change))
        .await?;
    Ok(())
}

/// Applies the user orders the broker hands over (subscription changes, and the other
/// nodes' gRPC `Disconnect`s) to this node's connections, until the node is gone. One task
/// per order, so a slow state read holds up no other user; a user's orders run one after
/// the other, so a `Subscribe` then `Unsubscribe` ends unsubscribed. An order whose task
/// panics ends only that task (the next order of its user sees a failed join and goes on),
/// so this loop needs no [`crate::isolate`] of its own.
pub async fn apply_changes(node: Weak<Node>, mut orders: mpsc::Receiver<UserOrder>) {
    let mut last_of_user: HashMap<String, JoinHandle<()>> = HashMap::new();
    while let Some(order) = orders.recv().await {
        let Some(node) = node.upgrade() else { return };
        if last_of_user.len() >= PRUNE_USERS_ABOVE {
            last_of_user.retain(|_, task| !task.is_finished());
        }
        let user = order.user().to_owned();
        let previous = last_of_user.remove(&user);
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            match order {
                UserOrder::Subscription(change) => apply(&node, change).await,
                UserOrder::Disconnect { disconnect } => disconnect::apply(&node, &disconnect),
            }
        });
        last_of_user.insert(user, task);
    }
}

/// Users whose last change task is remembered before finished ones are dropped.
const PRUNE_USERS_ABOVE: usize = 1024;

/// Applies one change to the connections it names on this node, concurrently.
async fn apply(node: &Arc<Node>, change: SubscriptionChange) {
    let Ok(channel) = ChannelName::parse(&change.channel) else {
        return;
    };
    let connections = match &change.client {
        Some(client) => node
            .connections()
            .get(client)
            .filter(|connection| *connection.claims().sub == *change.user)
            .into_iter()
            .collect(),
        None => node.connections().of_user(&change.user),
    };
    let each = connections.iter().map(|connection| async {
        if change.subscribe {
            enter(node, connection, &channel, None).await;
        } else {
            end_subscription(node, connection, &channel, unsubscribe_code::SERVER).await;
        }
    });
    futures_util::future::join_all(each).await;
}

/// Puts a connection that just connected back in its user's kept subscriptions,
/// recovering from `positions` (the client's `connect.subs`); a channel the client holds
/// that is no longer kept gets an `unsubscribe` push (2000).
pub async fn restore(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    positions: HashMap<String, StreamPosition>,
) {
    if let Some(kept) = kept_of(node, connection).await {
        restore_kept(node, connection, &kept, positions).await;
    }
}

/// The connection's user's kept subscriptions; `None` after closing the connection with
/// 4102 when they cannot be read (it reconnects and tries again).
pub async fn kept_of(node: &Node, connection: &Connection) -> Option<Vec<ChannelName>> {
    let user = connection.claims().sub.clone();
    match node.kept_subscriptions(&user).await {
        Ok(kept) => Some(kept),
        Err(error) => {
            tracing::warn!(client = %connection.id, %error, "could not read kept subscriptions");
            connection.close(CloseCode::Unavailable);
            None
        }
    }
}

/// [`restore`] with the user's kept subscriptions already read; those the connection
/// already holds stay as they are.
pub async fn restore_kept(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    kept: &[ChannelName],
    positions: HashMap<String, StreamPosition>,
) {
    for channel in kept {
        if !enter(node, connection, channel, positions.get(channel.as_str())).await {
            return;
        }
    }
    // At most as many as a connection may hold: the map came from the client.
    let max = node.config().limits.max_subscriptions;
    for name in positions.keys().take(max) {
        if !kept.iter().any(|channel| channel.as_str() == name) {
            let code = unsubscribe_code::SERVER;
            let reason = unsubscribe_code::reason(code);
            connection.send(connection.codec.unsubscribe(name, code, reason));
        }
    }
}

/// A server-side subscription is kept beside those made with a subscription token (which a
/// `refresh` leaves alone too), with an expiry that never comes.
const NEVER_EXPIRES: i64 = i64::MAX;

/// Subscribes one connection server-side. False when the connection was closed for it.
async fn enter(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    channel: &ChannelName,
    recover: Option<&StreamPosition>,
) -> bool {
    let options = match node.channel(channel.as_str()) {
        Ok((_, _, options)) => options.clone(),
        // Its namespace is gone from the configuration since it was kept.
        Err(error) => {
            tell_ended(connection, channel, &error.to_string());
            return true;
        }
    };
    let codec = connection.codec;
    // Authorised by the backend, not the claims: a `refresh` must not revoke it. Marked
    // first, so no `refresh` finds it joined but unmarked.
    let marks = &node.connections().subscription_tokens;
    marks.insert(&connection.id, channel, NEVER_EXPIRES);
    let joined = join(
        node,
        connection,
        channel,
        &options,
        recover,
        None,
        |result| codec.subscribe(channel.as_str(), result),
    )
    .await;
    if joined
        .as_ref()
        .is_err_and(|failure| failure.code != ErrorCode::AlreadySubscribed)
    {
        marks.remove(&connection.id, channel);
    }
    match joined {
        Ok(()) => true,
        Err(Failure {
            code: ErrorCode::AlreadySubscribed,
            ..
        }) => true,
        Err(failure) if failure.code.temporary() => {
            tracing::warn!(client = %connection.id, %channel, message = %failure.message, "server-side subscribe failed");
            connection.close(CloseCode::Unavailable);
            false
        }
        Err(failure) => {
            tell_ended(connection, channel, &failure.message);
            true
        }
    }
}

/// Tells the client a server-side subscription cannot be held (2000, with why).
fn tell_ended(connection: &Connection, channel: &ChannelName, reason: &str) {
    let code = unsubscribe_code::SERVER;
    connection.send(connection.codec.unsubscribe(channel.as_str(), code, reason));
}
