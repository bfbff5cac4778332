//! Calls in gRPC-Web or Connect, and over HTTP/1.1. tonic's generated clients
//! speak gRPC over HTTP/2; a [`Link`] carries each call to one address,
//! translating it on its way out and its answer on its way back (gRPC-Web by
//! the tonic project's `tonic-web`, Connect here), so call policy, retries
//! and balancing stay the same whatever the protocol.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use echo_wire::compression::Compression;
use echo_wire::connect::{self, FLAG_END_STREAM, TRAILER_PREFIX};
use echo_wire::framing::{self, HEADER_LEN, Message, MessageSplitter};
use echo_wire::grpc_timeout;
use echo_wire::headers as grpc_header;
use echo_wire::schemas::{self, MethodSchema, Schemas};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body::Frame;
use http_body_util::BodyExt as _;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pin_project_lite::pin_project;
use prost::Message as _;
use prost_reflect::MessageDescriptor;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower_layer::Layer as _;
use tower_service::Service;

use crate::classify::BoxError;
use crate::deadline::CallDeadline;
use crate::http3::Http3;
use crate::timing::{TimedConnector, Timeline};

/// The protocol calls are made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// gRPC (HTTP/2 only).
    #[default]
    Grpc,
    /// gRPC-Web, binary (`application/grpc-web`).
    GrpcWeb,
    /// Connect: the unary protocol for unary methods, the streaming one for
    /// the rest (`application/proto`, `application/connect+proto`).
    Connect,
}

impl Protocol {
    /// Whether the protocol works over HTTP/1.1.
    pub fn allows_http1(self) -> bool {
        self != Self::Grpc
    }
}

/// The encoding of messages on the wire. Callers always hand the library
/// protobuf messages (tonic's generated code); in JSON, the link turns each
/// into its canonical proto3 JSON on the way out and back on the way in,
/// from the method's descriptors: the contract's and the health service's
/// methods go in JSON, any other in protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// Protobuf's binary encoding.
    #[default]
    Proto,
    /// Proto3 JSON.
    Json,
}

impl Codec {
    /// Its name in content types (`application/grpc+NAME`, `application/NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Proto => "proto",
            Self::Json => "json",
        }
    }
}

/// How calls reach one address: tonic's HTTP/2 channel as it is for gRPC,
/// or a translation over HTTP/2 or HTTP/1.1. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Link {
    kind: LinkKind,
    /// Connect: call methods without side effects with GET.
    connect_get: bool,
    codec: Codec,
    /// A request compression tonic lacks, applied here.
    compress: Option<Compression>,
    /// Where each call's phases go, when timed.
    timing: Option<Timeline>,
}

#[derive(Clone, Debug)]
enum LinkKind {
    Grpc(Channel),
    Translated { protocol: Protocol, http: Http },
}

/// An HTTP connection to one address.
#[derive(Clone, Debug)]
enum Http {
    H2(Channel),
    /// Behind an `Arc`: the pooled client is large and cloned per call.
    H1(Arc<Http1>),
    H3(Arc<Http3>),
}

/// A pooled HTTP/1.1 client for one address.
#[derive(Debug)]
struct Http1 {
    client: Http1Client,
    /// `scheme://authority` of the address: HTTP/1.1 requests need it.
    origin: Uri,
}

/// TLS for HTTP/1.1 and HTTP/3 connections: the rustls configuration, and
/// the name to expect in the server's certificate (the address's host when none).
#[derive(Debug)]
pub(crate) struct LinkTls {
    pub(crate) config: rustls::ClientConfig,
    pub(crate) server_name: Option<rustls::pki_types::ServerName<'static>>,
}

/// A pool of HTTP/1.1 connections, plaintext or TLS (or either, timed).
#[derive(Debug)]
enum Http1Client {
    Plain(PooledClient<HttpConnector, Body>),
    Tls(PooledClient<HttpsConnector<HttpConnector>, Body>),
    Timed(PooledClient<TimedConnector, Body>),
}

impl Link {
    /// Calls in `protocol` over `channel` (HTTP/2).
    pub(crate) fn http2(channel: Channel, protocol: Protocol) -> Self {
        let kind = match protocol {
            Protocol::Grpc => LinkKind::Grpc(channel),
            protocol => LinkKind::Translated {
                protocol,
                http: Http::H2(channel),
            },
        };
        Self {
            kind,
            connect_get: false,
            codec: Codec::Proto,
            compress: None,
            timing: None,
        }
    }

