//! `wire`: the bytes a delivery puts on the wire in each codec, what encoding costs, and
//! what permessage-deflate would save, without a gateway.
//!
//! The messages are `fanout`'s (the same payload generator, event and channel, numbered as
//! on a channel with history) and a presence join, encoded by `herald_protocol` as the
//! gateway encodes them. Compression is permessage-deflate's (RFC 7692: raw DEFLATE, a sync
//! flush per message, its 4 trailing bytes dropped) in its two modes:
//! - without context takeover, each message compressed alone: the only mode in which one
//!   compressed frame could still be shared by every subscriber of a publication;
//! - with context takeover, one compressor per connection: the better ratio, but a
//!   compression (and a compressor's memory) per subscriber, since each stream differs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use flate2::{Compress, Compression, FlushCompress};
use herald_protocol::reply::{ChannelEvent, PresenceMember};
use herald_protocol::{ChannelName, Codec, Publication};
use serde_json::value::RawValue;

use crate::delivery::{EVENT, payload};
use crate::report::Report;

#[derive(Debug, clap::Args)]
pub struct WireArgs {
    /// Publications to encode (and compress) in each codec
    #[arg(long, default_value_t = 1000)]
    publications: usize,
    /// Size of each publication's JSON data, bytes (as `fanout --payload-bytes`)
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// The channel
    #[arg(long, default_value = "bench:fanout")]
    channel: String,
    /// DEFLATE level, 0-9
    #[arg(long, default_value_t = 6)]
    level: u32,
}

/// The average over the messages of one codec.
struct Sizes {
    message: f64,
    frame: f64,
    encode: Duration,
    alone: f64,
    alone_time: Duration,
    stream: f64,
    stream_time: Duration,
}

pub fn run(args: WireArgs) -> Result<()> {
    if args.publications == 0 || args.level > 9 {
        bail!("--publications must be at least 1 and --level 0-9");
    }
    let channel = ChannelName::parse(&args.channel)
        .map_err(|e| anyhow::anyhow!("bad channel {:?}: {e}", args.channel))?;
    let publications: Vec<Publication> = (0..args.publications)
        .map(|seq| {
            Ok(Publication {
                channel: channel.clone(),
                event: Arc::from(EVENT),
                data: Arc::from(RawValue::from_string(payload(seq, args.payload_bytes))?),
                offset: seq as u64 + 1,
                epoch: Arc::from("1764590000000.k3x9"),
                ts: 1_764_590_000_000 + seq as i64,
                from: None,
            })
        })
        .collect::<Result<_>>()?;
    let join = ChannelEvent::Join(PresenceMember {
        user: "user-1234".into(),
        client: "kq3Zt9b2XwLm8Rp4".into(),
        info: Some(Arc::from(RawValue::from_string(
            r#"{"name":"Ada Lovelace"}"#.into(),
        )?)),
        status: None,
        joined_at: 1_764_590_000_000,
        state: None,
    });

    let mut report = Report::new(format!(
        "wire: {} publications of {} bytes on {}, DEFLATE level {}",
        args.publications, args.payload_bytes, args.channel, args.level
    ));
    let mut results = Vec::new();
    for codec in [Codec::Json, Codec::Proto] {
        let name = codec.subprotocol().expect("a /ws codec");
        let sizes = measure(&args, codec, &publications);
        let join_bytes = codec.event(channel.as_str(), &join).len();
        report.line(
            format!("{name}: publication push"),
            format!(
                "{:.1} bytes, {:.1} in its WebSocket frame; encoded in {:.2} us (once per \
                 publication)",
                sizes.message,
                sizes.frame,
                micros(sizes.encode)
            ),
        );
        report.line(
            format!("{name}: presence join push"),
            format!("{join_bytes} bytes"),
        );
        report.line(
            format!("{name}: deflate, each message alone"),
            format!(
                "{:.1} bytes ({:.0}% of the frame), {:.2} us a message (once per publication)",
                sizes.alone,
                100.0 * sizes.alone / sizes.frame,
                micros(sizes.alone_time)
            ),
        );
        report.line(
            format!("{name}: deflate, context takeover"),
            format!(
                "{:.1} bytes ({:.0}% of the frame), {:.2} us a message (once per delivery)",
                sizes.stream,
                100.0 * sizes.stream / sizes.frame,
                micros(sizes.stream_time)
            ),
        );
        results.push(sizes);
    }
    let (json, proto) = (&results[0], &results[1]);
    report.line(
        "proto frame / json frame",
        format!("{:.2}", proto.frame / json.frame),
    );
    report.print();
    println!(
        "RESULT scenario=wire payload_bytes={} json_frame_bytes={:.1} proto_frame_bytes={:.1} \
         json_encode_us={:.2} proto_encode_us={:.2} json_deflate_alone_bytes={:.1} \
         json_deflate_stream_bytes={:.1} proto_deflate_alone_bytes={:.1} \
         proto_deflate_stream_bytes={:.1} json_deflate_stream_us={:.2}",
        args.payload_bytes,
        json.frame,
        proto.frame,
        micros(json.encode),
        micros(proto.encode),
        json.alone,
        json.stream,
        proto.alone,
        proto.stream,
        micros(json.stream_time),
    );
    Ok(())
}

