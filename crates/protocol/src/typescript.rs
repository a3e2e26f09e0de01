//! The TypeScript SDK's wire types (`sdk/typescript/src/gen/protocol/wire.ts`) are generated
//! from this crate's serde types with ts-rs, so the SDK cannot drift from the gateway: this
//! test generates them again and fails when the checked-in file differs. The derives exist
//! only under `cfg(test)`, so the gateway's build does not compile them.

use std::path::{Path, PathBuf};

use ts_rs::{Config, TS};

use crate::command::{
    ChannelRequest, ConnectRequest, HistoryRequest, PingRequest, PresenceRequest, PublishRequest,
    RefreshRequest, RpcRequest, SetPresenceStateRequest, SetStatusRequest, SubRefreshRequest,
    SubscribeRequest, TypingRequest, UnsubscribeRequest,
};
use crate::publication::Publication;
use crate::reply::{
    ConnectResult, HistoryResult, PingResult, PresenceResult, PresenceStatsResult, PublishResult,
    RefreshResult, RpcResult, ServerMessage,
};

/// Set to write the generated file over the checked-in one instead of comparing.
const UPDATE_ENV: &str = "HERALD_UPDATE_TS";

const REGENERATE: &str = "npm run generate:protocol (in sdk/typescript), or \
     HERALD_UPDATE_TS=1 cargo test -p herald-protocol --lib typescript";

const HEADER: &str = "// The JSON subprotocol's wire types, generated from crates/protocol: do not edit.\n\
// Regenerate with `npm run generate:protocol`; `cargo test -p herald-protocol` fails when stale.\n";

/// The checked-in file, from the repository's root.
const CHECKED_IN: &str = "sdk/typescript/src/gen/protocol/wire.ts";

fn checked_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(CHECKED_IN)
}

/// The file's text: every command's params, every result, and every server message, with
/// the types they use. ts-rs merges them into one file, sorted by name.
fn generate(dir: &Path) -> Result<String, ts_rs::ExportError> {
    // 64-bit offsets and timestamps stay below 2^53, and JSON.parse makes them numbers.
    let cfg = Config::new().with_large_int("number").with_out_dir(dir);
    ConnectRequest::export_all(&cfg)?;
    SubscribeRequest::export_all(&cfg)?;
    UnsubscribeRequest::export_all(&cfg)?;
    PublishRequest::export_all(&cfg)?;
    HistoryRequest::export_all(&cfg)?;
    RefreshRequest::export_all(&cfg)?;
    SubRefreshRequest::export_all(&cfg)?;
    PingRequest::export_all(&cfg)?;
    PresenceRequest::export_all(&cfg)?;
    ChannelRequest::export_all(&cfg)?;
    SetStatusRequest::export_all(&cfg)?;
    TypingRequest::export_all(&cfg)?;
    SetPresenceStateRequest::export_all(&cfg)?;
    RpcRequest::export_all(&cfg)?;
    ConnectResult::export_all(&cfg)?;
    HistoryResult::<Publication>::export_all(&cfg)?;
    PublishResult::export_all(&cfg)?;
    RefreshResult::export_all(&cfg)?;
    PingResult::export_all(&cfg)?;
    RpcResult::export_all(&cfg)?;
    PresenceResult::export_all(&cfg)?;
    PresenceStatsResult::export_all(&cfg)?;
    ServerMessage::export_all(&cfg)?;
    let text = std::fs::read_to_string(dir.join("wire.ts"))?;
    Ok(format!("{HEADER}{text}"))
}

#[test]
fn wire_types_are_current() {
    let dir = std::env::temp_dir().join(format!("herald-protocol-ts-{}", std::process::id()));
    let generated = generate(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let generated = generated.expect("ts-rs exports the wire types");
    let path = checked_in();
    if std::env::var_os(UPDATE_ENV).is_some() {
        std::fs::write(&path, &generated).expect("write the wire types");
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == generated,
        "{CHECKED_IN} is not what crates/protocol generates: run {REGENERATE}"
    );
}