    /// Calls in `protocol` (not gRPC) over HTTP/1.1 to `origin`
    /// (`http://host:port`, or `https://` with `tls`).
    pub(crate) fn http1(
        origin: Uri,
        protocol: Protocol,
        connect_timeout: Option<Duration>,
        tls: Option<LinkTls>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(connect_timeout);
        let builder = PooledClient::builder(TokioExecutor::new());
        let client = match tls {
            Some(tls) => {
                connector.enforce_http(false);
                let mut https = HttpsConnectorBuilder::new()
                    .with_tls_config(tls.config)
                    .https_only();
                if let Some(name) = tls.server_name {
                    https = https.with_server_name_resolver(FixedServerNameResolver::new(name));
                }
                Http1Client::Tls(builder.build(https.enable_http1().wrap_connector(connector)))
            }
            None => Http1Client::Plain(builder.build(connector)),
        };
        Self {
            kind: LinkKind::Translated {
                protocol,
                http: Http::H1(Arc::new(Http1 { client, origin })),
            },
            connect_get: false,
            codec: Codec::Proto,
            compress: None,
            timing: None,
        }
    }

    /// [`Link::http1`], connected by `connector`, which records each phase.
    pub(crate) fn http1_timed(origin: Uri, protocol: Protocol, connector: TimedConnector) -> Self {
        let client = PooledClient::builder(TokioExecutor::new()).build(connector);
        Self {
            kind: LinkKind::Translated {
                protocol,
                http: Http::H1(Arc::new(Http1 {
                    client: Http1Client::Timed(client),
                    origin,
                })),
            },
            connect_get: false,
            codec: Codec::Proto,
            compress: None,
            timing: None,
        }
    }

    /// Calls in `protocol` over HTTP/3 to `origin` (`https://host:port`);
    /// each connection's phases go to `timing`.
    pub(crate) fn http3(
        origin: Uri,
        protocol: Protocol,
        connect_timeout: Option<Duration>,
        tls: LinkTls,
        timing: Option<Timeline>,
    ) -> Result<Self, BoxError> {
        Ok(Self {
            kind: LinkKind::Translated {
                protocol,
                http: Http::H3(Arc::new(Http3::new(
                    origin,
                    tls.config,
                    tls.server_name,
                    connect_timeout,
                    timing,
                )?)),
            },
            connect_get: false,
            codec: Codec::Proto,
            compress: None,
            timing: None,
        })
    }

    /// Connects now when the link connects per call (HTTP/3), so that an
    /// unreachable server fails here rather than at the first call.
    pub(crate) async fn connect_now(&self) -> Result<(), BoxError> {
        match &self.kind {
            LinkKind::Translated {
                http: Http::H3(http3),
                ..
            } => http3.sender().await.map(drop),
            _ => Ok(()),
        }
    }

    /// Compresses request messages with `compression` (one tonic lacks:
    /// brotli or snappy).
    pub(crate) fn compress(mut self, compression: Option<Compression>) -> Self {
        self.compress = compression;
        self
    }

    /// Records each call's phases in `timing`.
    pub(crate) fn timing(mut self, timing: Option<Timeline>) -> Self {
        self.timing = timing;
        self
    }

    /// Sends messages in `codec`.
    pub(crate) fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// In Connect, calls methods marked `NO_SIDE_EFFECTS` with GET (the
    /// message in the query, so that caches and CDNs can serve them).
    pub(crate) fn connect_get(mut self, get: bool) -> Self {
        self.connect_get = get;
        self
    }
}

