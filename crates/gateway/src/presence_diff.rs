//! Presence diffs for big channels. Once a channel has more members than the push limit
//! (`HERALD_PRESENCE_PUSH_LIMIT`), the joins and leaves made through this node stop going
//! out one push each: they are collected and sent as one `presence` push per channel every
//! [`DIFF_INTERVAL`], the way Phoenix (`presence_diff`) and Ably (server-side presence
//! batching) bound a crowd. One push per join is N² pushes for N members joining; this is
//! at most one per channel and node a second, whatever the rate of joins.
//!
//! Presence state changes (`setPresenceState`) of such a channel go into the diff too.
//!
//! Each connection's changes are netted over the interval: a join then a leave is nothing, a
//! leave then a join (a resubscribe) stays a leave and a join; of its state changes the last
//! one stays, folded into its join when it joined in the interval, and none after it left.
//! Applying a diff's leaves, then its joins, then its states, gives the member list the
//! pushes one by one would have given.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::mem;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herald_protocol::ChannelName;
use herald_protocol::reply::{ChannelEvent, PresenceDiff, PresenceMember, StatePush, encode_event};

use crate::paging::json_len;
use crate::state::Member;

/// How often a big channel's collected joins, leaves and state changes go out.
pub const DIFF_INTERVAL: Duration = Duration::from_secs(1);

/// One connection's net change to a channel's presence since the last diff.
enum Net {
    Joined(Member),
    Left(Member),
    /// Left (as `left`) and joined again.
    Rejoined {
        left: Member,
        joined: Member,
    },
    /// A member from before the interval changed its state.
    State(StatePush),
}

/// The joins, leaves and state changes of big channels waiting for the next diff.
pub struct Diffs {
    /// Members above which a channel's changes are collected; 0 = never.
    limit: u64,
    /// channel → connection id → its net change.
    pending: Mutex<HashMap<ChannelName, HashMap<Arc<str>, Net>>>,
}

