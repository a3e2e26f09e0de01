//! `authorization: Bearer <token>` on every call of a client, or nothing: how a service
//! calls Herald's API with an API key, and how Herald calls the app's backend with its token.

use tonic::metadata::AsciiMetadataValue;
use tonic::metadata::errors::InvalidMetadataValue;

/// A client interceptor (`HeraldClient::with_interceptor`, `BackendClient::with_interceptor`).
#[derive(Clone, Default)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl BearerToken {
    /// Sends `token`; fails if it cannot be a header value.
    pub fn new(token: &str) -> Result<BearerToken, InvalidMetadataValue> {
        Ok(BearerToken(Some(format!("Bearer {token}").parse()?)))
    }

    /// Sends no token.
    pub fn none() -> BearerToken {
        BearerToken(None)
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}
