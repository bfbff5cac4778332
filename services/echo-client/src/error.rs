//! Why a client could not be built or connected (calls fail with `tonic::Status`).
//!
//! Each variant's message names its own cause only; the underlying error is
//! its [`source`](std::error::Error::source), so a report that walks the
//! chain names every cause once.

/// A failure to build or connect an [`EchoClient`](crate::EchoClient).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error("invalid endpoint {endpoint:?}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        #[source]
        source: tonic::transport::Error,
    },
    /// A method path is not a valid URI path.
    #[error("invalid method path {path:?}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it was rejected.
        #[source]
        source: http::Error,
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
    #[error("cannot connect to {endpoint}")]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The TLS material (PEM) could not be used.
    #[error("invalid TLS {what}")]
    Tls {
        /// Which part: the CA certificates, the certificate chain or the key.
        what: &'static str,
        /// Why it was rejected.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// What was asked for cannot work with how the builder is set up.
    #[error("{what} needs {needs}")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// What it needs that the builder does not have.
        needs: &'static str,
    },
}
