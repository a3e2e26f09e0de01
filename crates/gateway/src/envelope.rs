//! The binary form of a publication between nodes: the NATS message body and the Redis
//! history entry. It is `herald.v1.client.Publication` from `proto/herald/v1/client.proto`
//! (event, data, offset, epoch, ts, from), so services can publish ephemeral events straight
//! to NATS with any protobuf library. The channel is not in the envelope: it is the NATS
//! subject, or the Redis key.
//!
//! Whatever arrives from outside this node is checked like a gRPC publish (event name, JSON
//! data within the size and depth limits) before it reaches a client frame: `data` is
//! written into JSON frames verbatim, so unchecked bytes could corrupt every subscriber's
//! stream.

use std::sync::Arc;

use bytes::Bytes;
use herald_api::v1::client::Publication as WirePublication;
use herald_protocol::publication::{DataError, EventError, validate_data, validate_event};
use herald_protocol::{ChannelName, Publication};
use prost::Message;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a protobuf herald.v1.client.Publication: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("invalid event: {0}")]
    Event(#[from] EventError),
    #[error("invalid data: {0}")]
    Data(#[from] DataError),
}

/// Limits applied to envelopes from other nodes or services.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeLimits {
    pub max_data_bytes: usize,
    pub max_json_depth: usize,
}

/// Encodes a publication (without its channel).
pub fn encode(publication: &Publication) -> Bytes {
    let wire = WirePublication {
        event: publication.event.to_string(),
        data: publication.data.get().as_bytes().to_vec(),
        offset: publication.offset,
        epoch: publication.epoch.to_string(),
        ts: publication.ts,
        from: publication.from.as_deref().unwrap_or_default().to_owned(),
    };
    Bytes::from(wire.encode_to_vec())
}

/// Decodes and checks a publication on `channel`.
pub fn decode(
    channel: ChannelName,
    bytes: &[u8],
    limits: EnvelopeLimits,
) -> Result<Publication, EnvelopeError> {
    let wire = WirePublication::decode(bytes)?;
    validate_event(&wire.event)?;
    let data = validate_data(&wire.data, limits.max_data_bytes, limits.max_json_depth)?;
    Ok(Publication {
        channel,
        event: Arc::from(wire.event),
        data,
        offset: wire.offset,
        epoch: Arc::from(wire.epoch),
        ts: wire.ts,
        from: (!wire.from.is_empty()).then(|| Arc::from(wire.from)),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    const LIMITS: EnvelopeLimits = EnvelopeLimits {
        max_data_bytes: 1024,
        max_json_depth: 4,
    };

    fn channel() -> ChannelName {
        ChannelName::parse("org:acme:ch:general").unwrap()
    }

    #[test]
    fn round_trips_every_field() {
        let publication = Publication {
            channel: channel(),
            event: Arc::from("message.created"),
            data: Arc::from(RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap()),
            offset: 7,
            epoch: Arc::from("e1"),
            ts: 1_764_000_000_000,
            from: Some(Arc::from("alice")),
        };
        let decoded = decode(channel(), &encode(&publication), LIMITS).unwrap();
        assert_eq!(&*decoded.event, "message.created");
        assert_eq!(decoded.data.get(), r#"{"text":"hi"}"#);
        assert_eq!(
            (decoded.offset, &*decoded.epoch, decoded.ts),
            (7, "e1", 1_764_000_000_000)
        );
        assert_eq!(decoded.from.as_deref(), Some("alice"));
    }

    #[test]
    fn rejects_what_would_corrupt_a_client_frame() {
        let wire = |event: &str, data: &[u8]| {
            WirePublication {
                event: event.into(),
                data: data.to_vec(),
                ..Default::default()
            }
            .encode_to_vec()
        };
        assert!(matches!(
            decode(channel(), b"\xff\xff\xff", LIMITS),
            Err(EnvelopeError::Decode(_))
        ));
        assert!(matches!(
            decode(channel(), &wire("e", b"{\"a\":"), LIMITS),
            Err(EnvelopeError::Data(_))
        ));
        assert!(matches!(
            decode(channel(), &wire("e", b"[[[[[1]]]]]"), LIMITS),
            Err(EnvelopeError::Data(DataError::TooDeep(4)))
        ));
        assert!(matches!(
            decode(channel(), &wire("", b"1"), LIMITS),
            Err(EnvelopeError::Event(_))
        ));
        assert!(decode(channel(), &wire("typing", b"{}"), LIMITS).is_ok());
    }
}
