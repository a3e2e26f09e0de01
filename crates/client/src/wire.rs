//! Encoding commands and decoding server frames, in either codec; no I/O.

use herald_protocol::command::parse_command;
use herald_protocol::reply::{Push, ServerMessage};
use herald_protocol::{Codec, binary};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use crate::error::ClientError;

/// One decoded server message.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// The reply to command `id`: its raw result or the error.
    Reply(u64, Result<Box<RawValue>, ClientError>),
    Push(Box<Push>),
}

/// `{"id":N,"<method>":<params>}`.
pub(crate) fn encode_command(id: u64, method: &str, params: &Value) -> String {
    // `Value`'s `Display` writes compact JSON and escapes the method name.
    format!("{{\"id\":{id},{}:{params}}}", Value::from(method))
}

/// A command as one WebSocket message of `codec`. The protobuf form is made from the
/// command parsed as the server parses JSON, so both codecs take the same methods and
/// params; one that does not parse cannot be encoded.
pub(crate) fn encode_message(
    codec: Codec,
    id: u64,
    method: &str,
    params: &Value,
) -> Result<Message, ClientError> {
    let json = encode_command(id, method, params);
    match codec {
        Codec::Json => Ok(Message::text(json)),
        Codec::Proto => match parse_command(&json) {
            Ok(Ok(command)) => Ok(Message::binary(binary::encode_command(command))),
            Ok(Err(error)) => Err(ClientError::Encode(error.message)),
            Err(error) => Err(ClientError::Encode(error.to_string())),
        },
        // Never negotiated: this client speaks Herald's own protocol.
        Codec::SocketIo => Err(ClientError::Encode(
            "the client does not speak Socket.IO".into(),
        )),
    }
}

/// Decodes a text frame: one message per non-empty line. A line that does not decode
/// yields an error and does not stop the others.
pub(crate) fn decode_frame(text: &str) -> impl Iterator<Item = Result<Incoming, String>> + '_ {
    text.split('\n')
        .filter(|line| !line.trim().is_empty())
        .map(decode_line)
}

/// Decodes a binary frame (`herald.v1.proto`): length-delimited messages. A message that
/// does not decode yields an error and ends the frame.
pub(crate) fn decode_binary_frame(frame: &[u8]) -> impl Iterator<Item = Result<Incoming, String>> {
    binary::decode_frame(frame)
        .into_iter()
        .map(|message| message.and_then(incoming))
}

fn decode_line(line: &str) -> Result<Incoming, String> {
    incoming(serde_json::from_str(line).map_err(|e| e.to_string())?)
}

fn incoming(message: ServerMessage) -> Result<Incoming, String> {
    if let Some(push) = message.push {
        return Ok(Incoming::Push(Box::new(push)));
    }
    let Some(id) = message.id else {
        return Err("message has neither id nor push".to_owned());
    };
    let reply = match (message.result, message.error) {
        (_, Some(error)) => Err(ClientError::Server(error)),
        (Some(result), None) => Ok(result),
        (None, None) => Err(ClientError::Decode(
            "reply has neither result nor error".to_owned(),
        )),
    };
    Ok(Incoming::Reply(id, reply))
}

/// A JSON object of the fields that are present.
pub(crate) fn object<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_multi_message_frame() {
        let frame = concat!(
            r#"{"id":1,"result":{"ts":7}}"#,
            "\n",
            r#"{"push":{"channel":"a:b","pub":{"event":"e","data":{"x":[1,2]},"offset":3,"epoch":"ep","ts":9}}}"#,
            "\n\n",
            r#"{"id":2,"error":{"code":103,"message":"permission denied","temporary":false}}"#,
            "\nnot json\n",
            r#"{"push":{"disconnect":{"code":4200,"reason":"server shutdown","reconnect":true}}}"#,
            "\n",
        );
        let messages: Vec<_> = decode_frame(frame).collect();
        assert_eq!(messages.len(), 5);
        match &messages[0] {
            Ok(Incoming::Reply(1, Ok(raw))) => assert_eq!(raw.get(), r#"{"ts":7}"#),
            other => panic!("unexpected {other:?}"),
        }
        match &messages[1] {
            Ok(Incoming::Push(push)) => {
                assert_eq!(push.channel.as_deref(), Some("a:b"));
                let publication = push.publication.as_ref().unwrap();
                assert_eq!(
                    (publication.event.as_str(), publication.data.get()),
                    ("e", r#"{"x":[1,2]}"#)
                );
                assert_eq!(
                    (
                        publication.offset,
                        publication.epoch.as_str(),
                        publication.ts
                    ),
                    (3, "ep", 9)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        match &messages[2] {
            Ok(Incoming::Reply(2, Err(error))) => {
                assert_eq!(error.server_code(), Some(103));
                assert_eq!(error.to_string(), "server error 103: permission denied");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(messages[3].is_err());
        match &messages[4] {
            Ok(Incoming::Push(push)) => {
                assert_eq!(push.disconnect.as_ref().map(|d| d.code), Some(4200))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn encodes_and_decodes_the_binary_codec() {
        let params = object([("channel", Some("a:b".into())), ("limit", Some(5.into()))]);
        let Message::Binary(frame) = encode_message(Codec::Proto, 7, "history", &params).unwrap()
        else {
            panic!("a binary message")
        };
        let command = binary::parse_frame(&frame).unwrap().remove(0).unwrap();
        assert_eq!(command.id, 7);
        assert!(matches!(
            command.method,
            herald_protocol::Method::History(ref h) if h.channel == "a:b" && h.limit == Some(5)
        ));
        assert!(matches!(
            encode_message(Codec::Proto, 8, "dance", &Value::Null),
            Err(ClientError::Encode(_))
        ));
        let reply = binary::encode_result(3, &herald_protocol::reply::PingResult { ts: 9 });
        let push = binary::encode_disconnect(herald_protocol::CloseCode::Shutdown, "bye");
        let messages: Vec<_> = decode_binary_frame(&[reply, push].concat()).collect();
        match &messages[..] {
            [Ok(Incoming::Reply(3, Ok(raw))), Ok(Incoming::Push(push))] => {
                assert_eq!(raw.get(), r#"{"ts":9}"#);
                assert_eq!(push.disconnect.as_ref().map(|d| d.code), Some(4200));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn encodes_commands() {
        let params = object([
            ("channel", Some("a:b".into())),
            ("token", None),
            ("limit", Some(5.into())),
        ]);
        assert_eq!(
            encode_command(7, "history", &params),
            r#"{"id":7,"history":{"channel":"a:b","limit":5}}"#
        );
        assert_eq!(
            encode_command(8, "we\"ird", &Value::Null),
            r#"{"id":8,"we\"ird":null}"#
        );
    }
}
