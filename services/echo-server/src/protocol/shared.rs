//! What every translation shares: gRPC's request headers, whole bodies,
//! plain-text answers, and the error for a message over the limit.

use std::time::Duration;

use bytes::Bytes;
use echo_wire::compression::DecompressError;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt as _;
use tonic::Status;
use tonic::body::Body;

use crate::boxed::boxed;

/// The content type of gRPC requests as the services take them.
pub(crate) const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");

/// The headers of a gRPC request made from another protocol's `headers`,
/// with the deadline `timeout`.
pub(crate) fn grpc_request_headers(headers: &HeaderMap, timeout: Option<Duration>) -> HeaderMap {
    let mut grpc = headers.clone();
    // HTTP/1.1's own headers, which HTTP/2 forbids.
    for name in [
        header::CONTENT_LENGTH,
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
    ] {
        grpc.remove(name);
    }
    grpc.insert(header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    grpc.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(timeout) = timeout {
        grpc.insert(
            echo_wire::grpc_timeout::HEADER,
            echo_wire::grpc_timeout::encode(timeout),
        );
    }
    grpc
}

/// A plain-text answer with `status`.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::copy_from_slice(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A 405 answer: `allow` names the methods that are.
pub(crate) fn method_not_allowed(allow: &'static str, text: &str) -> Response<Body> {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, text);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The error for a message over the size limit.
pub(crate) fn too_large(max: usize) -> Status {
    Status::resource_exhausted(format!("message larger than the limit of {max} bytes"))
}

/// The status of a message that would not decompress.
pub(crate) fn undecompressed(error: DecompressError) -> Status {
    match error {
        DecompressError::TooLarge { max } => too_large(max),
        corrupt @ DecompressError::Corrupt(_) => Status::internal(corrupt.to_string()),
    }
}

/// A body of `bytes`, then nothing.
pub(crate) fn full(bytes: Bytes) -> Body {
    boxed(http_body_util::Full::new(bytes).map_err(|never| match never {}))
}
