//! Why the server cannot start ([`ServeError`]), why an echo call fails
//! ([`EchoError`]) or a Forward is refused ([`ForwardError`]), the error a
//! conformance case asks for ([`CaseError`]), and the one
//! place that turns each call error into a `tonic::Status`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `google.rpc.ErrorInfo.reason` of errors that the request asked for.
pub const REQUESTED_ERROR_REASON: &str = "ECHO_REQUESTED_ERROR";
/// `google.rpc.ErrorInfo.domain` of errors that the request asked for.
pub const ERROR_DOMAIN: &str = "grpc-echo";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The token file cannot be read.
    #[error("auth token file {path}")]
    TokenFile {
        /// The file named by `--auth-token-file`.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The token file holds no token.
    #[error("auth token file {0}: no token in it")]
    NoToken(PathBuf),
    /// The TLS material is unusable.
    #[error("TLS")]
    Tls(#[from] crate::transport::tls::TlsError),
    /// The memory budgets cannot hold what the limits allow.
    #[error("memory budgets")]
    Budget(#[from] crate::transport::budget::BudgetTooSmall),
    /// HTTP/3 is asked for without TLS, which QUIC requires.
    #[error("HTTP/3 needs TLS: give --tls-cert and --tls-key with --http3")]
    Http3WithoutTls,
    /// The QUIC endpoint cannot be set up.
    #[error("HTTP/3 on UDP {addr}: {reason}")]
    Http3 {
        /// The address it was to listen on.
        addr: std::net::SocketAddr,
        /// Why it cannot.
        reason: String,
    },
    /// A `--forward-ca-file`, `--forward-cert-file` or `--forward-key-file` cannot be read.
    #[error("forward TLS file {path}")]
    ForwardTls {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
}

/// A failed echo call.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// A control field has a value the server refuses.
    #[error("invalid {field}: {reason}")]
    InvalidControl {
        /// Path of the field in the request, e.g. `stream.count`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request's `error` control asked for this status.
    #[error("{message}")]
    Requested {
        /// The status code asked for.
        code: Code,
        /// The status message asked for.
        message: String,
        /// Copied into the `google.rpc.ErrorInfo` metadata.
        details: HashMap<String, String>,
        /// Sent as a `google.rpc.RetryInfo`, when asked for.
        retry_delay: Option<Duration>,
    },
    /// The caller's deadline passed before the call finished.
    #[error("deadline exceeded before the call finished")]
    DeadlineExceeded,
    /// The server's shutdown grace period ran out while the call was open.
    #[error("server is shutting down")]
    ShuttingDown,
    /// Reading the request stream failed; the status says why.
    #[error(transparent)]
    Inbound(#[from] Status),
}

/// The error a conformance case asks for: its code (as the suite numbers
/// codes, which are gRPC's), message and details.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct CaseError {
    pub(crate) code: i32,
    pub(crate) message: String,
    pub(crate) details: Vec<prost_types::Any>,
}

/// A Forward the server refuses before calling anything.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No `--forward-allow` was given.
    #[error("forwarding is off: the server allows no targets (--forward-allow)")]
    Off,
    /// The target is not on the allowlist.
    #[error("target {0} is not allowed (--forward-allow)")]
    NotAllowed(String),
    /// The request has passed through as many servers as allowed.
    #[error("hop limit of {limit} reached: {chain}")]
    HopLimit {
        /// `--forward-max-hops`.
        limit: u32,
        /// The instances the request passed.
        chain: String,
    },
    /// A field of the request has a value the server refuses.
    #[error("invalid forward: {0}")]
    Invalid(String),
    /// TLS was asked for, and the server trusts no CA for downstreams.
    #[error("the server has no CA for TLS downstreams (--forward-ca-file)")]
    NoTls,
}

impl From<ForwardError> for Status {
    fn from(error: ForwardError) -> Self {
        let message = error.to_string();
        match error {
            ForwardError::Off | ForwardError::NotAllowed(_) => Status::permission_denied(message),
            ForwardError::HopLimit { .. } | ForwardError::NoTls => {
                Status::failed_precondition(message)
            }
            ForwardError::Invalid(_) => Status::invalid_argument(message),
        }
    }
}

impl From<CaseError> for Status {
    fn from(error: CaseError) -> Self {
        let code = Code::from_i32(error.code);
        let details = tonic_types::pb::Status {
            code: code as i32,
            message: error.message.clone(),
            details: error.details,
        };
        Status::with_details(
            code,
            error.message,
            prost::Message::encode_to_vec(&details).into(),
        )
    }
}

impl EchoError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidControl {
            field,
            reason: reason.into(),
        }
    }
}

impl From<EchoError> for Status {
    fn from(error: EchoError) -> Self {
        let message = error.to_string();
        match error {
            EchoError::InvalidControl { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            EchoError::Requested {
                code,
                details,
                retry_delay,
                ..
            } => {
                let mut details =
                    ErrorDetails::with_error_info(REQUESTED_ERROR_REASON, ERROR_DOMAIN, details);
                if let Some(delay) = retry_delay {
                    details.set_retry_info(Some(delay));
                }
                Status::with_error_details(code, message, details)
            }
            EchoError::DeadlineExceeded => Status::deadline_exceeded(message),
            EchoError::ShuttingDown => Status::unavailable(message),
            EchoError::Inbound(status) => status,
        }
    }
}