impl Service<Request<Body>> for Link {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<Response<Body>, BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.kind {
            LinkKind::Grpc(channel)
            | LinkKind::Translated {
                http: Http::H2(channel),
                ..
            } => channel.poll_ready(cx).map_err(Into::into),
            LinkKind::Translated {
                http: Http::H1(_) | Http::H3(_),
                ..
            } => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The deadline on the wire: what is left of it as the call is sent.
        let remaining = request
            .extensions()
            .get::<CallDeadline>()
            .map(|deadline| deadline.remaining());
        let wire_timeout = match (&self.kind, remaining) {
            (
                LinkKind::Translated {
                    protocol: Protocol::Connect,
                    ..
                },
                Some(remaining),
            ) => Some((
                connect::TIMEOUT_HEADER,
                // Rounded up, as grpc-timeout is: never a shorter deadline than asked.
                HeaderValue::from(remaining.as_nanos().div_ceil(1_000_000) as u64),
            )),
            (_, Some(remaining)) => Some((grpc_timeout::HEADER, grpc_timeout::encode(remaining))),
            (_, None) => None,
        };
        if let Some((name, value)) = wire_timeout {
            request.headers_mut().insert(name, value);
        }
        // In JSON, each message is turned into JSON before the protocol's
        // translation, and back after it.
        // A method whose descriptors the library lacks (a reflection call,
        // another server's service) goes in protobuf.
        let json = match self.codec {
            Codec::Proto => None,
            Codec::Json => SCHEMAS.method(request.uri().path()),
        };
        let output = json.map(|schema| {
            request = to_json(std::mem::take(&mut request), &schema.input);
            schema.output.clone()
        });
        let codec = if json.is_some() {
            Codec::Json
        } else {
            Codec::Proto
        };
        if let Some(compression) = self.compress {
            request = compressed(request, compression);
        }
        // Servers may answer in the compression they were sent (Connect's do).
        let decompress = self.compress.is_some();
        let connect_get = self.connect_get;
        let mut send = |request: Request<Body>| -> Self::Future {
            match &mut self.kind {
                LinkKind::Grpc(channel) => {
                    let call = channel.call(request);
                    Box::pin(async move { Ok(call.await?.map(Body::new)) })
                }
                LinkKind::Translated { protocol, http } => {
                    let http = http.clone();
                    match protocol {
                        Protocol::GrpcWeb => Box::pin(grpc_web(http, request, codec)),
                        Protocol::Connect => {
                            Box::pin(connect_call(http, request, connect_get, codec))
                        }
                        // gRPC as it is, over HTTP/3.
                        Protocol::Grpc => Box::pin(http.send(request)),
                    }
                }
            }
        };
        // Timed as gRPC, around the translation: the phases are the call's
        // whatever the protocol.
        let call = match self.timing.clone() {
            Some(timeline) if timeline.times_calls() => timeline.call(request, send),
            _ => send(request),
        };
        if output.is_none() && !decompress {
            return call;
        }
        Box::pin(async move {
            let mut response = call.await?;
            if decompress {
                response = decompressed(response);
            }
            Ok(match output {
                None => response,
                Some(output) => from_json(response, output),
            })
        })
    }
}

/// A gRPC answer in a compression tonic lacks, decompressed (others pass).
fn decompressed(response: Response<Body>) -> Response<Body> {
    let compression = compression_of(response.headers(), &grpc_header::ENCODING);
    if compression.in_tonic() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(grpc_header::ENCODING);
    let body =
        Envelopes::new(body, Translate::Messages, compression).converting(Convert::Decompress);
    Response::from_parts(parts, Body::new(body))
}

/// A gRPC request whose messages go on compressed with `compression`.
fn compressed(request: Request<Body>, compression: Compression) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    let already = compression_of(&parts.headers, &grpc_header::ENCODING);
    parts.headers.insert(
        grpc_header::ENCODING,
        HeaderValue::from_static(compression.name()),
    );
    // And answers are welcome in it too.
    let accept = match parts.headers.get(grpc_header::ACCEPT_ENCODING) {
        Some(accept) => format!(
            "{},{}",
            accept.to_str().unwrap_or_default(),
            compression.name()
        ),
        None => compression.name().to_owned(),
    };
    if let Ok(accept) = HeaderValue::try_from(accept) {
        parts.headers.insert(grpc_header::ACCEPT_ENCODING, accept);
    }
    let body = Envelopes::new(body, Translate::Messages, already)
        .converting(Convert::Compress(compression));
    Request::from_parts(parts, Body::new(body))
}

/// A gRPC request whose protobuf messages go on in JSON.
fn to_json(request: Request<Body>, input: &MessageDescriptor) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    let compression = compression_of(&parts.headers, &grpc_header::ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc+json"),
    );
    let body = Envelopes::new(body, Translate::Messages, compression)
        .converting(Convert::ToJson(input.clone()));
    Request::from_parts(parts, Body::new(body))
}

