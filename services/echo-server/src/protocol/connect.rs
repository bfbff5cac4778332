//! The Connect protocol (connectrpc.com/docs/protocol), translated to and from
//! gRPC: unary calls (POST, and GET for side-effect-free methods) and streams.

use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use echo_wire::connect::{
    self, ACCEPT_ENCODING_HEADER, CONTENT_ENCODING_HEADER, FLAG_END_STREAM, PROTOCOL_VERSION,
    PROTOCOL_VERSION_HEADER, TIMEOUT_HEADER, TRAILER_PREFIX,
};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use prost::Message as _;
use serde_json::{Map, Value, json};
use tonic::body::Body;
use tonic::{Code, Status};

use echo_wire::framing::envelope;
use echo_wire::headers as grpc_header;

use super::envelope::{
    Compression, Ending, FLAG_COMPRESSED, Rewrite, Rewritten, full, split_all, too_large,
};
use super::json::{json_to_proto, proto_to_json};
use super::{GRPC_CONTENT_TYPE, Shared, grpc_request_headers};

/// Decodes base64 with or without padding: peers differ.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
/// Longest `Connect-Timeout-Ms` value the protocol allows: 10 digits.
const MAX_TIMEOUT_DIGITS: usize = 10;

/// The message encoding of a Connect call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Proto,
    Json,
}

impl Codec {
    fn unary_content_type(self) -> &'static str {
        match self {
            Self::Proto => "application/proto",
            Self::Json => "application/json",
        }
    }

    fn stream_content_type(self) -> &'static str {
        match self {
            Self::Proto => "application/connect+proto",
            Self::Json => "application/connect+json",
        }
    }
}

