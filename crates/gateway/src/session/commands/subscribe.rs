//! `subscribe`: join a channel, optionally recovering what was missed since a position.
//!
//! The order matters for not losing or duplicating anything: the subscriber is added to
//! the hub first (pending: publications are buffered for it), then the channel's state is
//! read, then the hub queues the reply and the buffered publications newer than the
//! position in the reply.

use std::sync::Arc;

use herald_protocol::command::{StreamPosition, SubscribeRequest};
use herald_protocol::reply::{SubscribeResult, TypingPush};
use herald_protocol::{ChannelName, ErrorCode, Publication};

use crate::auth::{AuthError, SubscriptionClaims, check_subscribe};
use crate::config::ChannelOptions;
use crate::connections::Connection;
use crate::metrics;
use crate::node::Node;
use crate::paging::{HistoryPage, history_page};
use crate::session::{Answer, Failure};
use crate::state::{Position, StateError, is_unpublished, unpublished_recovers};

pub async fn apply(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    id: u64,
    request: SubscribeRequest,
) -> Result<Answer, Failure> {
    let (channel, options, token) =
        authorize_with_token(node, connection, &request.channel, request.token.as_deref())?;
    let expires = token.as_ref().map(|token| token.exp);
    let codec = connection.codec;
    join(
        node,
        connection,
        &channel,
        &options,
        request.recover.as_ref(),
        expires,
        |result| codec.result(id, result),
    )
    .await?;
    if let Some(expires) = expires {
        // Made with a subscription token: it ends at the token's `exp` unless refreshed.
        node.connections()
            .subscription_tokens
            .insert(&connection.id, &channel, expires);
    }
    Ok(Answer::Sent)
}

/// Subscribes an authorized connection: the client's `subscribe` and the server-side
/// subscriptions share it. `announce` encodes the subscribe result (a reply or a push),
/// which is queued before any publication of the channel.
pub async fn join(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    channel: &ChannelName,
    options: &ChannelOptions,
    recover: Option<&StreamPosition>,
    expires: Option<i64>,
    announce: impl FnOnce(&SubscribeResult<Publication>) -> bytes::Bytes,
) -> Result<(), Failure> {
    let joining = begin_join(node, connection, channel, options, recover, expires).await?;
    let bytes = announce(&joining.result);
    joining.answer(node, connection, bytes).await
}

/// A subscription joined but not answered yet: the connection is a member of the channel,
/// and the hub holds the channel's publications for it until [`Joining::answer`].
pub struct Joining {
    channel: ChannelName,
    position: Position,
    pub result: SubscribeResult<Publication>,
}

/// Everything of [`join`] but the answer: the subscription, the channel's state read (and
/// recovered from `recover`), and its presence.
pub async fn begin_join(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    channel: &ChannelName,
    options: &ChannelOptions,
    recover: Option<&StreamPosition>,
    expires: Option<i64>,
) -> Result<Joining, Failure> {
    if connection.subscription_count() >= node.config().limits.max_subscriptions
        && !connection.is_subscribed(channel)
    {
        return Err(Failure::new(
            ErrorCode::LimitExceeded,
            "too many subscriptions",
        ));
    }
    if !connection.add_subscription(channel) {
        return Err(Failure::code(ErrorCode::AlreadySubscribed));
    }
    if let Some(expires) = expires {
        let user = connection.claims().sub.clone();
        let key = node.recovery_key();
        connection.grant(channel, || key.grant(&user, channel.as_str(), expires));
    }
    if let Err(error) = node.add_subscriber(channel, connection.clone()).await {
        leave(node, connection, channel).await;
        return Err(error.into());
    }
    let read = async {
        let (position, mut result) = read_state(node, channel, options, recover).await?;
        if options.typing {
            result.typing = typers(node, connection, channel).await?;
        }
        result.expires = expires;
        node.presence().joined(channel, options, connection).await?;
        Ok::<_, StateError>((position, result))
    };
    match read.await {
        Ok((position, result)) => Ok(Joining {
            channel: channel.clone(),
            position,
            result,
        }),
        Err(error) => {
            leave(node, connection, channel).await;
            Err(error.into())
        }
    }
}

impl Joining {
    pub fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// Queues `answer` (nothing when empty), then what the hub held for the subscription,
    /// and makes it live.
    pub async fn answer(
        self,
        node: &Arc<Node>,
        connection: &Arc<Connection>,
        answer: bytes::Bytes,
    ) -> Result<(), Failure> {
        if !node.activate(&self.channel, connection, answer, &self.position) {
            // The connection closed meanwhile: undo the join, or it stays a ghost member.
            self.abandon(node, connection).await;
            return Err(Failure::code(ErrorCode::Unavailable));
        }
        metrics::gauge!(metrics::SUBSCRIPTIONS).increment(1.0);
        Ok(())
    }

    /// Undoes the join without a word to the client.
    pub async fn abandon(self, node: &Arc<Node>, connection: &Arc<Connection>) {
        node.presence().left(&self.channel, connection).await;
        leave(node, connection, &self.channel).await;
    }
}