/// A gRPC answer whose JSON messages go on as protobuf.
fn from_json(response: Response<Body>, output: MessageDescriptor) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let compression = compression_of(&parts.headers, &grpc_header::ENCODING);
    let body = Envelopes::new(body, Translate::Messages, compression)
        .converting(Convert::FromJson(output));
    Response::from_parts(parts, Body::new(body))
}

impl Http {
    async fn send(self, mut request: Request<Body>) -> Result<Response<Body>, BoxError> {
        match self {
            Self::H2(mut channel) => {
                *request.version_mut() = http::Version::HTTP_2;
                std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                Ok(channel.call(request).await?)
            }
            Self::H1(http1) => {
                let mut parts = http1.origin.clone().into_parts();
                parts.path_and_query = Some(
                    request
                        .uri()
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| PathAndQuery::from_static("/")),
                );
                *request.uri_mut() = Uri::from_parts(parts)?;
                *request.version_mut() = http::Version::HTTP_11;
                let response = match &http1.client {
                    Http1Client::Plain(client) => client.request(request).await?,
                    Http1Client::Tls(client) => client.request(request).await?,
                    Http1Client::Timed(client) => client.request(request).await?,
                };
                Ok(response.map(Body::new))
            }
            Self::H3(http3) => http3.send(request).await,
        }
    }
}

/// A gRPC call sent as gRPC-Web (tonic-web's client translation).
async fn grpc_web(
    http: Http,
    request: Request<Body>,
    codec: Codec,
) -> Result<Response<Body>, BoxError> {
    let mut web =
        tonic_web::GrpcWebClientLayer::new().layer(tower::service_fn(
            move |mut request: Request<_>| {
                let http = http.clone();
                async move {
                    if codec != Codec::Proto {
                        // tonic-web names the binary codec only.
                        let content_type = format!("application/grpc-web+{}", codec.name());
                        request
                            .headers_mut()
                            .insert(header::CONTENT_TYPE, HeaderValue::try_from(content_type)?);
                    }
                    let response = http.send(request.map(Body::new)).await?;
                    let compression = compression_of(response.headers(), &grpc_header::ENCODING);
                    Ok::<_, BoxError>(response.map(|body| {
                        Body::new(Envelopes::new(body, Translate::GrpcWeb, compression))
                    }))
                }
            },
        ));
    let response = web.call(request).await?;
    Ok(response.map(Body::new))
}

/// The methods of the contract and the health service: how each streams
/// (the Connect unary protocol is for unary methods), which have no side
/// effects (Connect GET), which answer once, and their JSON mapping.
pub(crate) static SCHEMAS: Schemas = Schemas::new(&[
    grpc_echo::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
]);

