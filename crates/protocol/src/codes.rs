//! Error codes (in command replies) and close codes (on the WebSocket), in one place.
//!
//! Close codes come in three classes so a client knows what to do without knowing every
//! code: 4000-4099 do not reconnect as is, 4100-4199 reconnect after backoff, 4200-4299
//! reconnect now (with jitter).

/// Error codes carried in `{"id":N,"error":{"code":C,...}}` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    Internal = 100,
    Unauthorized = 101,
    UnknownChannel = 102,
    PermissionDenied = 103,
    MethodNotFound = 104,
    AlreadySubscribed = 105,
    LimitExceeded = 106,
    BadRequest = 107,
    NotAvailable = 108,
    TokenExpired = 109,
    TooManyRequests = 110,
    Unavailable = 111,
    /// `rpc`: the app's backend could not be reached or did not answer usably.
    BackendUnavailable = 112,
    /// `rpc`: the app's backend did not answer within the timeout.
    BackendTimeout = 113,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        Self::Internal,
        Self::Unauthorized,
        Self::UnknownChannel,
        Self::PermissionDenied,
        Self::MethodNotFound,
        Self::AlreadySubscribed,
        Self::LimitExceeded,
        Self::BadRequest,
        Self::NotAvailable,
        Self::TokenExpired,
        Self::TooManyRequests,
        Self::Unavailable,
        Self::BackendUnavailable,
        Self::BackendTimeout,
    ];

    pub fn code(self) -> u32 {
        self as u32
    }

    /// The default message for this code.
    pub fn message(self) -> &'static str {
        match self {
            Self::Internal => "internal error",
            Self::Unauthorized => "unauthorized",
            Self::UnknownChannel => "unknown channel",
            Self::PermissionDenied => "permission denied",
            Self::MethodNotFound => "method not found",
            Self::AlreadySubscribed => "already subscribed",
            Self::LimitExceeded => "limit exceeded",
            Self::BadRequest => "bad request",
            Self::NotAvailable => "not available",
            Self::TokenExpired => "token expired",
            Self::TooManyRequests => "too many requests",
            Self::Unavailable => "temporarily unavailable",
            Self::BackendUnavailable => "backend unavailable",
            Self::BackendTimeout => "backend timeout",
        }
    }

    /// Whether the same command may succeed when retried later.
    pub fn temporary(self) -> bool {
        matches!(
            self,
            Self::Internal
                | Self::TooManyRequests
                | Self::Unavailable
                | Self::BackendUnavailable
                | Self::BackendTimeout
        )
    }

    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// The lowest error code of the app's backend: its `RpcError` codes are passed to the
/// client as they are from here up, and ones below are raised to it, so they never pass for
/// Herald's own.
pub const MIN_BACKEND_CODE: u32 = 1000;

/// Codes of the server's `unsubscribe` push: why the server ended a subscription, and
/// whether the client subscribes again.
pub mod unsubscribe_code {
    /// The server removed the subscription; do not resubscribe.
    pub const SERVER: u32 = 2000;
    /// The subscription token expired and was not refreshed with `subRefresh`: get a new
    /// subscription token and resubscribe (recovering from the last position seen).
    pub const TOKEN_EXPIRED: u32 = 2401;
    /// A `refresh` replaced the connection's claims with ones that no longer allow the
    /// channel; do not resubscribe (a subscribe would be refused with 103).
    pub const PERMISSION_REVOKED: u32 = 2403;
    /// Resubscribe now, recovering from the last position seen.
    pub const RESUBSCRIBE: u32 = 2500;

    /// The reason sent with a code.
    pub fn reason(code: u32) -> &'static str {
        match code {
            TOKEN_EXPIRED => "subscription token expired",
            PERMISSION_REVOKED => "permission revoked",
            RESUBSCRIBE => "resubscribe",
            _ => "unsubscribed by the server",
        }
    }

    /// Whether the client should subscribe again after this code (2401 with a new token).
    pub fn resubscribe(code: u32) -> bool {
        matches!(code, TOKEN_EXPIRED | RESUBSCRIBE)
    }
}

/// What a client should do after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Do not reconnect as is (fix the request or the token first).
    No,
    /// Reconnect after exponential backoff.
    Backoff,
    /// Reconnect now, with a little jitter.
    Now,
}

/// WebSocket close codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    BadRequest = 4000,
    Unauthorized = 4001,
    TokenExpired = 4002,
    ForbiddenOrigin = 4003,
    MessageTooLarge = 4009,
    TooManyRequests = 4100,
    ConnectionLimit = 4101,
    /// The node could not set the connection up (its state backend failed restoring the
    /// user's server-side subscriptions): reconnect after backoff, recovering.
    Unavailable = 4102,
    Shutdown = 4200,
    SlowConsumer = 4201,
    NoPong = 4202,
}

impl CloseCode {
    pub const ALL: [CloseCode; 11] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::TokenExpired,
        Self::ForbiddenOrigin,
        Self::MessageTooLarge,
        Self::TooManyRequests,
        Self::ConnectionLimit,
        Self::Unavailable,
        Self::Shutdown,
        Self::SlowConsumer,
        Self::NoPong,
    ];

    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The close reason sent with the code (at most 123 bytes, as WebSocket requires).
    pub fn reason(self) -> &'static str {
        match self {
            Self::BadRequest => "bad request",
            Self::Unauthorized => "unauthorized",
            Self::TokenExpired => "token expired",
            Self::ForbiddenOrigin => "forbidden origin",
            Self::MessageTooLarge => "message too large",
            Self::TooManyRequests => "too many requests",
            Self::ConnectionLimit => "connection limit",
            Self::Unavailable => "temporarily unavailable",
            Self::Shutdown => "server shutdown",
            Self::SlowConsumer => "slow consumer",
            Self::NoPong => "no pong",
        }
    }

    pub fn reconnect(self) -> Reconnect {
        reconnect_advice(self.code())
    }
}

/// The reconnect advice for any code in the 4000-4299 range, known or not.
pub fn reconnect_advice(code: u16) -> Reconnect {
    match code {
        4100..=4199 => Reconnect::Backoff,
        4200..=4299 => Reconnect::Now,
        _ => Reconnect::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_classes_hold() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(code.code()), Some(code));
            assert!(code.reason().len() <= 123);
        }
        assert_eq!(CloseCode::TokenExpired.reconnect(), Reconnect::No);
        assert_eq!(CloseCode::ConnectionLimit.reconnect(), Reconnect::Backoff);
        assert_eq!(CloseCode::SlowConsumer.reconnect(), Reconnect::Now);
        assert_eq!(ErrorCode::PermissionDenied.code(), 103);
        assert_eq!(ErrorCode::TooManyRequests.code(), 110);
        assert_eq!(ErrorCode::BackendUnavailable.code(), 112);
        assert_eq!(ErrorCode::BackendTimeout.code(), 113);
        assert!(ErrorCode::BackendUnavailable.temporary() && ErrorCode::BackendTimeout.temporary());
        assert!(unsubscribe_code::resubscribe(unsubscribe_code::RESUBSCRIBE));
        assert!(unsubscribe_code::resubscribe(
            unsubscribe_code::TOKEN_EXPIRED
        ));
        assert!(!unsubscribe_code::resubscribe(
            unsubscribe_code::PERMISSION_REVOKED
        ));
        assert!(!unsubscribe_code::resubscribe(unsubscribe_code::SERVER));
    }
}