impl Diffs {
    pub fn new(limit: u64) -> Diffs {
        Diffs {
            limit,
            pending: Mutex::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelName, HashMap<Arc<str>, Net>>> {
        // Nothing panics while holding this lock; the maps stay valid.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Collects `member`'s join when the channel's changes go out as diffs: `members` (the
    /// channel's count with it, or a lower bound of it) is over the limit, or a diff is
    /// pending (a push now could overtake a change the diff holds for the same
    /// connection). False: push it now.
    pub fn join(&self, channel: &ChannelName, member: &Member, members: u64) -> bool {
        self.collect(channel, members, member.client.clone(), |net| {
            Some(match net {
                // A join after a state change without a leave between: the store lost the
                // entry and it was re-created, so the join tells it all.
                None | Some(Net::Joined(_) | Net::State(_)) => Net::Joined(member.clone()),
                Some(Net::Left(left) | Net::Rejoined { left, .. }) => Net::Rejoined {
                    left,
                    joined: member.clone(),
                },
            })
        })
    }

    /// Collects `member`'s leave, as [`Self::join`] does; `members` counts it.
    pub fn leave(&self, channel: &ChannelName, member: &Member, members: u64) -> bool {
        self.collect(channel, members, member.client.clone(), |net| match net {
            None | Some(Net::Left(_) | Net::State(_)) => Some(Net::Left(member.clone())),
            // Subscribers never saw it: nothing to tell them.
            Some(Net::Joined(_)) => None,
            Some(Net::Rejoined { left, .. }) => Some(Net::Left(left)),
        })
    }

    /// Collects a member's state change, as [`Self::join`] does; `members` counts it.
    pub fn state(&self, channel: &ChannelName, state: &StatePush, members: u64) -> bool {
        self.collect(channel, members, state.client.clone(), |net| {
            Some(match net {
                None | Some(Net::State(_)) => Net::State(state.clone()),
                // Subscribers learn of the member with its latest state.
                Some(Net::Joined(mut joined)) => {
                    joined.state = state.state.clone();
                    Net::Joined(joined)
                }
                Some(Net::Rejoined { left, mut joined }) => {
                    joined.state = state.state.clone();
                    Net::Rejoined { left, joined }
                }
                // A change racing the leave: the member is gone.
                Some(left @ Net::Left(_)) => left,
            })
        })
    }

    fn collect(
        &self,
        channel: &ChannelName,
        members: u64,
        client: Arc<str>,
        change: impl FnOnce(Option<Net>) -> Option<Net>,
    ) -> bool {
        let over = self.limit > 0 && members > self.limit;
        let mut pending = self.pending();
        if !over && !pending.contains_key(channel) {
            return false;
        }
        let changes = pending.entry(channel.clone()).or_default();
        match changes.entry(client) {
            Entry::Occupied(entry) => {
                let (client, net) = entry.remove_entry();
                if let Some(net) = change(Some(net)) {
                    changes.insert(client, net);
                }
            }
            Entry::Vacant(entry) => {
                if let Some(net) = change(None) {
                    entry.insert(net);
                }
            }
        }
        // The channel stays pending until the next diff even when its changes net out, so
        // every later change of the interval joins the diff too.
        true
    }

    /// Takes every pending diff: per channel, its leaves and its joins (oldest first), and
    /// its state changes.
    /// Channels whose changes netted out are left out.
    pub fn take(&self) -> Vec<(ChannelName, PresenceDiff)> {
        let pending = mem::take(&mut *self.pending());
        let mut diffs = Vec::with_capacity(pending.len());
        for (channel, changes) in pending {
            let mut diff = PresenceDiff::default();
            for net in changes.into_values() {
                match net {
                    Net::Joined(joined) => diff.joins.push(PresenceMember::new(&joined, None)),
                    Net::Left(left) => diff.leaves.push(PresenceMember::new(&left, None)),
                    Net::Rejoined { left, joined } => {
                        diff.leaves.push(PresenceMember::new(&left, None));
                        diff.joins.push(PresenceMember::new(&joined, None));
                    }
                    Net::State(state) => diff.states.push(state),
                }
            }
            if diff.is_empty() {
                continue;
            }
            let order = |m: &PresenceMember| (m.joined_at, m.client.clone());
            diff.leaves.sort_unstable_by_key(order);
            diff.joins.sort_unstable_by_key(order);
            diff.states.sort_unstable_by(|a, b| a.client.cmp(&b.client));
            diffs.push((channel, diff));
        }
        diffs
    }
}

/// One entry of a diff.
enum Change {
    Leave(PresenceMember),
    Join(PresenceMember),
    State(StatePush),
}

/// A diff as `presence` pushes of at most `budget` bytes of changes each (at least one
/// change), leaves before joins before states across them, so that applying them in order
/// (each one's leaves, then its joins, then its states) applies the diff.
pub fn encode(channel: &ChannelName, diff: PresenceDiff, budget: usize) -> Vec<Bytes> {
    let mut pushes = Vec::new();
    let mut part = PresenceDiff::default();
    let mut bytes = 0;
    let changes = diff
        .leaves
        .into_iter()
        .map(Change::Leave)
        .chain(diff.joins.into_iter().map(Change::Join))
        .chain(diff.states.into_iter().map(Change::State));
    for change in changes {
        let size = match &change {
            Change::Leave(member) | Change::Join(member) => json_len(member),
            Change::State(state) => json_len(state),
        } + 1;
        if bytes + size > budget && !part.is_empty() {
            let full = mem::take(&mut part);
            pushes.push(encode_event(
                channel.as_str(),
                &ChannelEvent::Presence(full),
            ));
            bytes = 0;
        }
        bytes += size;
        match change {
            Change::Leave(member) => part.leaves.push(member),
            Change::Join(member) => part.joins.push(member),
            Change::State(state) => part.states.push(state),
        }
    }
    if !part.is_empty() {
        pushes.push(encode_event(
            channel.as_str(),
            &ChannelEvent::Presence(part),
        ));
    }
    pushes
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    fn member(client: &str, joined_at: i64) -> Member {
        Member {
            user: Arc::from(format!("user-{client}")),
            client: Arc::from(client),
            info: None,
            joined_at,
            state: None,
        }
    }

    fn channel() -> ChannelName {
        ChannelName::parse("org:acme:ch:crowd").unwrap()
    }

    fn clients(members: &[PresenceMember]) -> Vec<&str> {
        members.iter().map(|m| &*m.client).collect()
    }

    #[test]
    fn small_channels_push_at_once_and_big_ones_collect() {
        let diffs = Diffs::new(3);
        assert!(!diffs.join(&channel(), &member("a", 1), 3));
        assert!(diffs.join(&channel(), &member("b", 2), 4));
        // Below the limit again, but a diff is pending: it joins the diff.
        assert!(diffs.leave(&channel(), &member("a", 1), 3));
        let taken = diffs.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(clients(&taken[0].1.joins), ["b"]);
        assert_eq!(clients(&taken[0].1.leaves), ["a"]);
        assert!(
            !diffs.leave(&channel(), &member("b", 2), 2),
            "nothing pending"
        );
    }

    #[test]
    fn a_limit_of_zero_never_collects() {
        let diffs = Diffs::new(0);
        assert!(!diffs.join(&channel(), &member("a", 1), 1_000_000));
        assert!(diffs.take().is_empty());
    }

    #[test]
    fn changes_of_one_connection_net_out() {
        let diffs = Diffs::new(1);
        // Joined then left within the interval: nobody needs to hear of it.
        diffs.join(&channel(), &member("a", 1), 5);
        diffs.leave(&channel(), &member("a", 1), 5);
        // Left then joined again: both, the leave first.
        diffs.leave(&channel(), &member("b", 2), 5);
        diffs.join(&channel(), &member("b", 9), 5);
        // Left, joined, left: the first leave only.
        diffs.leave(&channel(), &member("c", 3), 5);
        diffs.join(&channel(), &member("c", 8), 5);
        diffs.leave(&channel(), &member("c", 8), 5);
        let taken = diffs.take();
        let diff = &taken[0].1;
        assert_eq!(clients(&diff.leaves), ["b", "c"]);
        assert_eq!(diff.leaves[1].joined_at, 3, "the entry subscribers knew");
        assert_eq!(clients(&diff.joins), ["b"]);
        assert_eq!(diff.joins[0].joined_at, 9);
    }

    fn state(client: &str, state: Option<&str>) -> StatePush {
        StatePush {
            user: Arc::from(format!("user-{client}")),
            client: Arc::from(client),
            state: state.map(|s| Arc::from(RawValue::from_string(s.to_owned()).unwrap())),
        }
    }

    fn text(state: &Option<Arc<RawValue>>) -> Option<&str> {
        state.as_deref().map(RawValue::get)
    }

    #[test]
    fn state_changes_net_out_per_connection() {
        let diffs = Diffs::new(1);
        // The last of several changes wins.
        diffs.state(&channel(), &state("a", Some("1")), 5);
        diffs.state(&channel(), &state("a", Some("2")), 5);
        // Cleared is a change too.
        diffs.state(&channel(), &state("b", Some("1")), 5);
        diffs.state(&channel(), &state("b", None), 5);
        // Joined in the interval: the join carries the latest state.
        diffs.join(&channel(), &member("c", 3), 5);
        diffs.state(&channel(), &state("c", Some("3")), 5);
        // Left after a change: no state entry.
        diffs.state(&channel(), &state("d", Some("4")), 5);
        diffs.leave(&channel(), &member("d", 4), 5);
        // Left, then a change racing the leave: nothing but the leave.
        diffs.leave(&channel(), &member("e", 5), 5);
        diffs.state(&channel(), &state("e", Some("5")), 5);
        // Rejoined: the new membership's state rides on its join.
        diffs.leave(&channel(), &member("f", 6), 5);
        diffs.join(&channel(), &member("f", 9), 5);
        diffs.state(&channel(), &state("f", Some("6")), 5);
        let taken = diffs.take();
        let diff = &taken[0].1;
        let states: Vec<(&str, Option<&str>)> = diff
            .states
            .iter()
            .map(|s| (&*s.client, text(&s.state)))
            .collect();
        assert_eq!(states, [("a", Some("2")), ("b", None)]);
        let joins: Vec<(&str, Option<&str>)> = diff
            .joins
            .iter()
            .map(|m| (&*m.client, text(&m.state)))
            .collect();
        assert_eq!(joins, [("c", Some("3")), ("f", Some("6"))]);
        assert_eq!(clients(&diff.leaves), ["d", "e", "f"]);
    }

    #[test]
    fn a_state_change_below_the_limit_is_pushed_at_once() {
        let diffs = Diffs::new(3);
        assert!(!diffs.state(&channel(), &state("a", Some("1")), 3));
        assert!(diffs.state(&channel(), &state("a", Some("2")), 4));
        assert_eq!(diffs.take()[0].1.states.len(), 1);
    }

    #[test]
    fn a_diff_that_nets_out_is_not_pushed() {
        let diffs = Diffs::new(1);
        diffs.join(&channel(), &member("a", 1), 5);
        diffs.leave(&channel(), &member("a", 1), 5);
        assert!(diffs.take().is_empty());
    }

    #[test]
    fn big_diffs_split_by_bytes_leaves_first() {
        let mut diff = PresenceDiff::default();
        for i in 0..10 {
            diff.leaves
                .push(PresenceMember::new(&member(&format!("l{i}"), i), None));
            diff.joins
                .push(PresenceMember::new(&member(&format!("j{i}"), i), None));
        }
        let one = json_len(&diff.joins[0]) + 1;
        let pushes = encode(&channel(), diff, 3 * one);
        assert_eq!(pushes.len(), 7);
        let mut seen = Vec::new();
        for push in &pushes {
            let value: serde_json::Value = serde_json::from_slice(push).unwrap();
            let body = &value["push"]["presence"];
            assert_eq!(value["push"]["channel"], "org:acme:ch:crowd");
            for key in ["leaves", "joins"] {
                // An empty list is left out.
                for member in body[key].as_array().into_iter().flatten() {
                    seen.push(member["client"].as_str().unwrap().to_owned());
                }
            }
        }
        let expected: Vec<String> = (0..10)
            .map(|i| format!("l{i}"))
            .chain((0..10).map(|i| format!("j{i}")))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn states_come_after_joins_across_split_pushes() {
        let mut diff = PresenceDiff::default();
        diff.joins.push(PresenceMember::new(&member("j", 1), None));
        diff.states.push(state("s1", Some(r#""x""#)));
        diff.states.push(state("s2", None));
        let one = json_len(&diff.joins[0]) + 1;
        let pushes = encode(&channel(), diff, one);
        let bodies: Vec<serde_json::Value> = pushes
            .iter()
            .map(|push| serde_json::from_slice::<serde_json::Value>(push).unwrap())
            .map(|value| value["push"]["presence"].clone())
            .collect();
        assert_eq!(bodies.len(), 3);
        assert_eq!(bodies[0]["joins"][0]["client"], "j");
        assert_eq!(bodies[1]["states"][0]["state"], "x");
        assert_eq!(
            bodies[2]["states"][0],
            serde_json::json!({"user": "user-s2", "client": "s2", "state": null})
        );
    }
}
