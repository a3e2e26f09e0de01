//! `ping`: the server's clock, for latency and clock-offset estimates.

use herald_protocol::Codec;
use herald_protocol::reply::PingResult;

use crate::clock::unix_millis;
use crate::session::Answer;

pub fn apply(codec: Codec, id: u64) -> Answer {
    Answer::Result(codec.result(id, &PingResult { ts: unix_millis() }))
}