/// A Connect error: a status, and the metadata (headers and trailers) that came with it.
fn error_response(status: &Status, mut headers: HeaderMap) -> Response<Body> {
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
fn grpc_status(fields: &HeaderMap) -> Option<Status> {
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
fn metadata(fields: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
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

/// `Connect-Timeout-Ms`, if given; INVALID_ARGUMENT if it is not a number of up to 10 digits.
fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get(&TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_TIMEOUT_DIGITS || !bytes.iter().all(u8::is_ascii_digit)
    {
        return Err(Status::invalid_argument(format!(
            "connect-timeout-ms: {value:?} is not a number of milliseconds"
        )));
    }
    let millis = std::str::from_utf8(bytes)
        .expect("digits")
        .parse::<u64>()
        .expect("10 digits fit");
    Ok(Some(Duration::from_millis(millis)))
}

/// The protocol version, if given, must be ours.
fn check_version(version: Option<&[u8]>) -> Result<(), Status> {
    match version {
        None => Ok(()),
        Some(version) if version == PROTOCOL_VERSION.as_bytes() => Ok(()),
        Some(version) => Err(Status::invalid_argument(format!(
            "connect protocol version {:?} is not supported (this server speaks {PROTOCOL_VERSION})",
            String::from_utf8_lossy(version)
        ))),
    }
}

/// The gRPC headers of a Connect call: its metadata, the deadline, and the
/// message compression both ways.
fn translate_headers(
    headers: &HeaderMap,
    encoding: Option<&HeaderValue>,
    accept_encoding: Option<&HeaderValue>,
) -> Result<HeaderMap, Status> {
    let mut grpc = grpc_request_headers(headers, timeout(headers)?);
    for name in [
        &PROTOCOL_VERSION_HEADER,
        &TIMEOUT_HEADER,
        &CONTENT_ENCODING_HEADER,
        &ACCEPT_ENCODING_HEADER,
        &header::CONTENT_ENCODING,
        &header::ACCEPT_ENCODING,
    ] {
        grpc.remove(name);
    }
    if let Some(encoding) = encoding.filter(|value| value.as_bytes() != b"identity") {
        grpc.insert(grpc_header::ENCODING, encoding.clone());
    }
    if let Some(accept) = accept_encoding {
        grpc.insert(grpc_header::ACCEPT_ENCODING, accept.clone());
    }
    Ok(grpc)
}

/// A Connect unary call (POST, or GET with the message in the query):
/// its parts, before the body is read.
pub(crate) struct UnaryCall {
    codec: Codec,
    /// The request message, when it came in the query (GET).
    query_message: Option<Bytes>,
    /// The compression of the request message.
    compression: Compression,
    compression_name: Option<HeaderValue>,
}

/// Reads a Connect unary call's request, calls `call` with it as gRPC, and
/// answers in Connect.
pub(crate) async fn unary<F, Fut, B, E>(
    request: Request<Body>,
    codec: Option<Codec>,
    shared: &Shared,
    call: F,
) -> Result<Response<Body>, E>
where
    F: FnOnce(Request<Body>) -> Fut,
    Fut: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let (parts, body) = request.into_parts();
    let schema = shared.schemas.method(parts.uri.path());
    let prepared = match codec {
        Some(codec) => prepare_post(&parts, codec),
        None => prepare_get(&parts, shared, schema.map(|schema| schema.no_side_effects)),
    };
    let call_parts = match prepared {
        Ok(call_parts) => call_parts,
        Err(status) => return Ok(error_response(&status, HeaderMap::new())),
    };
    let codec = call_parts.codec;
    let message = match call_parts.query_message.clone() {
        Some(message) => message,
        None => match Limited::new(body, shared.max_message_size).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                let status = if err.is::<http_body_util::LengthLimitError>() {
                    too_large(shared.max_message_size)
                } else {
                    Status::from_error(err)
                };
                return Ok(error_response(&status, HeaderMap::new()));
            }
        },
    };
    let (flags, message) = match (codec, schema) {
        (Codec::Proto, _) => {
            let compressed = call_parts.compression != Compression::Identity;
            (if compressed { FLAG_COMPRESSED } else { 0 }, message)
        }
        (Codec::Json, None) => {
            let status = Status::unimplemented(format!("unknown method {}", parts.uri.path()));
            return Ok(error_response(&status, HeaderMap::new()));
        }
        (Codec::Json, Some(schema)) => {
            let transcoded = call_parts
                .compression
                .decompress(&message, shared.max_message_size)
                .and_then(|json| json_to_proto(&schema.input, &json));
            match transcoded {
                Ok(proto) => (0, proto),
                Err(status) => return Ok(error_response(&status, HeaderMap::new())),
            }
        }
    };
    let accept = match codec {
        Codec::Proto => parts.headers.get(header::ACCEPT_ENCODING),
        Codec::Json => None,
    };
    let encoding = match codec {
        Codec::Proto => call_parts.compression_name.as_ref(),
        Codec::Json => None,
    };
    let headers = match translate_headers(&parts.headers, encoding, accept) {
        Ok(headers) => headers,
        Err(status) => return Ok(error_response(&status, HeaderMap::new())),
    };
    let mut grpc = Request::new(full(envelope(flags, &message)));
    *grpc.method_mut() = Method::POST;
    *grpc.uri_mut() = path_only(&parts.uri);
    *grpc.headers_mut() = headers;
    *grpc.extensions_mut() = parts.extensions;
    *grpc.version_mut() = parts.version;

    let response = call(grpc).await?;
    let (answer, body) = response.into_parts();
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(err) => {
            return Ok(error_response(
                &Status::from_error(err.into()),
                HeaderMap::new(),
            ));
        }
    };
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let mut headers: HeaderMap = metadata(&answer.headers)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    for (name, value) in metadata(&trailers) {
        if let Ok(name) = HeaderName::from_bytes(format!("{TRAILER_PREFIX}{name}").as_bytes()) {
            headers.append(name, value.clone());
        }
    }
    let status = grpc_status(&trailers)
        .or_else(|| grpc_status(&answer.headers))
        .unwrap_or_else(|| Status::internal("the answer carried no status"));
    if status.code() != Code::Ok {
        return Ok(error_response(&status, headers));
    }
    let messages = match split_all(collected.to_bytes()) {
        Ok(messages) => messages,
        Err(status) => return Ok(error_response(&status, headers)),
    };
    let Ok([(flags, message)]) = <[_; 1]>::try_from(messages) else {
        let status = Status::internal("a unary call must answer exactly one message");
        return Ok(error_response(&status, headers));
    };
    let body = match (codec, schema) {
        (Codec::Json, Some(schema)) => match proto_to_json(&schema.output, &message) {
            Ok(json) => json,
            Err(status) => return Ok(error_response(&status, headers)),
        },
        _ => {
            if let Some(encoding) = answer.headers.get(&grpc_header::ENCODING)
                && flags & FLAG_COMPRESSED != 0
            {
                headers.insert(header::CONTENT_ENCODING, encoding.clone());
            }
            message
        }
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.unary_content_type()),
    );
    let mut response = Response::new(full(body));
    *response.headers_mut() = headers;
    Ok(response)
}

