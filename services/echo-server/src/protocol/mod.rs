//! One port, every protocol: gRPC (protobuf and JSON), gRPC-Web (binary,
//! base64 text and JSON, via the tonic project's `tonic-web`) and Connect
//! (unary POST and GET, streams), each translated to gRPC in front of the
//! layers, so every call meets the same controls, limits, auth, metrics and
//! log line whichever protocol carried it. Plain gRPC passes untouched.

mod connect;
pub(crate) mod envelope;
pub(crate) mod json;
pub(crate) mod page;
mod shared;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use echo_wire::headers as grpc_header;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Frame;
use pin_project_lite::pin_project;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::StdError;
use tower::ServiceExt as _;
use tower_layer::Layer;
use tower_service::Service;

use connect::Codec;
pub(crate) use connect::form_pairs;
use envelope::{Compression, EmptyUncompressed, Ending, Rewrite, Rewritten};
use json::Schemas;
use page::Page;
use shared::{GRPC_CONTENT_TYPE, method_not_allowed, plain};

use crate::boxed::boxed;
use crate::context::Original;

const GRPC_JSON_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc+json");
const GRPC_WEB_PROTO_CONTENT_TYPE: HeaderValue =
    HeaderValue::from_static("application/grpc-web+proto");
const GRPC_WEB_JSON_CONTENT_TYPE: HeaderValue =
    HeaderValue::from_static("application/grpc-web+json");

/// What every translation needs, shared by every call.
#[derive(Debug)]
pub(crate) struct Settings {
    schemas: Schemas,
    /// The largest request message, as for gRPC (`--max-message-size`).
    max_message_size: usize,
    /// The largest answer message (`--max-send-message-size`).
    max_answer_size: usize,
    /// The page, when `--web` is on.
    page: Option<Page>,
}

/// Serves every protocol in front of gRPC services.
#[derive(Debug, Clone)]
pub(crate) struct ProtocolLayer {
    shared: Arc<Settings>,
}

impl ProtocolLayer {
    pub(crate) fn new(
        schemas: Schemas,
        max_message_size: usize,
        max_answer_size: usize,
        page: Option<Page>,
    ) -> Self {
        Self {
            shared: Arc::new(Settings {
                schemas,
                max_message_size,
                max_answer_size,
                page,
            }),
        }
    }
}

impl<S> Layer<S> for ProtocolLayer {
    type Service = Protocols<S>;

    fn layer(&self, inner: S) -> Protocols<S> {
        Protocols {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// See [`ProtocolLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Protocols<S> {
    inner: S,
    shared: Arc<Settings>,
}

/// The protocol of a request, told by its content type (and, for Connect
/// GET, its method and query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Grpc,
    GrpcJson,
    /// gRPC-Web in protobuf, binary or base64 text: `tonic-web`'s.
    GrpcWeb,
    GrpcWebJson,
    ConnectUnary(Codec),
    ConnectGet,
    ConnectStream(Codec),
    Unsupported,
}

impl Kind {
    /// The protocol's name, as reflecting the wire reports it.
    fn protocol(self) -> &'static str {
        match self {
            Self::Grpc | Self::GrpcJson => "grpc",
            Self::GrpcWeb | Self::GrpcWebJson => "grpc-web",
            Self::ConnectUnary(_) | Self::ConnectGet | Self::ConnectStream(_) => "connect",
            Self::Unsupported => "unknown",
        }
    }
}

/// Whether the body of `request` (of protocol `kind`) is enveloped messages
/// as they arrive (gRPC-Web text is base64: its envelopes are not visible in
/// the bytes; Connect unary bodies are the message itself).
fn enveloped<B>(request: &Request<B>, kind: Kind) -> bool {
    match kind {
        Kind::Grpc | Kind::GrpcJson | Kind::GrpcWebJson | Kind::ConnectStream(_) => true,
        Kind::GrpcWeb => !request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web-text")),
        _ => false,
    }
}

