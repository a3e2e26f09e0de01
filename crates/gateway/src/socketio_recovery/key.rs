//! The Socket.IO `pid`: a random nonce and an HMAC tag binding it to the user, so a pid
//! proves which user's session it names without the server keeping sessions, and every
//! node holding the same key accepts every other node's pids.

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

    fn tag(&self, user: &str, nonce: &str) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        // Length-prefixed: no other (user, nonce) pair signs the same bytes.
        context.update(&(user.len() as u64).to_be_bytes());
        context.update(user.as_bytes());
        context.update(nonce.as_bytes());
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
}
