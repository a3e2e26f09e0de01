//! The lean client's Socket.IO: Engine.IO v4 over a WebSocket at `/socket.io/`, one packet a
//! text frame. What it sends (CONNECT with the token, `herald:subscribe` with an ack id, pongs)
//! and what it reads of the gateway's packets: replies, pings and publication events, whose
//! last argument is the connection's offset (`h1;<channel>,<epoch>,<offset>`, one channel a
//! load-test connection), from which the publication's channel, epoch and offset are read.

use herald_protocol::reply::ReceivedPublication;
use herald_protocol::socketio::{CONNECT_ID, SUBSCRIBE_EVENT};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::conn::OpenError;

/// The Engine.IO pong, the answer to the server's ping `2`.
pub const PONG: &str = "3";

/// The WebSocket transport's URL on the host of `ws_url` (whose path, `/ws`, it replaces).
pub fn url(ws_url: &str) -> Result<String, OpenError> {
    let uri: Uri = ws_url.parse()?;
    let scheme = uri.scheme_str().unwrap_or("ws");
    let host = uri.authority().ok_or("no host in the WebSocket URL")?;
    Ok(format!(
        "{scheme}://{host}/socket.io/?EIO=4&transport=websocket"
    ))
}

/// The packet of a lean-client command (`connect` or `subscribe`, with its JSON params), and
/// the id of the [`Packet::Reply`] that answers it.
pub fn command(
    id: u64,
    method: &str,
    params: serde_json::Value,
) -> Result<(String, u64), OpenError> {
    let serde_json::Value::Object(mut params) = params else {
        return Err("command params are an object".into());
    };
    match method {
        "connect" => Ok((
            format!("40{}", serde_json::Value::Object(params)),
            CONNECT_ID,
        )),
        "subscribe" => {
            let channel = params
                .remove("channel")
                .ok_or("subscribe names a channel")?;
            let mut args = vec![SUBSCRIBE_EVENT.into(), channel];
            // The options (`recover`), when there are any.
            if !params.is_empty() {
                args.push(serde_json::Value::Object(params));
            }
            Ok((format!("42{id}{}", serde_json::Value::Array(args)), id))
        }
        other => Err(format!("the lean client sends no {other} over Socket.IO").into()),
    }
}

/// A server packet, as far as the load generator reads it.
#[derive(Debug)]
pub enum Packet {
    /// Engine.IO `open`, the first frame.
    Open,
    /// Engine.IO `ping`: answer with [`PONG`].
    Ping,
    /// The CONNECT reply (id [`CONNECT_ID`]) or a CONNECT_ERROR, or an ack (the ack id): its
    /// argument, or the error.
    Reply {
        id: u64,
        result: Result<Box<RawValue>, String>,
    },
    /// An event that is not a reserved `herald:*` one: a publication, with the channel its
    /// offset names.
    Publication {
        channel: Option<String>,
        publication: ReceivedPublication,
    },
    /// Reserved events (`herald:offset`…), a noop, or a close announced before the close frame.
    Other,
}

/// Reads one text frame of the gateway's.
pub fn parse(text: &str) -> Result<Packet, OpenError> {
    if text == "2" {
        return Ok(Packet::Ping);
    }
    if text.starts_with('0') {
        return Ok(Packet::Open);
    }
    let Some(packet) = text.strip_prefix('4') else {
        // Engine.IO close `1` (the close frame follows) and noop `6`.
        return Ok(Packet::Other);
    };
    let (kind, body) = packet.split_at_checked(1).ok_or("empty Socket.IO packet")?;
    match kind {
        "0" => Ok(Packet::Reply {
            id: CONNECT_ID,
            result: Ok(RawValue::from_string(body.to_owned())?),
        }),
        "4" => {
            #[derive(Deserialize)]
            struct Refused {
                message: String,
                #[serde(default)]
                data: Option<Code>,
            }
            #[derive(Deserialize)]
            struct Code {
                code: u32,
            }
            let refused: Refused = serde_json::from_str(body)?;
            let code = refused.data.map_or(0, |data| data.code);
            Ok(Packet::Reply {
                id: CONNECT_ID,
                result: Err(format!("connect error {code}: {}", refused.message)),
            })
        }
        "3" => ack(body),
        "2" => event(body),
        // DISCONNECT `41`: the close frame follows.
        _ => Ok(Packet::Other),
    }
}

/// `<ack id>[argument]`: `{"error":{code,message}}` is an error, anything else the result.
fn ack(body: &str) -> Result<Packet, OpenError> {
    #[derive(Deserialize)]
    struct Failed {
        error: ErrorBody,
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        code: u32,
        message: String,
    }
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    let (id, arguments) = body.split_at(digits);
    let mut arguments: Vec<Box<RawValue>> = serde_json::from_str(arguments)?;
    if arguments.is_empty() {
        return Err("an ack without an argument".into());
    }
    let argument = arguments.swap_remove(0);
    let result = match serde_json::from_str::<Failed>(argument.get()) {
        Ok(Failed { error }) => Err(format!("server error {}: {}", error.code, error.message)),
        Err(_) => Ok(argument),
    };
    Ok(Packet::Reply {
        id: id.parse()?,
        result,
    })
}