/// A gRPC call sent in Connect.
/// With `get`, a method without side effects is called with GET.
async fn connect_call(
    http: Http,
    request: Request<Body>,
    get: bool,
    codec: Codec,
) -> Result<Response<Body>, BoxError> {
    // The Connect unary protocol is for unary methods, the streaming one for the rest.
    let schema = SCHEMAS.method(request.uri().path());
    let unary = schema.is_some_and(MethodSchema::is_unary);
    let get = get && schema.is_some_and(|schema| schema.no_side_effects);
    let (mut parts, body) = request.into_parts();
    let encoding = parts.headers.remove(grpc_header::ENCODING);
    let accept = parts.headers.remove(grpc_header::ACCEPT_ENCODING);
    parts.headers.remove(header::TE);
    parts.headers.insert(
        connect::PROTOCOL_VERSION_HEADER,
        HeaderValue::from_static(connect::PROTOCOL_VERSION),
    );
    if !unary {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::try_from(format!("application/connect+{}", codec.name()))?,
        );
        if let Some(encoding) = encoding {
            parts
                .headers
                .insert(connect::CONTENT_ENCODING_HEADER, encoding);
        }
        if let Some(accept) = accept {
            parts
                .headers
                .insert(connect::ACCEPT_ENCODING_HEADER, accept);
        }
        let response = http.send(Request::from_parts(parts, body)).await?;
        return stream_answer(response, codec).await;
    }

    // Unary: the one enveloped message, bare.
    let mut messages = MessageSplitter::default();
    messages.push(body.collect().await?.to_bytes());
    let Some(Message {
        compressed,
        bytes: message,
    }) = messages.next_message()
    else {
        return Err(Status::internal("a unary request without its message").into());
    };
    let encoding = encoding.filter(|_| compressed);
    if let Some(accept) = accept {
        parts.headers.insert(header::ACCEPT_ENCODING, accept);
    }
    let body = if get {
        // The message goes in the query, and the request has no body.
        let mut query = format!(
            "connect=v1&encoding={}&base64=1&message={}",
            codec.name(),
            URL_SAFE_NO_PAD.encode(&message)
        );
        if let Some(encoding) = &encoding {
            query.push_str("&compression=");
            query.push_str(encoding.to_str().unwrap_or("identity"));
        }
        let path_and_query = PathAndQuery::try_from(format!("{}?{query}", parts.uri.path()))?;
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(path_and_query);
        parts.uri = Uri::from_parts(uri)?;
        parts.method = http::Method::GET;
        parts.headers.remove(header::CONTENT_TYPE);
        full(Bytes::new())
    } else {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::try_from(format!("application/{}", codec.name()))?,
        );
        if let Some(encoding) = encoding {
            parts.headers.insert(header::CONTENT_ENCODING, encoding);
        }
        full(message)
    };
    let response = http.send(Request::from_parts(parts, body)).await?;
    let (mut answer, body) = response.into_parts();
    let collected = body.collect().await?.to_bytes();
    // Trailers come as `trailer-` headers; the rest are the headers.
    let mut trailers = HeaderMap::new();
    let mut headers = HeaderMap::new();
    let mut last = None;
    for (name, value) in std::mem::take(&mut answer.headers) {
        // A name comes once, before all of its values.
        last = name.or(last);
        let Some(name) = last.clone() else { continue };
        match name
            .as_str()
            .strip_prefix(TRAILER_PREFIX)
            .map(|t| HeaderName::from_bytes(t.as_bytes()))
        {
            Some(Ok(trailer)) => trailers.append(trailer, value),
            _ => headers.append(name, value),
        };
    }
    answer.headers = headers;
    if !answer.status.is_success() {
        // The error body is in the answer's content encoding.
        let compression = compression_of(&answer.headers, &header::CONTENT_ENCODING);
        let status = compression
            .decompress(&collected, MAX_END_MESSAGE)
            .map(|body| connect_error(answer.status.as_u16(), &body))
            .unwrap_or_else(|error| Status::internal(format!("the error answer: {error}")));
        return Ok(failed_answer(answer, status, trailers));
    }
    if let Some(status) = not_in_codec(&answer, "application/", codec) {
        return Ok(failed_answer(answer, status, trailers));
    }
    let compressed = match answer.headers.remove(header::CONTENT_ENCODING) {
        Some(encoding) if encoding != "identity" => {
            answer.headers.insert(grpc_header::ENCODING, encoding);
            true
        }
        _ => false,
    };
    answer.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    answer.headers.remove(header::CONTENT_LENGTH);
    trailers.insert(grpc_header::STATUS, HeaderValue::from_static("0"));
    let body = http_body_util::Full::new(framing::envelope(u8::from(compressed), &collected))
        .map_err(|never| match never {})
        .with_trailers(std::future::ready(Some(Ok(trailers))));
    Ok(Response::from_parts(answer, Body::new(body)))
}

/// A Connect stream's answer as gRPC: its messages, then its end-of-stream
/// message as trailers.
pub(crate) async fn stream_answer(
    response: Response<Body>,
    codec: Codec,
) -> Result<Response<Body>, BoxError> {
    let (mut answer, body) = response.into_parts();
    if !answer.status.is_success() {
        let collected = body.collect().await?.to_bytes();
        let status = connect_error(answer.status.as_u16(), &collected);
        return Ok(failed_answer(answer, status, HeaderMap::new()));
    }
    if let Some(status) = not_in_codec(&answer, "application/connect+", codec) {
        return Ok(failed_answer(answer, status, HeaderMap::new()));
    }
    let compression = compression_of(&answer.headers, &connect::CONTENT_ENCODING_HEADER);
    if let Some(encoding) = answer.headers.remove(connect::CONTENT_ENCODING_HEADER) {
        answer.headers.insert(grpc_header::ENCODING, encoding);
    }
    answer.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(Response::from_parts(
        answer,
        Body::new(Envelopes::new(body, Translate::Connect, compression)),
    ))
}

/// The compression `name` in `headers` says the messages are in (identity
/// when it names none this library knows: the message that needs it fails).
fn compression_of(headers: &HeaderMap, name: &HeaderName) -> Compression {
    headers
        .get(name)
        .and_then(|value| Compression::from_name(value.as_bytes()))
        .unwrap_or(Compression::Identity)
}

