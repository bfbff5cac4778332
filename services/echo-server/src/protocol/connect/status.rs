//! Connect's view of a gRPC status: its error JSON and HTTP status, and the
//! end-of-stream message that carries a stream's status and trailers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use bytes::Bytes;
use echo_wire::connect::{self, FLAG_END_STREAM};
use echo_wire::framing::envelope;
use echo_wire::headers as grpc_header;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use prost::Message as _;
use serde_json::{Map, Value, json};
use tonic::body::Body;
use tonic::{Code, Status};

use super::super::shared::full;
use super::lenient_base64::BASE64;

/// A Connect error: a status, and the metadata (headers and trailers) that came with it.
pub(crate) fn error_response(status: &Status, mut headers: HeaderMap) -> Response<Body> {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut response = Response::new(full(
        serde_json::to_vec(&error_json(status))
            .unwrap_or_default()
            .into(),
    ));
    *response.status_mut() = http_status(status.code());
    *response.headers_mut() = headers;
    response
}

/// The HTTP status Connect gives each code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `status` as Connect's error JSON; its `google.rpc.Status` details become
/// Connect's details (type name, base64 value without padding).
fn error_json(status: &Status) -> Value {
    let mut error = Map::new();
    error.insert(
        "code".into(),
        connect::code_name(status.code() as i32).into(),
    );
    if !status.message().is_empty() {
        error.insert("message".into(), status.message().into());
    }
    if let Ok(details) = tonic_types::pb::Status::decode(status.details()) {
        let details: Vec<Value> = details
            .details
            .iter()
            .map(|any| {
                let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
                json!({"type": name, "value": STANDARD_NO_PAD.encode(&any.value)})
            })
            .collect();
        if !details.is_empty() {
            error.insert("details".into(), details.into());
        }
    }
    Value::Object(error)
}

/// The status gRPC `fields` (trailers, or the headers of a trailers-only answer) carry.
pub(crate) fn grpc_status(fields: &HeaderMap) -> Option<Status> {
    let code = fields
        .get(&grpc_header::STATUS)?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = fields
        .get(&grpc_header::MESSAGE)
        .map(|value| {
            percent_encoding::percent_decode(value.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let details = fields
        .get(&grpc_header::STATUS_DETAILS)
        .and_then(|value| BASE64.decode(value.as_bytes()).ok())
        .unwrap_or_default();
    Some(Status::with_details(
        Code::from(code),
        message,
        details.into(),
    ))
}

/// Whether `name` is gRPC's own rather than the call's metadata.
fn is_protocol_header(name: &HeaderName) -> bool {
    name == header::CONTENT_TYPE
        || name == header::CONTENT_LENGTH
        || name == grpc_header::STATUS
        || name == grpc_header::MESSAGE
        || name == grpc_header::STATUS_DETAILS
        || name == grpc_header::ENCODING
        || name == grpc_header::ACCEPT_ENCODING
}

/// The metadata among `fields`.
pub(crate) fn metadata(fields: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    fields.iter().filter(|(name, _)| !is_protocol_header(name))
}

/// Connect's end-of-stream message: the error (from `failure`, or else the
/// status `trailers` carry, unless OK) and the trailers as metadata.
pub(crate) fn end_stream(trailers: &HeaderMap, failure: Option<Status>) -> Bytes {
    let mut end = Map::new();
    let status = failure.or_else(|| grpc_status(trailers));
    if let Some(status) = status.filter(|status| status.code() != Code::Ok) {
        end.insert("error".into(), error_json(&status));
    }
    let mut fields: Map<String, Value> = Map::new();
    for (name, value) in metadata(trailers) {
        let values = fields
            .entry(name.as_str())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = values {
            values.push(
                String::from_utf8_lossy(value.as_bytes())
                    .into_owned()
                    .into(),
            );
        }
    }
    if !fields.is_empty() {
        end.insert("metadata".into(), Value::Object(fields));
    }
    envelope(
        FLAG_END_STREAM,
        &serde_json::to_vec(&Value::Object(end)).unwrap_or_default(),
    )
}
