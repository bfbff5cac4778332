//! Why a client could not be built or connected (calls fail with `tonic::Status`).

/// A failure to build or connect an [`EchoClient`](crate::EchoClient).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error("invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        #[source]
        source: tonic::transport::Error,
    },
    /// A default metadata entry has an invalid key or value.
    #[error("invalid metadata {key:?}: {reason}")]
    InvalidMetadata {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// None of the balanced targets resolved to an address.
    #[error("no address found for {targets}")]
    NoAddress {
        /// The targets, as given.
        targets: String,
    },
    /// The server could not be reached.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// What went wrong.
        #[source]
        source: tonic::transport::Error,
    },
}