/// A Connect answer that failed, as gRPC: its headers, then a body of
/// nothing but trailers (the status and the answer's own trailers), so that
/// a caller sees headers and trailers apart, as in gRPC.
fn failed_answer(
    mut answer: http::response::Parts,
    status: Status,
    trailers: HeaderMap,
) -> Response<Body> {
    let mut end = status.into_http::<Body>().into_parts().0.headers;
    end.remove(header::CONTENT_TYPE);
    for (name, value) in &trailers {
        end.append(name, value.clone());
    }
    answer.status = http::StatusCode::OK;
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        connect::CONTENT_ENCODING_HEADER,
    ] {
        answer.headers.remove(name);
    }
    answer.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let body = http_body_util::Empty::new()
        .map_err(|never| match never {})
        .with_trailers(std::future::ready(Some(Ok(end))));
    Response::from_parts(answer, Body::new(body))
}

/// Whether `headers` give the content type `prefix` then `codec`'s name
/// (parameters such as `; charset=utf-8` aside).
fn in_codec(headers: &HeaderMap, prefix: &str, codec: Codec) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix(prefix))
        .is_some_and(|rest| rest.split(';').next().map(str::trim) == Some(codec.name()))
}

/// The status of an answer whose content type is not `prefix` then
/// `codec`'s name: INTERNAL when it is Connect in the other codec, else from
/// its HTTP status, as the Connect protocol maps it. `None` when it is.
fn not_in_codec(answer: &http::response::Parts, prefix: &str, codec: Codec) -> Option<Status> {
    if in_codec(&answer.headers, prefix, codec) {
        return None;
    }
    let (http_status, headers) = (answer.status.as_u16(), &answer.headers);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let other = match codec {
        Codec::Proto => Codec::Json,
        Codec::Json => Codec::Proto,
    };
    if in_codec(headers, prefix, other) {
        return Some(Status::internal(format!(
            "the answer is in another codec than asked (content type {content_type:?})"
        )));
    }
    let code = connect::code_of_http_status(http_status);
    Some(Status::new(
        Code::from(code),
        format!("the answer is not Connect (HTTP {http_status}, content type {content_type:?})"),
    ))
}

/// The status a Connect error body stands for; what it lacks (the body
/// itself, or a code this library knows) comes from its HTTP status.
pub(crate) fn connect_error(http_status: u16, body: &[u8]) -> Status {
    let fallback = Code::from(connect::code_of_http_status(http_status));
    let Ok(error) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Status::new(fallback, format!("HTTP {http_status}"));
    };
    status_of(&error, fallback)
}

/// The status of a Connect error object (`code`, `message`, `details`).
/// An error is never OK: a missing, unknown or `ok` code is `fallback`.
fn status_of(error: &serde_json::Value, fallback: Code) -> Status {
    let code = error["code"]
        .as_str()
        .and_then(connect::code_of)
        .filter(|&code| code != Code::Ok as i32)
        .unwrap_or(fallback as i32);
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    let details: Vec<prost_types::Any> = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|detail| {
            let value = detail["value"].as_str()?.trim_end_matches('=');
            Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{}", detail["type"].as_str()?),
                value: STANDARD_NO_PAD.decode(value).ok()?,
            })
        })
        .collect();
    if details.is_empty() {
        return Status::new(Code::from(code), message);
    }
    let encoded = tonic_types::pb::Status {
        code,
        message: message.clone(),
        details,
    }
    .encode_to_vec();
    Status::with_details(Code::from(code), message, encoded.into())
}

/// The trailers of a Connect end-of-stream message.
pub(crate) fn end_stream_trailers(json: &[u8]) -> HeaderMap {
    let end: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    // `"error": null` is no error.
    let mut trailers = match end.get("error").filter(|error| !error.is_null()) {
        Some(error) => {
            let mut status = status_of(error, Code::Unknown)
                .into_http::<Body>()
                .into_parts()
                .0
                .headers;
            status.remove(header::CONTENT_TYPE);
            status
        }
        None => HeaderMap::from_iter([(grpc_header::STATUS, HeaderValue::from_static("0"))]),
    };
    for (name, values) in end["metadata"].as_object().into_iter().flatten() {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in values.as_array().into_iter().flatten() {
            if let Some(value) = value.as_str().and_then(|v| HeaderValue::from_str(v).ok()) {
                trailers.append(name.clone(), value);
            }
        }
    }
    trailers
}