/// `[name, data, …, offset]`.
fn event(body: &str) -> Result<Packet, OpenError> {
    let mut arguments: Vec<Box<RawValue>> = serde_json::from_str(body)?;
    let name: String = match arguments.first() {
        Some(name) => serde_json::from_str(name.get())?,
        None => return Err("an event without a name".into()),
    };
    if name.starts_with("herald:") {
        return Ok(Packet::Other);
    }
    let offset = match arguments.len() {
        3.. => arguments
            .pop()
            .and_then(|offset| serde_json::from_str::<String>(offset.get()).ok()),
        _ => None,
    };
    let data = match arguments.len() {
        2.. => arguments.swap_remove(1),
        _ => RawValue::from_string("null".into())?,
    };
    let (channel, epoch, offset) = offset
        .as_deref()
        .and_then(position)
        .map_or((None, String::new(), 0), |(channel, epoch, offset)| {
            (Some(channel.to_owned()), epoch.to_owned(), offset)
        });
    Ok(Packet::Publication {
        channel,
        publication: ReceivedPublication {
            event: name,
            data,
            offset,
            epoch,
            // Socket.IO events carry no server timestamp: latency is publish call -> receipt.
            ts: 0,
            from: None,
        },
    })
}

/// The one channel of a connection's offset `h1;<channel>,<epoch>,<offset>`; `None` for an
/// offset of several channels, which does not say which one the event is of.
fn position(offset: &str) -> Option<(&str, &str, u64)> {
    let entry = offset.strip_prefix("h1;")?;
    if entry.contains(';') {
        return None;
    }
    let mut fields = entry.split(',');
    let (Some(channel), Some(epoch), Some(offset), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    Some((channel, epoch, offset.parse().ok()?))
}

/// A connection's offset holding one channel at `epoch` and `offset`, as the gateway writes
/// it (an empty epoch and 0 on a channel without history).
pub fn render_offset(channel: &str, epoch: &str, offset: u64) -> String {
    format!("h1;{channel},{epoch},{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_connect_and_subscribe_with_an_ack_id() {
        let (connect, id) = command(1, "connect", serde_json::json!({ "token": "t0k" })).unwrap();
        assert_eq!((connect.as_str(), id), (r#"40{"token":"t0k"}"#, CONNECT_ID));
        let (subscribe, id) =
            command(2, "subscribe", serde_json::json!({ "channel": "bench:a" })).unwrap();
        assert_eq!(
            (subscribe.as_str(), id),
            (r#"422["herald:subscribe","bench:a"]"#, 2)
        );
        let recover =
            serde_json::json!({ "channel": "bench:a", "recover": { "offset": 3, "epoch": "e" } });
        let (subscribe, _) = command(2, "subscribe", recover).unwrap();
        assert_eq!(
            subscribe,
            r#"422["herald:subscribe","bench:a",{"recover":{"epoch":"e","offset":3}}]"#
        );
        assert_eq!(
            url("ws://127.0.0.1:8080/ws").unwrap(),
            "ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket"
        );
    }

    #[test]
    fn reads_replies_pings_and_publications() {
        assert!(matches!(parse("2").unwrap(), Packet::Ping));
        assert!(matches!(
            parse(r#"0{"sid":"s","upgrades":[],"pingInterval":25000}"#).unwrap(),
            Packet::Open
        ));
        let Packet::Reply { id, result } = parse(r#"40{"sid":"c1","pid":"p1"}"#).unwrap() else {
            panic!("not a reply")
        };
        assert_eq!(
            (id, result.unwrap().get()),
            (CONNECT_ID, r#"{"sid":"c1","pid":"p1"}"#)
        );
        let Packet::Reply { result, .. } =
            parse(r#"44{"message":"token expired","data":{"code":109}}"#).unwrap()
        else {
            panic!("not a reply")
        };
        assert_eq!(result.unwrap_err(), "connect error 109: token expired");
        let Packet::Reply { id, result } =
            parse(r#"432[{"ok":true,"offset":0,"epoch":"e"}]"#).unwrap()
        else {
            panic!("not a reply")
        };
        assert_eq!(
            (id, result.unwrap().get()),
            (2, r#"{"ok":true,"offset":0,"epoch":"e"}"#)
        );
        let Packet::Reply { result, .. } =
            parse(r#"432[{"error":{"code":103,"message":"permission denied"}}]"#).unwrap()
        else {
            panic!("not a reply")
        };
        assert_eq!(result.unwrap_err(), "server error 103: permission denied");

        let Packet::Publication {
            channel,
            publication,
        } = parse(r#"42["loadtest",{"seq":7},"h1;bench:a,1764.r.x,8"]"#).unwrap()
        else {
            panic!("not a publication")
        };
        assert_eq!(channel.as_deref(), Some("bench:a"));
        assert_eq!(
            (&*publication.event, publication.data.get()),
            ("loadtest", r#"{"seq":7}"#)
        );
        assert_eq!((&*publication.epoch, publication.offset), ("1764.r.x", 8));
        // Two channels: which one the event is of is not known.
        let Packet::Publication {
            channel,
            publication,
        } = parse(r#"42["e",1,"h1;a,x,1;b,y,2"]"#).unwrap()
        else {
            panic!("not a publication")
        };
        assert_eq!((channel, publication.offset), (None, 0));
        assert!(matches!(
            parse(r#"42["herald:offset","h1;bench:a,e,0"]"#).unwrap(),
            Packet::Other
        ));
        for other in ["6", "1", "41"] {
            assert!(matches!(parse(other).unwrap(), Packet::Other), "{other}");
        }
    }
}
