//! `ping`: the server's clock, for latency and clock-offset estimates.

use herald_protocol::reply::{PingResult, encode_result};

use crate::clock::unix_millis;
use crate::session::Answer;

pub fn apply(id: u64) -> Answer {
    Answer::Result(encode_result(id, &PingResult { ts: unix_millis() }))
}