/// The trailers of a gRPC-Web trailers message: `name: value` lines, a
/// name as often as it has values.
fn web_trailers(block: &[u8]) -> Result<HeaderMap, Status> {
    let mut trailers = HeaderMap::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let parsed = line.iter().position(|&b| b == b':').and_then(|colon| {
            let name = HeaderName::from_bytes(&line[..colon].to_ascii_lowercase()).ok()?;
            let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
            Some((name, value))
        });
        let Some((name, value)) = parsed else {
            return Err(Status::internal(format!(
                "a gRPC-Web trailer that is not `name: value`: {:?}",
                String::from_utf8_lossy(line)
            )));
        };
        trailers.append(name, value);
    }
    Ok(trailers)
}

/// What an answer's envelopes are translated from.
#[derive(Debug, Clone, Copy)]
enum Translate {
    /// gRPC-Web: its trailers message (compressed or not) becomes trailers
    /// here, as tonic-web's own reading keeps one value a name and no
    /// compressed trailers.
    GrpcWeb,
    /// Connect streaming: its end-of-stream message (compressed or not)
    /// becomes trailers, and the body must end with one.
    Connect,
    /// gRPC: messages only (trailers are HTTP's).
    Messages,
}

/// What is done to each message on its way.
#[derive(Debug, Clone)]
enum Convert {
    /// Protobuf to JSON, as the type describes.
    ToJson(MessageDescriptor),
    /// JSON to protobuf.
    FromJson(MessageDescriptor),
    /// Compressed with this (the flag set).
    Compress(Compression),
    /// Decompressed (the flag cleared).
    Decompress,
}

impl Convert {
    /// The converted message in its envelope: a request compressed as it
    /// came (the server may insist), an answer for tonic uncompressed.
    fn envelope(&self, flags: u8, compression: Compression, message: &[u8]) -> Bytes {
        match self {
            Self::ToJson(_) if flags & FLAG_COMPRESSED != 0 => {
                framing::envelope(FLAG_COMPRESSED, &compression.compress(message))
            }
            Self::Compress(compression) => {
                framing::envelope(FLAG_COMPRESSED, &compression.compress(message))
            }
            _ => framing::envelope(0, message),
        }
    }

    fn apply(&self, message: &[u8]) -> Result<Bytes, Status> {
        match self {
            Self::Compress(_) | Self::Decompress => Ok(Bytes::copy_from_slice(message)),
            Self::ToJson(desc) => schemas::proto_to_json(desc, message)
                .map_err(|error| Status::internal(error.to_string())),
            Self::FromJson(desc) => schemas::json_to_proto(desc, message)
                .map_err(|error| Status::internal(format!("the answer: {error}"))),
        }
    }
}

/// Flag of an envelope whose payload is compressed.
const FLAG_COMPRESSED: u8 = 0x01;
/// Flag of gRPC-Web's trailers envelope.
const FLAG_WEB_TRAILERS: u8 = 0x80;
/// A trailers or end-of-stream message larger than this is refused.
const MAX_END_MESSAGE: usize = 4 << 20;
/// A message converted to or from JSON larger than this (decompressed) is
/// refused; tonic then holds the caller's own limit.
const MAX_MESSAGE: usize = 64 << 20;

pin_project! {
    /// An answer's body cut into whole envelopes: messages pass as they
    /// came; the one that ends the stream is read as `translate` says.
    struct Envelopes {
        #[pin]
        inner: Body,
        messages: MessageSplitter,
        translate: Translate,
        compression: Compression,
        convert: Option<Convert>,
        // A frame that waits for the data before it.
        held: Option<Frame<Bytes>>,
        ended: bool,
    }
}

impl Envelopes {
    fn new(inner: Body, translate: Translate, compression: Compression) -> Self {
        Self {
            inner,
            messages: MessageSplitter::default(),
            translate,
            compression,
            convert: None,
            held: None,
            ended: false,
        }
    }

    /// Each message converted as `convert` says.
    fn converting(mut self, convert: Convert) -> Self {
        self.convert = Some(convert);
        self
    }
}