/// The compression `request` (of protocol `kind`) names for its enveloped
/// messages, as its header spells it.
fn message_encoding<B>(request: &Request<B>, kind: Kind) -> Option<&[u8]> {
    let encoding = match kind {
        Kind::ConnectStream(_) => request
            .headers()
            .get(&echo_wire::connect::CONTENT_ENCODING_HEADER),
        _ => request.headers().get(&grpc_header::ENCODING),
    };
    encoding
        .map(HeaderValue::as_bytes)
        .filter(|_| enveloped(request, kind))
}

/// A gRPC request whose messages are in a compression tonic lacks (brotli,
/// snappy): they go on to the services decompressed, the header gone (tonic
/// would refuse the call). Every translated request passes here.
fn decompressed_for_tonic(request: Request<Body>, max_message_size: usize) -> Request<Body> {
    let Some(compression) = request
        .headers()
        .get(&grpc_header::ENCODING)
        .and_then(|name| Compression::from_name(name.as_bytes()))
        .filter(|compression| !compression.in_tonic())
    else {
        return request;
    };
    let (mut parts, body) = request.into_parts();
    parts.headers.remove(grpc_header::ENCODING);
    let body = Rewritten::new(
        body,
        Rewrite::Decompress(compression),
        Ending::Keep,
        max_message_size,
    );
    Request::from_parts(parts, boxed(body))
}

fn classify<B>(request: &Request<B>) -> Kind {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    // The hot path first: plain gRPC is one comparison.
    if content_type == b"application/grpc" {
        return Kind::Grpc;
    }
    // Parameters (`; charset=utf-8`) do not change the protocol.
    let essence = content_type
        .split(|&byte| byte == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let essence = essence.to_ascii_lowercase();
    match essence.as_slice() {
        b"application/grpc" | b"application/grpc+proto" => Kind::Grpc,
        b"application/grpc+json" => Kind::GrpcJson,
        b"application/grpc-web"
        | b"application/grpc-web+proto"
        | b"application/grpc-web-text"
        | b"application/grpc-web-text+proto" => Kind::GrpcWeb,
        b"application/grpc-web+json" => Kind::GrpcWebJson,
        b"application/connect+proto" => Kind::ConnectStream(Codec::Proto),
        b"application/connect+json" => Kind::ConnectStream(Codec::Json),
        b"application/proto" if request.method() == Method::POST => {
            Kind::ConnectUnary(Codec::Proto)
        }
        b"application/json" if request.method() == Method::POST => Kind::ConnectUnary(Codec::Json),
        _ if request.method() == Method::GET && is_connect_query(request.uri().query()) => {
            Kind::ConnectGet
        }
        // Any other gRPC subtype names a codec the server lacks: unsupported.
        _ => Kind::Unsupported,
    }
}

/// Whether a GET's query is Connect's (it names the protocol version or the encoding).
fn is_connect_query(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.starts_with("connect=") || pair.starts_with("encoding="))
    })
}

impl<S, B> Service<Request<Body>> for Protocols<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes, Error = Status> + Send + 'static,
{
    type Response = Response<AnswerBody<B>>;
    type Error = S::Error;
    type Future = ProtocolFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let kind = classify(&request);
        let encoding = message_encoding(&request, kind);
        // zstd: an empty message may arrive as zero bytes marked compressed
        // (see [`EmptyUncompressed`]).
        let zstd = encoding == Some(b"zstd");
        // Messages in a compression tonic lacks take the translated path,
        // which decompresses them.
        let in_tonic = encoding
            .and_then(Compression::from_name)
            .is_none_or(Compression::in_tonic);
        let request = if zstd {
            request.map(|body| boxed(EmptyUncompressed::new(body)))
        } else {
            request
        };
        if kind == Kind::Grpc
            && in_tonic
            && request.version() >= Version::HTTP_2
            && request.method() == Method::POST
        {
            return ProtocolFuture::Grpc {
                inner: self.inner.call(request),
            };
        }
        // Before translation changes them: what reflecting the wire reports.
        let mut request = request;
        let original = Original {
            protocol: kind.protocol(),
            headers: request.headers().clone(),
            query: request.uri().query().map(str::to_owned),
        };
        request.extensions_mut().insert(original);
        // The service made ready is the one to call; its clone waits for the next request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone)
            .map_response(|response: Response<B>| response.map(boxed));
        let shared = Arc::clone(&self.shared);
        ProtocolFuture::Translated {
            inner: Box::pin(translate(kind, request, inner, shared)),
        }
    }
}