/// Checks a POST unary call's headers before its body is read.
fn prepare_post(parts: &http::request::Parts, codec: Codec) -> Result<UnaryCall, Status> {
    check_version(
        parts
            .headers
            .get(&PROTOCOL_VERSION_HEADER)
            .map(HeaderValue::as_bytes),
    )?;
    let compression_name = parts.headers.get(header::CONTENT_ENCODING).cloned();
    let compression = compression_of(compression_name.as_ref().map(HeaderValue::as_bytes))?;
    Ok(UnaryCall {
        codec,
        query_message: None,
        compression,
        compression_name,
    })
}

/// A GET call's message, codec and compression, from its query.
fn prepare_get(
    parts: &http::request::Parts,
    shared: &Shared,
    no_side_effects: Option<bool>,
) -> Result<UnaryCall, Status> {
    if no_side_effects == Some(false) {
        return Err(Status::unimplemented(format!(
            "{} has side effects: call it with POST (only methods marked NO_SIDE_EFFECTS take GET)",
            parts.uri.path()
        )));
    }
    let query = parts.uri.query().unwrap_or_default();
    let mut message = None;
    let mut base64 = false;
    let mut codec = None;
    let mut compression_name = None;
    let mut version = None;
    for (name, value) in form_pairs(query) {
        match name.as_str() {
            "message" => message = Some(value),
            "base64" => base64 = value == "1",
            "encoding" => codec = Some(value),
            "compression" => compression_name = Some(value),
            "connect" => version = Some(value),
            _ => {}
        }
    }
    check_version(
        version
            .as_deref()
            .map(|version| version.strip_prefix('v').unwrap_or(version).as_bytes()),
    )?;
    let codec = match codec.as_deref() {
        Some("proto") => Codec::Proto,
        Some("json") => Codec::Json,
        Some(other) => {
            return Err(Status::invalid_argument(format!(
                "encoding={other} is not supported (proto or json)"
            )));
        }
        None => {
            return Err(Status::invalid_argument(
                "a GET call needs the encoding query parameter",
            ));
        }
    };
    let Some(message) = message else {
        return Err(Status::invalid_argument(
            "a GET call needs the message query parameter",
        ));
    };
    let message: Bytes = if base64 {
        BASE64_URL
            .decode(&message)
            .or_else(|_| BASE64.decode(&message))
            .map_err(|err| {
                Status::invalid_argument(format!("message query parameter is not base64: {err}"))
            })?
            .into()
    } else {
        message.into_bytes().into()
    };
    if message.len() > shared.max_message_size {
        return Err(too_large(shared.max_message_size));
    }
    let compression = compression_of(compression_name.as_deref().map(str::as_bytes))?;
    Ok(UnaryCall {
        codec,
        query_message: Some(message),
        compression,
        compression_name: compression_name.and_then(|name| HeaderValue::from_str(&name).ok()),
    })
}

