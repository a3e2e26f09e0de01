//! Wall-clock time as Unix timestamps: what tokens, publications and presence carry.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub fn unix_millis() -> i64 {
    since_epoch().as_millis() as i64
}

/// Unix time in seconds.
pub fn unix_seconds() -> i64 {
    since_epoch().as_secs() as i64
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