/// Serves a request in a protocol other than gRPC over HTTP/2.
async fn translate<S>(
    kind: Kind,
    request: Request<Body>,
    inner: S,
    shared: Arc<Settings>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    let (max, max_answer) = (shared.max_message_size, shared.max_answer_size);
    let mut inner = inner.map_request(move |request| decompressed_for_tonic(request, max));
    match kind {
        Kind::Grpc | Kind::GrpcJson | Kind::GrpcWeb | Kind::GrpcWebJson
            if request.method() != Method::POST =>
        {
            Ok(method_not_allowed(
                "POST",
                "method not allowed: gRPC and gRPC-Web calls are POST\n",
            ))
        }
        Kind::Grpc | Kind::GrpcJson if request.version() < Version::HTTP_2 => Ok(plain(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "gRPC needs HTTP/2; over HTTP/1.1 use gRPC-Web or Connect\n",
        )),
        Kind::Grpc => inner.call(request).await,
        Kind::GrpcJson => {
            let Some(schema) = shared.schemas.method(request.uri().path()) else {
                return Ok(unknown_method(request.uri().path()));
            };
            let (input, output) = (schema.input.clone(), schema.output.clone());
            let request = json_request(request, input, max, GRPC_CONTENT_TYPE);
            let response = inner.call(request).await?;
            Ok(json_response(
                response,
                output,
                max_answer,
                GRPC_JSON_CONTENT_TYPE,
            ))
        }
        Kind::GrpcWeb => {
            let mut web = tonic_web::GrpcWebLayer::new().layer(inner);
            web.call(request).await
        }
        Kind::GrpcWebJson => {
            let Some(schema) = shared.schemas.method(request.uri().path()) else {
                return Ok(unknown_method(request.uri().path()));
            };
            let (input, output) = (schema.input.clone(), schema.output.clone());
            let request = json_request(request, input, max, GRPC_WEB_PROTO_CONTENT_TYPE);
            let mut web = tonic_web::GrpcWebLayer::new().layer(inner);
            let response = web.call(request).await?;
            Ok(json_response(
                response,
                output,
                max_answer,
                GRPC_WEB_JSON_CONTENT_TYPE,
            ))
        }
        Kind::ConnectUnary(codec) => {
            connect::unary(request, Some(codec), &shared.schemas, max, |request| {
                inner.call(request)
            })
            .await
        }
        Kind::ConnectGet => {
            connect::unary(request, None, &shared.schemas, max, |request| {
                inner.call(request)
            })
            .await
        }
        Kind::ConnectStream(codec) => {
            match connect::stream_request(request, codec, &shared.schemas, max) {
                Ok((request, output)) => {
                    let response = inner.call(request).await?;
                    Ok(connect::stream_response(
                        response, codec, output, max_answer,
                    ))
                }
                Err(status) => Ok(connect::stream_error(codec, &status)),
            }
        }
        Kind::Unsupported => Ok(match &shared.page {
            Some(page) => page
                .answer(request)
                .await
                .unwrap_or_else(|request| unsupported(&request)),
            None => unsupported(&request),
        }),
    }
}

