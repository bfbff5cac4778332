//! The Connect protocol (connectrpc.com/docs/protocol), translated to and from
//! gRPC: unary calls (POST, and GET for side-effect-free methods) and streams.

mod lenient_base64;
pub(crate) mod status;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use echo_wire::connect::{
    ACCEPT_ENCODING_HEADER, CONTENT_ENCODING_HEADER, PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER,
    TIMEOUT_HEADER, TRAILER_PREFIX,
};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use tonic::body::Body;
use tonic::{Code, Status};

use echo_wire::framing::envelope;
use echo_wire::headers as grpc_header;

use super::envelope::{Compression, Ending, FLAG_COMPRESSED, Rewrite, Rewritten, split_all};
use super::json::{MethodSchema, Schemas, json_to_proto, proto_to_json};
use super::shared::{
    GRPC_CONTENT_TYPE, full, grpc_request_headers, plain, too_large, undecompressed,
};
use crate::boxed::boxed;
use crate::context::UnknownRoute;
use lenient_base64::{BASE64, BASE64_URL};
use status::{end_stream, error_response, grpc_status, metadata};

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
    schemas: &Schemas,
    max_message_size: usize,
    call: F,
) -> Result<Response<Body>, E>
where
    F: FnOnce(Request<Body>) -> Fut,
    Fut: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let schema = schemas.method(request.uri().path());
    let (grpc, codec) = match unary_request(request, codec, schema, max_message_size).await {
        Ok(translated) => translated,
        Err(status) => return Ok(error_response(&status, HeaderMap::new())),
    };
    let response = call(grpc).await?;
    Ok(unary_answer(response, codec, schema).await)
}

/// A Connect unary request (POST, or GET with the message in its query) as
/// the gRPC request the services take, and the codec of its answer.
async fn unary_request(
    request: Request<Body>,
    codec: Option<Codec>,
    schema: Option<&MethodSchema>,
    max_message_size: usize,
) -> Result<(Request<Body>, Codec), Status> {
    let (parts, body) = request.into_parts();
    let call_parts = match codec {
        Some(codec) => prepare_post(&parts, codec)?,
        None => prepare_get(
            &parts,
            max_message_size,
            schema.map(|schema| schema.no_side_effects),
        )?,
    };
    let codec = call_parts.codec;
    let message = match call_parts.query_message.clone() {
        Some(message) => message,
        None => match Limited::new(body, max_message_size).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                return Err(too_large(max_message_size));
            }
            Err(err) => return Err(Status::from_error(err)),
        },
    };
    let (flags, message) = match (codec, schema) {
        (Codec::Proto, _) => {
            // An empty body is the empty message, whatever its encoding
            // (some zstd encoders write nothing for it).
            let compressed = call_parts.compression != Compression::Identity && !message.is_empty();
            (if compressed { FLAG_COMPRESSED } else { 0 }, message)
        }
        (Codec::Json, None) => {
            return Err(Status::unimplemented(format!(
                "unknown method {}",
                parts.uri.path()
            )));
        }
        (Codec::Json, Some(schema)) => {
            let json = call_parts
                .compression
                .decompress(&message, max_message_size)
                .map_err(undecompressed)?;
            (0, json_to_proto(&schema.input, &json)?)
        }
    };
    let (encoding, accept) = match codec {
        Codec::Proto => (
            call_parts.compression_name.as_ref(),
            parts.headers.get(header::ACCEPT_ENCODING),
        ),
        Codec::Json => (None, None),
    };
    let headers = translate_headers(&parts.headers, encoding, accept)?;
    let mut grpc = Request::new(full(envelope(flags, &message)));
    *grpc.method_mut() = Method::POST;
    *grpc.uri_mut() = path_only(&parts.uri);
    *grpc.headers_mut() = headers;
    *grpc.extensions_mut() = parts.extensions;
    *grpc.version_mut() = parts.version;
    Ok((grpc, codec))
}

/// The services' gRPC answer to a Connect unary call, in Connect: the one
/// message bare, or the error as JSON; headers, and trailers as
/// `trailer-` headers.
async fn unary_answer<B>(
    response: Response<B>,
    codec: Codec,
    schema: Option<&MethodSchema>,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let (answer, body) = response.into_parts();
    if answer.extensions.get::<UnknownRoute>().is_some() {
        // Connect routes by URL: a path nothing serves is not found.
        return plain(
            StatusCode::NOT_FOUND,
            "not found: no service or method at this path\n",
        );
    }
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(err) => {
            return error_response(&Status::from_error(err.into()), HeaderMap::new());
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
        return error_response(&status, headers);
    }
    let messages = match split_all(collected.to_bytes()) {
        Ok(messages) => messages,
        Err(status) => return error_response(&status, headers),
    };
    let Ok([(flags, message)]) = <[_; 1]>::try_from(messages) else {
        let status = Status::internal("a unary call must answer exactly one message");
        return error_response(&status, headers);
    };
    let body = match (codec, schema) {
        (Codec::Json, Some(schema)) => match proto_to_json(&schema.output, &message) {
            Ok(json) => json,
            Err(status) => return error_response(&status, headers),
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
    response
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
    max_message_size: usize,
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
    if message.len() > max_message_size {
        return Err(too_large(max_message_size));
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
                "compression {:?} is not supported (gzip, zstd, deflate, br, snappy, identity)",
                String::from_utf8_lossy(name)
            ))
        }),
    }
}

/// The `name=value` pairs of a URL query, percent-decoded (`+` is a space).
pub(crate) fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
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
    schemas: &Schemas,
    max_message_size: usize,
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
    let schema = schemas.method(parts.uri.path());
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
            let body = boxed(Rewritten::new(
                body,
                rewrite,
                Ending::Keep,
                max_message_size,
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
        boxed(Rewritten::new(
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
