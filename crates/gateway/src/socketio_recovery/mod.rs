//! Socket.IO connection state recovery across nodes, with no session kept on the server.
//!
//! socket.io-client keeps two strings and sends them back in the CONNECT of a reconnect:
//! the `pid` of its last CONNECT, and the last argument of the last event it received
//! when that is a string (its offset). Herald makes the pid a token bound to the user
//! ([`RecoveryKey`]: any node with the same key verifies it), and the offset the
//! connection's [`Cursor`]: every channel it holds with the position of the last
//! publication it was sent. Each publication event carries the cursor as it stands after
//! it; a change without a publication (a subscription answered or ended) goes out as a
//! `herald:offset` event ahead of the answer, so a client that knows of a subscription
//! also holds an offset that names it.
//!
//! Recovery re-authorises each channel of the offset (claims, or the user's server-side
//! subscriptions), joins it and reads its history after the position, as a native
//! `subscribe` with `recover` does. Only when every channel is back and history covers
//! every gap, within one reply budget in all, is the CONNECT answered with the same pid
//! (`socket.recovered`), followed by the missed publications, in order, and then live
//! ones. Otherwise nothing is kept: a new pid, a fresh session (with the user's
//! server-side subscriptions restored as on any connect), and the app refetches.

mod cursor;
mod key;

use std::sync::Arc;

use herald_protocol::command::Resume;
use herald_protocol::{ChannelName, CloseCode, socketio};

pub use cursor::Cursor;
pub use key::RecoveryKey;

use crate::auth::check_subscribe;
use crate::clock::unix_seconds;
use crate::connections::Connection;
use crate::node::Node;
use crate::server_subscriptions;
use crate::session::commands::{Joining, begin_join};

/// Answers a Socket.IO CONNECT that carried a pid: recovers the session when it can, then
/// restores the user's server-side subscriptions. Each channel rejoined costs what a
/// `subscribe` costs: `take_token` answers whether the command budget has one left.
pub async fn resume(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    resume: Box<Resume>,
    take_token: impl FnMut() -> bool,
) {
    let Some(kept) = server_subscriptions::kept_of(node, connection).await else {
        return;
    };
    let user = connection.claims().sub.clone();
    let max = node.config().limits.max_subscriptions;
    let marks = match node.recovery_key().verify(&resume.pid, &user) {
        true => cursor::parse(&resume.offset, max),
        false => None,
    };
    let outcome = match marks {
        Some(marks) => rejoin(node, connection, &kept, marks, take_token).await,
        None => Outcome::Lost(Vec::new()),
    };
    let pid = match outcome {
        Outcome::Recovered(joined) => {
            connection.send(socketio::encode_connected(&connection.id, &resume.pid));
            if !answer(node, connection, joined).await {
                return;
            }
            None
        }
        Outcome::Lost(joined) => {
            abandon(node, connection, joined).await;
            Some(node.recovery_key().issue(&user))
        }
        Outcome::Unavailable(joined) => {
            // The client keeps its pid and offset, and tries again after its backoff.
            abandon(node, connection, joined).await;
            connection.close(CloseCode::Unavailable);
            return;
        }
    };
    if let Some(pid) = pid {
        connection.send(socketio::encode_connected(&connection.id, &pid));
    }
    server_subscriptions::restore_kept(node, connection, &kept, Default::default()).await;
}

enum Outcome {
    /// Every channel joined, each with every publication missed.
    Recovered(Vec<Joining>),
    /// Not recoverable: the joins made so far, to undo.
    Lost(Vec<Joining>),
    /// The state failed: the joins made so far, to undo.
    Unavailable(Vec<Joining>),
}

/// Joins every channel of the offset and reads what was missed, without answering yet.
async fn rejoin(
    node: &Arc<Node>,
    connection: &Arc<Connection>,
    kept: &[ChannelName],
    marks: Vec<cursor::Mark>,
    mut take_token: impl FnMut() -> bool,
) -> Outcome {
    let mut joined = Vec::with_capacity(marks.len());
    let mut budget = node.config().limits.reply_bytes();
    let claims = connection.claims();
    for mark in marks {
        if !take_token() {
            return Outcome::Lost(joined);
        }
        let Ok((channel, rule, options)) = node.channel(&mark.channel) else {
            return Outcome::Lost(joined);
        };
        // A grant stands for the subscription token the channel was joined with, until its
        // `exp`; the subscription then ends at that `exp` as the token's did.
        let granted = mark.grant.as_deref().and_then(|grant| {
            let key = node.recovery_key();
            key.verify_grant(grant, &claims.sub, channel.as_str())
                .filter(|expires| *expires > unix_seconds())
        });
        let allowed = kept.contains(&channel)
            || granted.is_some()
            || check_subscribe(rule.access, &channel, &claims, None).is_ok();
        // A position for a channel that now keeps no history, or none for one that now
        // does: its namespace changed since.
        let recoverable = options.has_history() && options.recover;
        if !allowed || recoverable != mark.position.is_some() {
            return Outcome::Lost(joined);
        }
        let recover = mark.position.as_ref();
        let joining = begin_join(node, connection, &channel, options, recover, granted);
        let joining = match joining.await {
            Ok(joining) => joining,
            Err(failure) if failure.code.temporary() => return Outcome::Unavailable(joined),
            Err(_) => return Outcome::Lost(joined),
        };
        let result = &joining.result;
        let bytes: usize = result
            .publications
            .iter()
            .map(|p| p.event.len() + p.data.get().len())
            .sum();
        let covered = recover.is_none() || (result.recovered && !result.more);
        if let Some(expires) = granted {
            let tokens = &node.connections().subscription_tokens;
            tokens.insert(&connection.id, &channel, expires);
        }
        joined.push(joining);
        match budget.checked_sub(bytes) {
            Some(left) if covered => budget = left,
            _ => return Outcome::Lost(joined),
        }
    }
    Outcome::Recovered(joined)
}

/// Sends each recovered channel's missed publications, then makes it live; a channel
/// without history is answered with a `herald:subscribed` that says it recovered nothing.
/// False when the connection closed meanwhile.
async fn answer(node: &Arc<Node>, connection: &Arc<Connection>, joined: Vec<Joining>) -> bool {
    for joining in joined {
        let channel = joining.channel().clone();
        let answer = match joining.result.recoverable {
            true => {
                for publication in &joining.result.publications {
                    let position = Some((&publication.epoch, publication.offset));
                    let event = || socketio::encode_publication(publication);
                    if let Some(event) = connection.own_publication(&channel, position, event) {
                        connection.send(event);
                    }
                }
                bytes::Bytes::new()
            }
            false => connection
                .codec
                .subscribe(channel.as_str(), &joining.result),
        };
        if joining.answer(node, connection, answer).await.is_err() {
            return false;
        }
    }
    true
}

async fn abandon(node: &Arc<Node>, connection: &Arc<Connection>, joined: Vec<Joining>) {
    for joining in joined {
        joining.abandon(node, connection).await;
    }
}
