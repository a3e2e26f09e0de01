//! Herald's gRPC API (`proto/herald/v1/api.proto`), the app's backend service Herald calls
//! (`proto/herald/v1/backend.proto`) and the protobuf form of the client protocol
//! (`proto/herald/v1/client.proto`), generated at build time.

mod bearer;

pub use bearer::BearerToken;

/// `herald.v1`: the server API for backend services, and the `Backend` service they implement.
pub mod v1 {
    tonic::include_proto!("herald.v1");

    /// `herald.v1.client`: the client protocol's binary encoding.
    pub mod client {
        tonic::include_proto!("herald.v1.client");
    }
}
