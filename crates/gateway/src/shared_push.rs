//! A push for many connections, encoded at most once per codec in use (DESIGN.md: fan-out
//! encodes once per codec, not once per subscriber). The JSON form is made at once: it is
//! the common codec, and presence events cross nodes in it. The binary form is made by the
//! first subscriber on `herald.v1.proto` that needs it (a `OnceLock`, so every later one
//! takes the same bytes with one atomic load), from the publication itself or, for a push
//! that reached this node as JSON, by transcoding it. The Socket.IO form is made the same
//! way.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use herald_protocol::{Codec, Publication, binary, reply, socketio};

use crate::wire::Shared;

/// Cheap to clone: the encodings are shared.
#[derive(Clone)]
pub struct SharedPush(Arc<Encodings>);

struct Encodings {
    json: Shared,
    proto: OnceLock<Shared>,
    socketio: OnceLock<Shared>,
    /// Encodes the binary and Socket.IO forms straight from the publication rather than from its JSON.
    publication: Option<Publication>,
}

impl SharedPush {
    /// `{"push":{"channel":C,"pub":{...}}}` and its binary form.
    pub fn publication(publication: &Publication) -> Self {
        Self::new(
            reply::encode_publication(publication),
            Some(publication.clone()),
        )
    }

    /// A push already encoded as JSON (a presence event, a server-side unsubscribe).
    pub fn json(push: Bytes) -> Self {
        Self::new(push, None)
    }

    fn new(json: Bytes, publication: Option<Publication>) -> Self {
        Self(Arc::new(Encodings {
            json: Shared::new(json, false),
            proto: OnceLock::new(),
            socketio: OnceLock::new(),
            publication,
        }))
    }

    /// The push in `codec`, encoding it on first use.
    pub fn bytes(&self, codec: Codec) -> Bytes {
        self.shared(codec).message().clone()
    }

    /// The push in `codec` with its WebSocket frame, for direct writes; encoded on first use.
    pub fn shared(&self, codec: Codec) -> &Shared {
        let encodings = &*self.0;
        match codec {
            Codec::Json => &encodings.json,
            Codec::Proto => encodings.proto.get_or_init(|| {
                let message = encodings.encode(binary::encode_publication, binary::transcode_push);
                Shared::new(message, true)
            }),
            Codec::SocketIo => encodings.socketio.get_or_init(|| {
                let message =
                    encodings.encode(socketio::encode_publication, socketio::transcode_push);
                Shared::new(message, false)
            }),
        }
    }
}

impl Encodings {
    /// Another codec's form: from the publication, or transcoded from the JSON.
    fn encode(
        &self,
        publication: fn(&Publication) -> Bytes,
        transcode: fn(&[u8]) -> Result<Bytes, String>,
    ) -> Bytes {
        match &self.publication {
            Some(p) => publication(p),
            None => transcode(self.json.message()).unwrap_or_else(|error| {
                // Only pushes this node encoded or checked get here; an empty message is
                // never sent.
                tracing::error!(%error, "a push could not be transcoded");
                Bytes::new()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_protocol::ChannelName;
    use serde_json::value::RawValue;

    use super::*;

    #[test]
    fn encodes_each_codec_once_and_shares_the_bytes() {
        let publication = Publication {
            channel: ChannelName::parse("public:a").unwrap(),
            event: Arc::from("e"),
            data: Arc::from(RawValue::from_string("{}".into()).unwrap()),
            offset: 0,
            epoch: Arc::from(""),
            ts: 1,
            from: None,
        };
        let push = SharedPush::publication(&publication);
        let copy = push.clone();
        let first = push.bytes(Codec::Proto);
        assert_eq!(first.as_ptr(), copy.bytes(Codec::Proto).as_ptr());
        assert_eq!(first, binary::encode_publication(&publication));
        assert_eq!(
            push.bytes(Codec::Json).as_ptr(),
            copy.bytes(Codec::Json).as_ptr()
        );
        let unsubscribe = reply::encode_unsubscribe("public:a", 3000, "resubscribe");
        assert_eq!(
            SharedPush::json(unsubscribe).bytes(Codec::Proto),
            binary::encode_unsubscribe("public:a", 3000, "resubscribe")
        );
        assert_eq!(
            push.bytes(Codec::SocketIo),
            socketio::encode_publication(&publication)
        );
        assert_eq!(
            push.bytes(Codec::SocketIo).as_ptr(),
            copy.bytes(Codec::SocketIo).as_ptr()
        );
    }
}
