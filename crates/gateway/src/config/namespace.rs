//! Namespace rules: who may subscribe to a channel, and what a channel keeps.
//!
//! The first segment of a channel name is its namespace. Each namespace has an access rule
//! and channel options; `root` options, when set, apply to the two-segment channel
//! `<namespace>:<id>` itself (the `org:<org>` channel differs from the channels inside it).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who may subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Any authenticated connection.
    Public,
    /// `<ns>:<user_id>[:...]`: only the user whose token `sub` is the second segment.
    User,
    /// `<ns>:<org>`: members of the org (token claim `orgs`); `<ns>:<org>:...`: members
    /// whose `channels` claim matches, or any user with a subscription token.
    Org,
    /// `<ns>:<org>[:...]`: members of the org named by the second segment.
    OrgMember,
    /// Connections whose `channels` claim matches the channel.
    Claim,
    /// Only with a subscription token for the channel.
    Token,
}

/// What a channel keeps and allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelOptions {
    /// Publications kept for recovery and `history`; 0 = no history, no offsets.
    pub history_size: usize,
    /// How long history is kept after the last publish, seconds.
    pub history_ttl: u64,
    /// Whether clients may publish (server-stamped with the sender).
    pub client_publish: bool,
    /// Whether clients may recover missed publications on resubscribe.
    pub recover: bool,
    /// Whether subscribing joins the channel's presence (`presence` lists the members).
    pub presence: bool,
    /// Whether joins and leaves are pushed to subscribers (with `presence`).
    pub join_leave: bool,
    /// Whether subscribers may send `typing`.
    pub typing: bool,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            history_size: 0,
            history_ttl: 300,
            client_publish: false,
            recover: true,
            presence: false,
            join_leave: false,
            typing: false,
        }
    }
}

impl ChannelOptions {
    pub fn has_history(&self) -> bool {
        self.history_size > 0
    }

    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_ttl)
    }

    fn with_history(size: usize, ttl: u64) -> Self {
        Self {
            history_size: size,
            history_ttl: ttl,
            ..Self::default()
        }
    }

    /// Presence, join/leave pushes and typing: a conversation.
    fn conversation(self) -> Self {
        Self {
            presence: true,
            join_leave: true,
            typing: true,
            ..self
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceRule {
    pub access: Access,
    #[serde(flatten)]
    pub options: ChannelOptions,
    /// Options of the two-segment channel `<ns>:<id>`, when they differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<ChannelOptions>,
}

impl NamespaceRule {
    /// The options that apply to a channel with this many segments.
    pub fn options_for(&self, segments: usize) -> &ChannelOptions {
        match &self.root {
            Some(root) if segments == 2 => root,
            _ => &self.options,
        }
    }
}

/// Namespace name → rule.
pub type Namespaces = BTreeMap<String, NamespaceRule>;

/// The defaults of DESIGN.md's namespace table. Rules in the config file replace these by
/// name and add new namespaces.
pub fn default_namespaces() -> Namespaces {
    let mut namespaces = Namespaces::new();
    namespaces.insert(
        "public".into(),
        NamespaceRule {
            access: Access::Public,
            options: ChannelOptions::default(),
            root: None,
        },
    );
    namespaces.insert(
        "user".into(),
        NamespaceRule {
            access: Access::User,
            options: ChannelOptions::with_history(100, 120),
            root: None,
        },
    );
    namespaces.insert(
        "org".into(),
        NamespaceRule {
            access: Access::Org,
            options: ChannelOptions::with_history(100, 300).conversation(),
            // The org channel carries status pushes; its presence lists who has it open,
            // without a join/leave push for every tab in the org.
            root: Some(ChannelOptions {
                presence: true,
                ..ChannelOptions::default()
            }),
        },
    );
    namespaces
}