/// A gRPC JSON request (gRPC or gRPC-Web) as protobuf, sent as `content_type`;
/// the services answer it uncompressed, as only protobuf answers are compressed.
fn json_request(
    request: Request<Body>,
    input: prost_reflect::MessageDescriptor,
    max_message_size: usize,
    content_type: HeaderValue,
) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    let compression = parts
        .headers
        .remove(grpc_header::ENCODING)
        .and_then(|name| Compression::from_name(name.as_bytes()))
        .unwrap_or(Compression::Identity);
    parts.headers.remove(grpc_header::ACCEPT_ENCODING);
    parts.headers.insert(header::CONTENT_TYPE, content_type);
    let rewrite = Rewrite::JsonToProto(input, compression);
    let body = Rewritten::new(body, rewrite, Ending::Keep, max_message_size);
    Request::from_parts(parts, boxed(body))
}

/// A protobuf answer to a gRPC JSON request, in JSON, sent as `content_type`.
fn json_response<B>(
    response: Response<B>,
    output: prost_reflect::MessageDescriptor,
    max_message_size: usize,
    content_type: HeaderValue,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError>,
{
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, content_type);
    let body = Rewritten::new(
        body,
        Rewrite::ProtoToJson(output),
        Ending::Keep,
        max_message_size,
    );
    Response::from_parts(parts, boxed(body))
}

/// The gRPC answer for a method the JSON mapping does not know.
fn unknown_method(path: &str) -> Response<Body> {
    Status::unimplemented(format!("unknown method {path}")).into_http()
}

/// The answer to a request in no protocol the server speaks.
fn unsupported<B>(request: &Request<B>) -> Response<Body> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let connect_unary = content_type.as_deref().is_some_and(|content_type| {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/proto")
            || essence.eq_ignore_ascii_case("application/json")
    });
    match content_type {
        None if request.method() == Method::GET => plain(
            StatusCode::NOT_FOUND,
            "not found: this port serves gRPC, gRPC-Web and Connect calls\n",
        ),
        // A Connect unary content type with a method other than POST (GET
        // carries no content type).
        _ if connect_unary => method_not_allowed(
            "POST, GET",
            "method not allowed: Connect unary calls are POST, or GET with the message in the query\n",
        ),
        content_type => plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "unsupported content type {}: this port takes application/grpc[+proto|+json], \
                 application/grpc-web[+proto|+json], application/grpc-web-text[+proto], \
                 application/connect+proto|json, and application/proto|json (Connect unary)\n",
                content_type.as_deref().unwrap_or("(none)")
            ),
        ),
    }
}

pin_project! {
    /// A gRPC call's future as it is, or a translated call's.
    #[project = ProtocolFutureProjection]
    pub(crate) enum ProtocolFuture<F, E> {
        Grpc { #[pin] inner: F },
        Translated { inner: BoxFuture<'static, Result<Response<Body>, E>> },
    }
}

impl<F, B, E> Future for ProtocolFuture<F, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<AnswerBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match self.project() {
            ProtocolFutureProjection::Grpc { inner } => {
                ready!(inner.poll(cx)).map(|answer| answer.map(|inner| AnswerBody::Grpc { inner }))
            }
            ProtocolFutureProjection::Translated { inner } => ready!(inner.as_mut().poll(cx))
                .map(|answer| answer.map(|inner| AnswerBody::Translated { inner })),
        })
    }
}

pin_project! {
    /// A gRPC call's answer as it is (unboxed), or a translated call's.
    #[project = AnswerBodyProjection]
    pub(crate) enum AnswerBody<B> {
        Grpc { #[pin] inner: B },
        Translated { #[pin] inner: Body },
    }
}

/// Empty: CORS preflight answers have no body.
impl<B> Default for AnswerBody<B> {
    fn default() -> Self {
        Self::Translated {
            inner: Body::empty(),
        }
    }
}

impl<B> http_body::Body for AnswerBody<B>
where
    B: http_body::Body<Data = Bytes, Error = Status>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        match self.project() {
            AnswerBodyProjection::Grpc { inner } => inner.poll_frame(cx),
            AnswerBodyProjection::Translated { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Grpc { inner } => inner.is_end_stream(),
            Self::Translated { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Grpc { inner } => inner.size_hint(),
            Self::Translated { inner } => inner.size_hint(),
        }
    }
}