/// Who is typing in the channel, other than the subscriber's user.
async fn typers(
    node: &Node,
    connection: &Connection,
    channel: &ChannelName,
) -> Result<Vec<TypingPush>, StateError> {
    Ok(node
        .presence()
        .typers(channel)
        .await?
        .iter()
        .filter(|typer| typer.user != connection.claims().sub)
        .map(|typer| TypingPush::new(typer, true))
        .collect())
}

/// Undoes a half-done subscribe.
async fn leave(node: &Arc<Node>, connection: &Arc<Connection>, channel: &ChannelName) {
    connection.remove_subscription(channel);
    node.remove_subscriber(channel, &connection.id).await;
}

/// The channel's position and the subscribe result: recovered publications when the client
/// asked and history still covers its gap. They are the first page (the reply byte budget);
/// `more` says the client fetches the rest with `history`, up to the result's offset.
async fn read_state(
    node: &Node,
    channel: &ChannelName,
    options: &ChannelOptions,
    recover: Option<&StreamPosition>,
) -> Result<(Position, SubscribeResult<Publication>), StateError> {
    if !options.has_history() {
        let result = SubscribeResult {
            offset: 0,
            epoch: String::new(),
            recoverable: false,
            recovered: false,
            publications: vec![],
            more: false,
            typing: vec![],
            expires: None,
        };
        return Ok((Position::default(), result));
    }
    let recoverable = options.recover;
    let (page, recovered) = match recover.filter(|_| recoverable) {
        Some(since) => {
            let page = history_page(
                |from, count| node.read_history(channel, from, count),
                since.offset,
                options.history_size,
                node.config().limits.reply_bytes(),
            )
            .await?;
            let recovered = covers(&page, since, options.history_ttl());
            (page, recovered)
        }
        None => (
            HistoryPage {
                publications: vec![],
                position: node.position(channel).await?,
                more: false,
            },
            false,
        ),
    };
    let position = page.position.clone();
    let (publications, more) = if recovered {
        (page.publications, page.more)
    } else {
        (vec![], false)
    };
    let result = SubscribeResult {
        offset: position.offset,
        epoch: position.epoch.to_string(),
        recoverable,
        recovered,
        publications,
        more,
        typing: vec![],
        expires: None,
    };
    Ok((position, result))
}

/// Whether history still holds every publication after `since`: `page` starts right after
/// it, in the same epoch (the page itself is contiguous; with `more` the rest follows).
/// A position read while the channel had no history state (an unpublished placeholder)
/// is covered by the epoch begun since, from offset 1, if it is the first since the read
/// (see [`unpublished_recovers`]; `lifetime` is the channel's history TTL).
fn covers(page: &HistoryPage, since: &StreamPosition, lifetime: std::time::Duration) -> bool {
    if is_unpublished(&since.epoch) {
        if since.offset != 0 || !unpublished_recovers(&since.epoch, &page.position.epoch, lifetime)
        {
            return false;
        }
    } else if *page.position.epoch != *since.epoch || since.offset > page.position.offset {
        return false;
    }
    match page.publications.first() {
        None => since.offset == page.position.offset,
        Some(first) => {
            first.offset == since.offset + 1
                && (page.more
                    || page
                        .publications
                        .last()
                        .is_some_and(|last| last.offset == page.position.offset))
        }
    }
}

/// Checks the channel name, its namespace, and the connection's right to subscribe.
pub fn authorize(
    node: &Node,
    connection: &Connection,
    name: &str,
    subscription_token: Option<&str>,
) -> Result<(ChannelName, ChannelOptions), Failure> {
    authorize_with_token(node, connection, name, subscription_token)
        .map(|(channel, options, _)| (channel, options))
}

/// [`authorize`], also returning the verified subscription token when one was given.
pub fn authorize_with_token(
    node: &Node,
    connection: &Connection,
    name: &str,
    subscription_token: Option<&str>,
) -> Result<(ChannelName, ChannelOptions, Option<SubscriptionClaims>), Failure> {
    let (channel, rule, options) = node.channel(name)?;
    let token = subscription_token
        .filter(|t| !t.is_empty())
        .map(|token| node.auth().verify_subscription(token))
        .transpose()
        .map_err(|error| match error {
            // On subscribe an expired token is refused like any other bad one; only
            // `subRefresh` tells expiry apart.
            AuthError::Expired => Failure::new(
                ErrorCode::PermissionDenied,
                format!("subscription token: {error}"),
            ),
            other => Failure::subscription_token(other),
        })?;
    check_subscribe(rule.access, &channel, &connection.claims(), token.as_ref())?;
    Ok((channel.clone(), options.clone(), token))
}

/// Like [`authorize`] without a subscription token, but a connection already subscribed to
/// the channel (perhaps with a subscription token) is a member.
pub fn authorize_member(
    node: &Node,
    connection: &Connection,
    name: &str,
) -> Result<(ChannelName, ChannelOptions), Failure> {
    let (channel, _, options) = node.channel(name)?;
    if connection.is_subscribed(&channel) {
        return Ok((channel, options.clone()));
    }
    authorize(node, connection, name, None)
}
