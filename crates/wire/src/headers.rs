//! The names of the gRPC headers and trailers read and written below tonic
//! (protocol translation, call endings), defined once.

use http::HeaderName;

/// `grpc-encoding`: the compression of the messages that follow.
pub const ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
/// `grpc-accept-encoding`: the compressions the sender takes back.
pub const ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
/// `grpc-status`: the call's status code.
pub const STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`: the status message, percent-encoded.
pub const MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-status-details-bin`: the `google.rpc.Status` with the error details.
pub const STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");
/// `grpc-previous-rpc-attempts`: how many times a retried call was sent before.
pub const PREVIOUS_RPC_ATTEMPTS: HeaderName = HeaderName::from_static("grpc-previous-rpc-attempts");
/// `x-request-id`: a call's id, kept by the server when the caller sends one
/// and answered back, and carried on to downstream calls.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `hostname`: the instance that answered, as gRPC's xDS interop test servers
/// name it on every unary answer (clients count backends by it).
pub const HOSTNAME: HeaderName = HeaderName::from_static("hostname");
/// The trailer (in a trailers-only answer, the header) that carries a call's
/// ORCA load report, a binary `xds.data.orca.v3.OrcaLoadReport` (gRFC A51).
pub const LOAD_REPORT: HeaderName = HeaderName::from_static("endpoint-load-metrics-bin");