/// The compression `name` names; UNIMPLEMENTED for one the server lacks.
fn compression_of(name: Option<&[u8]>) -> Result<Compression, Status> {
    match name {
        None => Ok(Compression::Identity),
        Some(name) => Compression::from_name(name).ok_or_else(|| {
            Status::unimplemented(format!(
                "compression {:?} is not supported (gzip, zstd, identity)",
                String::from_utf8_lossy(name)
            ))
        }),
    }
}

/// The `name=value` pairs of a URL query, percent-decoded (`+` is a space).
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(&text.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(name), decode(value))
        })
}

/// `uri` without its query.
fn path_only(uri: &http::Uri) -> http::Uri {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = parts.path_and_query.and_then(|pq| {
        http::uri::PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(pq.path().as_bytes()))
            .ok()
    });
    http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// A Connect streaming call's request as gRPC, or the error that ends it at once
/// ([`stream_error`]).
pub(crate) fn stream_request(
    request: Request<Body>,
    codec: Codec,
    shared: &Shared,
) -> Result<(Request<Body>, Option<prost_reflect::MessageDescriptor>), Status> {
    let (mut parts, body) = request.into_parts();
    check_version(
        parts
            .headers
            .get(&PROTOCOL_VERSION_HEADER)
            .map(HeaderValue::as_bytes),
    )?;
    let encoding = parts.headers.get(&CONTENT_ENCODING_HEADER).cloned();
    let compression = compression_of(encoding.as_ref().map(HeaderValue::as_bytes))?;
    let schema = shared.schemas.method(parts.uri.path());
    let (body, output) = match codec {
        Codec::Proto => (body, None),
        Codec::Json => {
            let Some(schema) = schema else {
                return Err(Status::unimplemented(format!(
                    "unknown method {}",
                    parts.uri.path()
                )));
            };
            let rewrite = Rewrite::JsonToProto(schema.input.clone(), compression);
            let body = Body::new(Rewritten::new(
                body,
                rewrite,
                Ending::Keep,
                shared.max_message_size,
            ));
            (body, Some(schema.output.clone()))
        }
    };
    let (encoding, accept) = match codec {
        Codec::Proto => (
            encoding.as_ref(),
            parts.headers.get(&ACCEPT_ENCODING_HEADER),
        ),
        Codec::Json => (None, None),
    };
    parts.headers = translate_headers(&parts.headers, encoding, accept)?;
    parts
        .headers
        .insert(header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    Ok((Request::from_parts(parts, body), output))
}

/// A gRPC answer to a Connect streaming call, in Connect.
pub(crate) fn stream_response<B>(
    response: Response<B>,
    codec: Codec,
    output: Option<prost_reflect::MessageDescriptor>,
    max_message_size: usize,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let (mut parts, body) = response.into_parts();
    if let Some(status) = grpc_status(&parts.headers) {
        // Trailers-only: the status came in the headers, and ends the stream.
        let trailers = parts.headers.clone();
        let mut headers: HeaderMap = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(codec.stream_content_type()),
        );
        let mut response = Response::new(full(end_stream(
            &trailers,
            Some(status).filter(|s| s.code() != Code::Ok),
        )));
        *response.headers_mut() = headers;
        return response;
    }
    let encoding = parts.headers.remove(&grpc_header::ENCODING);
    parts.headers.remove(&grpc_header::ACCEPT_ENCODING);
    if let Some(encoding) = encoding {
        parts.headers.insert(CONTENT_ENCODING_HEADER, encoding);
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.stream_content_type()),
    );
    let rewrite = match output {
        Some(output) => Rewrite::ProtoToJson(output),
        None => Rewrite::Keep,
    };
    Response::from_parts(
        parts,
        Body::new(Rewritten::new(
            body,
            rewrite,
            Ending::ConnectEndStream,
            max_message_size,
        )),
    )
}

/// A streaming call ended before it began: an end-of-stream message with the error.
pub(crate) fn stream_error(codec: Codec, status: &Status) -> Response<Body> {
    let mut response = Response::new(full(end_stream(&HeaderMap::new(), Some(status.clone()))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.stream_content_type()),
    );
    response
}
