//! Domain errors and their mapping to client error codes and gRPC statuses, in one place.

use herald_protocol::ErrorCode;
use herald_protocol::publication::{DataError, EventError};

use crate::broker::BrokerError;
use crate::state::StateError;

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid channel: {0}")]
    InvalidChannel(#[from] herald_protocol::ChannelError),
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    #[error("invalid event: {0}")]
    InvalidEvent(#[from] EventError),
    #[error("invalid data: {0}")]
    InvalidData(#[from] DataError),
    #[error("client publish is not allowed on this channel")]
    NotAllowed,
    #[error("idempotency_key must be at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes")]
    InvalidIdempotencyKey,
    /// Another publish with the key is still being sent; retrying later is safe.
    #[error("a publish with this idempotency_key is in progress; retry")]
    IdempotencyKeyInFlight,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl PublishError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::InvalidChannel(_) | Self::UnknownNamespace(_) => ErrorCode::UnknownChannel,
            Self::InvalidEvent(_) | Self::InvalidData(_) | Self::InvalidIdempotencyKey => {
                ErrorCode::BadRequest
            }
            Self::NotAllowed => ErrorCode::PermissionDenied,
            Self::State(_) | Self::Broker(_) | Self::IdempotencyKeyInFlight => {
                ErrorCode::Unavailable
            }
        }
    }

    pub fn status(&self) -> tonic::Status {
        match self {
            Self::InvalidChannel(_)
            | Self::UnknownNamespace(_)
            | Self::InvalidEvent(_)
            | Self::InvalidData(_)
            | Self::InvalidIdempotencyKey => tonic::Status::invalid_argument(self.to_string()),
            Self::NotAllowed => tonic::Status::permission_denied(self.to_string()),
            Self::State(_) | Self::Broker(_) | Self::IdempotencyKeyInFlight => {
                tonic::Status::unavailable(self.to_string())
            }
        }
    }
}

/// Why a history read failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("invalid channel: {0}")]
    InvalidChannel(#[from] herald_protocol::ChannelError),
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    #[error("channel has no history")]
    NoHistory,
    #[error(transparent)]
    State(#[from] StateError),
}

impl HistoryError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::InvalidChannel(_) | Self::UnknownNamespace(_) => ErrorCode::UnknownChannel,
            Self::NoHistory => ErrorCode::NotAvailable,
            Self::State(_) => ErrorCode::Unavailable,
        }
    }

    pub fn status(&self) -> tonic::Status {
        match self {
            Self::InvalidChannel(_) | Self::UnknownNamespace(_) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            Self::NoHistory => tonic::Status::failed_precondition(self.to_string()),
            Self::State(_) => tonic::Status::unavailable(self.to_string()),
        }
    }
}