/// The payload of an envelope, decompressed (up to `max` bytes) when its
/// flags say so.
fn payload_of(envelope: &Bytes, compression: Compression, max: usize) -> Result<Bytes, Status> {
    let payload = envelope.slice(HEADER_LEN..);
    if envelope[0] & FLAG_COMPRESSED == 0 {
        return Ok(payload);
    }
    compression
        .decompress(&payload, max)
        .map_err(|error| Status::internal(format!("a message: {error}")))
}

impl http_body::Body for Envelopes {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        loop {
            if let Some(frame) = this.held.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if *this.ended {
                return Poll::Ready(None);
            }
            if let Some(envelope) = this.messages.next_envelope() {
                let flags = envelope[0];
                let frame = match *this.translate {
                    Translate::Connect if flags & FLAG_END_STREAM != 0 => {
                        *this.ended = true;
                        payload_of(&envelope, *this.compression, MAX_END_MESSAGE)
                            .map(|json| Frame::trailers(end_stream_trailers(&json)))
                    }
                    Translate::GrpcWeb if flags & FLAG_WEB_TRAILERS != 0 => {
                        *this.ended = true;
                        payload_of(&envelope, *this.compression, MAX_END_MESSAGE)
                            .and_then(|block| web_trailers(&block))
                            .map(Frame::trailers)
                    }
                    _ => match this.convert {
                        Some(convert) => payload_of(&envelope, *this.compression, MAX_MESSAGE)
                            .and_then(|message| convert.apply(&message))
                            .map(|message| {
                                Frame::data(convert.envelope(flags, *this.compression, &message))
                            }),
                        None => Ok(Frame::data(envelope)),
                    },
                };
                return Poll::Ready(Some(frame));
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.messages.push(data),
                    // HTTP trailers (gRPC's) pass after what is left of the
                    // messages (only a cut one can be).
                    Err(frame) => {
                        let rest = this.messages.take_rest();
                        if rest.is_empty() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        *this.held = Some(frame);
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                },
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                None => {
                    *this.ended = true;
                    let rest = this.messages.take_rest();
                    return Poll::Ready(match this.translate {
                        Translate::Connect => Some(Err(Status::internal(
                            "the Connect stream ended without its end-of-stream message",
                        ))),
                        // Whatever is left (a cut envelope) is tonic's to refuse.
                        Translate::GrpcWeb | Translate::Messages => {
                            (!rest.is_empty()).then(|| Ok(Frame::data(rest)))
                        }
                    });
                }
            }
        }
    }
}

fn full(bytes: Bytes) -> Body {
    Body::new(http_body_util::Full::new(bytes).map_err(|never| match never {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_methods_are_known_by_shape() {
        assert!(
            SCHEMAS
                .method("/echo.v1.EchoService/Echo")
                .unwrap()
                .is_unary()
        );
        assert!(
            SCHEMAS
                .method("/grpc.health.v1.Health/Check")
                .unwrap()
                .is_unary()
        );
        let stream = SCHEMAS.method("/echo.v1.EchoService/ServerStream").unwrap();
        assert!(stream.server_streaming && !stream.client_streaming);
        assert!(SCHEMAS.method("/no.Such/Method").is_none());
        let get = "/connectrpc.conformance.v1.ConformanceService/IdempotentUnary";
        assert!(SCHEMAS.method(get).unwrap().no_side_effects);
        let unary = "/connectrpc.conformance.v1.ConformanceService/Unary";
        assert!(!SCHEMAS.method(unary).unwrap().no_side_effects);
    }

    #[test]
    fn a_connect_error_keeps_its_code_message_and_details() {
        let body = br#"{"code":"not_found","message":"gone","details":[{"type":"google.rpc.ErrorInfo","value":"CgZyZWFzb24"}]}"#;
        let status = connect_error(404, body);
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "gone");
        let details = tonic_types::pb::Status::decode(status.details()).unwrap();
        assert_eq!(
            details.details[0].type_url,
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        assert_eq!(connect_error(503, b"<html>").code(), Code::Unavailable);
    }

    /// An error whose code said `ok` made a failed call a success (found
    /// writing the `connect_answers` fuzz target, which checks it too).
    #[test]
    fn an_error_that_says_ok_is_unknown() {
        assert_eq!(
            connect_error(500, br#"{"code":"ok"}"#).code(),
            Code::Unknown
        );
        let trailers = end_stream_trailers(br#"{"error":{"code":"ok","message":"m"}}"#);
        assert_eq!(trailers[grpc_header::STATUS], "2");
    }
}