fn measure(args: &WireArgs, codec: Codec, publications: &[Publication]) -> Sizes {
    let n = publications.len() as f64;
    let started = Instant::now();
    let messages: Vec<_> = publications.iter().map(|p| codec.publication(p)).collect();
    let encode = started.elapsed().div_f64(n);
    let message: usize = messages.iter().map(|m| m.len()).sum();
    let frame: usize = messages
        .iter()
        .map(|m| m.len() + header_bytes(m.len()))
        .sum();

    let level = Compression::new(args.level);
    let mut out = Vec::new();
    let started = Instant::now();
    let mut alone = 0;
    let mut compressor = Compress::new(level, false);
    for message in &messages {
        // No context takeover: every message starts from an empty window.
        compressor.reset();
        alone += deflate(&mut compressor, message, &mut out);
    }
    let alone_time = started.elapsed().div_f64(n);
    let started = Instant::now();
    let mut compressor = Compress::new(level, false);
    let stream: usize = messages
        .iter()
        .map(|message| deflate(&mut compressor, message, &mut out))
        .sum();
    let stream_time = started.elapsed().div_f64(n);
    Sizes {
        message: message as f64 / n,
        frame: frame as f64 / n,
        encode,
        alone: alone as f64 / n,
        alone_time,
        stream: stream as f64 / n,
        stream_time,
    }
}

/// One message compressed as permessage-deflate sends it, framed: its size in bytes.
fn deflate(compressor: &mut Compress, message: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    out.reserve(message.len() + 64);
    let before = compressor.total_out();
    compressor
        .compress_vec(message, out, FlushCompress::Sync)
        .expect("deflate into a buffer with room");
    // RFC 7692 7.2.1: the 0x00 0x00 0xff 0xff that ends a sync flush is not sent.
    let compressed = (compressor.total_out() - before) as usize - 4;
    compressed + header_bytes(compressed)
}

/// A server frame's header (unmasked): 2 bytes up to 125 of payload, 4 up to 64 KiB.
fn header_bytes(payload: usize) -> usize {
    match payload {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_frames_compress_and_drop_the_flush_marker() {
        let mut compressor = Compress::new(Compression::default(), false);
        let mut out = Vec::new();
        let message = br#"{"push":{"channel":"a:b","pub":{"event":"e","data":{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}"#;
        let first = deflate(&mut compressor, message, &mut out);
        assert!(first < message.len() + 2);
        let second = deflate(&mut compressor, message, &mut out);
        assert!(second < first, "the second copy refers back to the first");
        assert_eq!((header_bytes(125), header_bytes(126)), (2, 4));
    }
}
