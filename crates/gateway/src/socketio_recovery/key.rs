//! The Socket.IO `pid`: a random nonce and an HMAC tag binding it to the user, so a pid
//! proves which user's session it names without the server keeping sessions, and every
//! node holding the same key accepts every other node's pids. Also the grant an offset
//! carries for a channel subscribed with a subscription token, which the reconnect does not
//! carry again: the token's `exp` and a tag binding it to the user and the channel.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use constant_time_eq::constant_time_eq;
use ring::hmac;

use crate::random::random_token;

/// Bytes of the HMAC kept in a pid: 96 bits, beyond guessing.
const TAG_BYTES: usize = 12;

pub struct RecoveryKey(hmac::Key);

impl RecoveryKey {
    /// The key derived from a secret every node of the cluster shares.
    pub fn derive(secret: &[u8]) -> Self {
        let derivation = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let key = hmac::sign(&derivation, b"herald socket.io session ids v1");
        Self(hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()))
    }

    /// A new pid for `user`.
    pub fn issue(&self, user: &str) -> String {
        let nonce = random_token(12);
        let tag = self.tag(user, &nonce);
        format!("{nonce}.{tag}")
    }

    /// Whether `pid` was issued to `user` by a node with this key.
    pub fn verify(&self, pid: &str, user: &str) -> bool {
        pid.split_once('.').is_some_and(|(nonce, tag)| {
            constant_time_eq(self.tag(user, nonce).as_bytes(), tag.as_bytes())
        })
    }

    /// The grant of `channel` to `user` until `expires` (Unix seconds): `<expires>.<tag>`.
    pub fn grant(&self, user: &str, channel: &str, expires: i64) -> String {
        let expires = expires.to_string();
        let parts: [&[u8]; 4] = [
            b"grant",
            user.as_bytes(),
            channel.as_bytes(),
            expires.as_bytes(),
        ];
        format!("{expires}.{}", self.tag_of(&parts))
    }

    /// The expiry of a grant this key made for `user` and `channel`.
    pub fn verify_grant(&self, grant: &str, user: &str, channel: &str) -> Option<i64> {
        let (expires, tag) = grant.split_once('.')?;
        let parts: [&[u8]; 4] = [
            b"grant",
            user.as_bytes(),
            channel.as_bytes(),
            expires.as_bytes(),
        ];
        constant_time_eq(self.tag_of(&parts).as_bytes(), tag.as_bytes())
            .then(|| expires.parse().ok())
            .flatten()
    }

    fn tag(&self, user: &str, nonce: &str) -> String {
        self.tag_of(&[b"pid", user.as_bytes(), nonce.as_bytes()])
    }

    fn tag_of(&self, parts: &[&[u8]]) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        // Length-prefixed: no other parts sign the same bytes.
        for part in parts {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        URL_SAFE_NO_PAD.encode(&context.sign().as_ref()[..TAG_BYTES])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_names_its_user_under_its_key_only() {
        let key = RecoveryKey::derive(b"shared secret");
        let pid = key.issue("alice");
        assert!(key.verify(&pid, "alice"));
        assert!(RecoveryKey::derive(b"shared secret").verify(&pid, "alice"));
        assert!(!key.verify(&pid, "bob"));
        assert!(!RecoveryKey::derive(b"another secret").verify(&pid, "alice"));
        assert_ne!(key.issue("alice"), pid);
        let (nonce, _) = pid.split_once('.').unwrap();
        for forged in [
            "",
            "x",
            &format!("{nonce}."),
            &format!("{nonce}.AAAAAAAAAAAAAAAA"),
        ] {
            assert!(!key.verify(forged, "alice"), "{forged}");
        }
    }

    #[test]
    fn a_grant_names_its_user_channel_and_expiry() {
        let key = RecoveryKey::derive(b"shared secret");
        let grant = key.grant("alice", "org:a:ch:x", 1_800_000_000);
        assert_eq!(
            key.verify_grant(&grant, "alice", "org:a:ch:x"),
            Some(1_800_000_000)
        );
        assert_eq!(key.verify_grant(&grant, "bob", "org:a:ch:x"), None);
        assert_eq!(key.verify_grant(&grant, "alice", "org:a:ch:y"), None);
        let (_, tag) = grant.split_once('.').unwrap();
        let later = format!("1900000000.{tag}");
        assert_eq!(key.verify_grant(&later, "alice", "org:a:ch:x"), None);
        // A pid's tag is no grant.
        let pid = key.issue("alice");
        assert_eq!(key.verify_grant(&pid, "alice", "org:a:ch:x"), None);
    }
}
