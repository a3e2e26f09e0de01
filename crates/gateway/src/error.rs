//! Domain errors and their mapping to client error codes (a [`Failure`]) and gRPC
//! statuses, in one place: call sites use `?` and never choose a code themselves.

use herald_protocol::publication::{DataError, EventError};
use herald_protocol::{ChannelError, CloseCode, ErrorCode};
use tonic::Status;

use crate::auth::{AuthError, Denied};
use crate::backend::BackendError;
use crate::broker::BrokerError;
use crate::presence::SetStateError;
use crate::state::StateError;

/// A command's failure, as the client sees it.
#[derive(Debug)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn code(code: ErrorCode) -> Self {
        Self::new(code, code.message())
    }

    /// A refused subscription token: expired is told apart, so the client fetches a new one.
    pub fn subscription_token(error: AuthError) -> Self {
        match error {
            AuthError::Expired => Self::code(ErrorCode::TokenExpired),
            other => Self::new(
                ErrorCode::PermissionDenied,
                format!("subscription token: {other}"),
            ),
        }
    }

    /// How a connection is closed when this failure refuses its `connect`.
    pub fn connect_close(&self) -> CloseCode {
        match self.code {
            ErrorCode::TokenExpired => CloseCode::TokenExpired,
            ErrorCode::LimitExceeded => CloseCode::ConnectionLimit,
            _ => CloseCode::Unauthorized,
        }
    }
}

/// A refused connection token (`connect`, `refresh`).
impl From<AuthError> for Failure {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Expired => Self::code(ErrorCode::TokenExpired),
            other => Self::new(ErrorCode::Unauthorized, other.to_string()),
        }
    }
}

/// A subscribe the channel's access rule refuses.
impl From<Denied> for Failure {
    fn from(denied: Denied) -> Self {
        Self::new(ErrorCode::PermissionDenied, denied.to_string())
    }
}

impl From<ChannelError> for Failure {
    fn from(error: ChannelError) -> Self {
        Self::new(ErrorCode::UnknownChannel, error.to_string())
    }
}

impl From<StateError> for Failure {
    fn from(error: StateError) -> Self {
        Self::new(ErrorCode::Unavailable, error.to_string())
    }
}

impl From<SetStateError> for Failure {
    fn from(error: SetStateError) -> Self {
        match error {
            SetStateError::Throttled => Self::new(ErrorCode::TooManyRequests, error.to_string()),
            SetStateError::State(error) => error.into(),
        }
    }
}

impl From<BrokerError> for Failure {
    fn from(error: BrokerError) -> Self {
        Self::new(ErrorCode::Unavailable, error.to_string())
    }
}

/// A backend call without a usable answer (the backend's own refusals pass through as they
/// are, with their code).
impl From<BackendError> for Failure {
    fn from(error: BackendError) -> Self {
        let code = match error {
            BackendError::Timeout => ErrorCode::BackendTimeout,
            BackendError::Unavailable(_) | BackendError::Busy | BackendError::InvalidReply(_) => {
                ErrorCode::BackendUnavailable
            }
        };
        Self::new(code, error.to_string())
    }
}

impl From<PublishError> for Failure {
    fn from(error: PublishError) -> Self {
        Self::new(error.error_code(), error.to_string())
    }
}

impl From<HistoryError> for Failure {
    fn from(error: HistoryError) -> Self {
        Self::new(error.error_code(), error.to_string())
    }
}

/// A gRPC `Disconnect` whose order could not be handed to the other nodes; the user's
/// connections on the called node are closed.
#[derive(Debug, thiserror::Error)]
#[error("closed here, but the other nodes could not be told: {0}")]
pub struct NotRelayed(#[from] BrokerError);

impl From<StateError> for Status {
    fn from(error: StateError) -> Self {
        Status::unavailable(error.to_string())
    }
}

impl From<BrokerError> for Status {
    fn from(error: BrokerError) -> Self {
        Status::unavailable(error.to_string())
    }
}

impl From<NotRelayed> for Status {
    fn from(error: NotRelayed) -> Self {
        Status::unavailable(error.to_string())
    }
}

impl From<PublishError> for Status {
    fn from(error: PublishError) -> Self {
        error.status()
    }
}

impl From<HistoryError> for Status {
    fn from(error: HistoryError) -> Self {
        error.status()
    }
}

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// What a client publish's idempotency key is stored under, before its user's name and its
/// own key: a client can never claim a key of the backend's or of another user.
pub const CLIENT_KEY_PREFIX: &str = "client:";

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid channel: {0}")]
    InvalidChannel(#[from] ChannelError),
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
    #[error(
        "idempotency_key must not begin with {CLIENT_KEY_PREFIX:?}: those are the clients' keys"
    )]
    ReservedIdempotencyKey,
    /// Another publish with the key is still being sent; retrying later is safe.
    #[error("a publish with this idempotency_key is in progress; retry")]
    IdempotencyKeyInFlight,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl PublishError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::InvalidChannel(_) | Self::UnknownNamespace(_) => ErrorCode::UnknownChannel,
            Self::InvalidEvent(_)
            | Self::InvalidData(_)
            | Self::InvalidIdempotencyKey
            | Self::ReservedIdempotencyKey => ErrorCode::BadRequest,
            Self::NotAllowed => ErrorCode::PermissionDenied,
            Self::State(_) | Self::Broker(_) | Self::IdempotencyKeyInFlight => {
                ErrorCode::Unavailable
            }
        }
    }

    fn status(&self) -> Status {
        match self {
            Self::InvalidChannel(_)
            | Self::UnknownNamespace(_)
            | Self::InvalidEvent(_)
            | Self::InvalidData(_)
            | Self::InvalidIdempotencyKey
            | Self::ReservedIdempotencyKey => Status::invalid_argument(self.to_string()),
            Self::NotAllowed => Status::permission_denied(self.to_string()),
            Self::State(_) | Self::Broker(_) | Self::IdempotencyKeyInFlight => {
                Status::unavailable(self.to_string())
            }
        }
    }
}

/// Why a history read failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("invalid channel: {0}")]
    InvalidChannel(#[from] ChannelError),
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    #[error("channel has no history")]
    NoHistory,
    #[error(transparent)]
    State(#[from] StateError),
}

impl HistoryError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::InvalidChannel(_) | Self::UnknownNamespace(_) => ErrorCode::UnknownChannel,
            Self::NoHistory => ErrorCode::NotAvailable,
            Self::State(_) => ErrorCode::Unavailable,
        }
    }

    fn status(&self) -> Status {
        match self {
            Self::InvalidChannel(_) | Self::UnknownNamespace(_) => {
                Status::invalid_argument(self.to_string())
            }
            Self::NoHistory => Status::failed_precondition(self.to_string()),
            Self::State(_) => Status::unavailable(self.to_string()),
        }
    }
}
