//! Calls in gRPC-Web or Connect, and over HTTP/1.1. tonic's generated clients
//! speak gRPC over HTTP/2; a [`Link`] carries each call to one address,
//! translating it on its way out and its answer on its way back (gRPC-Web by
//! the tonic project's `tonic-web`, Connect here), so call policy, retries
//! and balancing stay the same whatever the protocol.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use bytes::Bytes;
use echo_wire::connect::{self, FLAG_END_STREAM, TRAILER_PREFIX};
use echo_wire::framing::{self, HEADER_LEN, Message, MessageSplitter};
use echo_wire::grpc_timeout;
use echo_wire::headers as grpc_header;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body::Frame;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client as Http1Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pin_project_lite::pin_project;
use prost::Message as _;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower_layer::Layer as _;
use tower_service::Service;

use crate::classify::BoxError;
use crate::deadline::CallDeadline;

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

/// How calls reach one address: tonic's HTTP/2 channel as it is for gRPC,
/// or a translation over HTTP/2 or HTTP/1.1. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Link {
    kind: LinkKind,
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
}

/// A pooled HTTP/1.1 client for one address.
#[derive(Debug)]
struct Http1 {
    client: Http1Client<HttpConnector, Body>,
    /// `scheme://authority` of the address: HTTP/1.1 requests need it.
    origin: Uri,
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
        Self { kind }
    }

    /// Calls in `protocol` (not gRPC) over HTTP/1.1 to `origin` (`http://host:port`).
    pub(crate) fn http1(
        origin: Uri,
        protocol: Protocol,
        connect_timeout: Option<Duration>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(connect_timeout);
        let client = Http1Client::builder(TokioExecutor::new()).build(connector);
        Self {
            kind: LinkKind::Translated {
                protocol,
                http: Http::H1(Arc::new(Http1 { client, origin })),
            },
        }
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
                http: Http::H1(_), ..
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
        match &mut self.kind {
            LinkKind::Grpc(channel) => {
                let call = channel.call(request);
                Box::pin(async move { Ok(call.await?) })
            }
            LinkKind::Translated { protocol, http } => {
                let http = http.clone();
                match protocol {
                    Protocol::GrpcWeb => Box::pin(grpc_web(http, request)),
                    Protocol::Connect | Protocol::Grpc => Box::pin(connect_call(http, request)),
                }
            }
        }
    }
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
                let response = http1.client.request(request).await?;
                Ok(response.map(Body::new))
            }
        }
    }
}

/// A gRPC call sent as gRPC-Web (tonic-web's client translation).
async fn grpc_web(http: Http, request: Request<Body>) -> Result<Response<Body>, BoxError> {
    let mut web = tonic_web::GrpcWebClientLayer::new().layer(tower::service_fn(
        move |request: Request<_>| http.clone().send(request.map(Body::new)),
    ));
    let response = web.call(request).await?;
    Ok(response.map(Body::new))
}

/// The unary methods of the contract and the health service: the Connect
/// unary protocol is for them, the streaming one for every other method.
static UNARY_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    [
        grpc_echo::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ]
    .into_iter()
    .filter_map(|set| prost_types::FileDescriptorSet::decode(set).ok())
    .flat_map(|set| set.file)
    .flat_map(|file| {
        let package = file.package().to_owned();
        file.service.into_iter().flat_map(move |service| {
            let prefix = format!("/{package}.{}/", service.name());
            service
                .method
                .into_iter()
                .filter(|method| !method.client_streaming() && !method.server_streaming())
                .map(move |method| format!("{prefix}{}", method.name()))
        })
    })
    .collect()
});

/// A gRPC call sent in Connect.
async fn connect_call(http: Http, request: Request<Body>) -> Result<Response<Body>, BoxError> {
    let unary = UNARY_METHODS.contains(request.uri().path());
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
            HeaderValue::from_static("application/connect+proto"),
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
        return stream_answer(response).await;
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
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/proto"),
    );
    if let Some(encoding) = encoding.filter(|_| compressed) {
        parts.headers.insert(header::CONTENT_ENCODING, encoding);
    }
    if let Some(accept) = accept {
        parts.headers.insert(header::ACCEPT_ENCODING, accept);
    }
    let response = http.send(Request::from_parts(parts, full(message))).await?;
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
        let status = connect_error(answer.status.as_u16(), &collected);
        let mut response = status.into_http::<Body>();
        response.headers_mut().extend(trailers);
        return Ok(response);
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
pub(crate) async fn stream_answer(response: Response<Body>) -> Result<Response<Body>, BoxError> {
    let (mut answer, body) = response.into_parts();
    if !answer.status.is_success() {
        let collected = body.collect().await?.to_bytes();
        return Ok(connect_error(answer.status.as_u16(), &collected).into_http());
    }
    if let Some(encoding) = answer.headers.remove(connect::CONTENT_ENCODING_HEADER) {
        answer.headers.insert(grpc_header::ENCODING, encoding);
    }
    answer.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(Response::from_parts(
        answer,
        Body::new(ConnectStream {
            inner: body,
            messages: MessageSplitter::default(),
            ended: false,
        }),
    ))
}

/// The status a Connect error body (or, without one, its HTTP status) stands for.
pub(crate) fn connect_error(http_status: u16, body: &[u8]) -> Status {
    let Ok(error) = serde_json::from_slice::<serde_json::Value>(body) else {
        let code = connect::code_of_http_status(http_status);
        return Status::new(Code::from(code), format!("HTTP {http_status}"));
    };
    status_of(&error)
}

/// The status of a Connect error object (`code`, `message`, `details`).
/// An error is never OK: a missing, unknown or `ok` code is UNKNOWN.
fn status_of(error: &serde_json::Value) -> Status {
    let code = error["code"]
        .as_str()
        .and_then(connect::code_of)
        .filter(|&code| code != Code::Ok as i32)
        .unwrap_or(Code::Unknown as i32);
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
    let mut trailers = match end.get("error") {
        Some(error) => {
            let mut status = status_of(error).into_http::<Body>().into_parts().0.headers;
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

pin_project! {
    /// A Connect stream's body as gRPC's: messages pass; the end-of-stream
    /// message becomes trailers.
    struct ConnectStream {
        #[pin]
        inner: Body,
        messages: MessageSplitter,
        ended: bool,
    }
}

impl http_body::Body for ConnectStream {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        loop {
            if *this.ended {
                return Poll::Ready(None);
            }
            if let Some(envelope) = this.messages.next_envelope() {
                if envelope[0] & FLAG_END_STREAM != 0 {
                    *this.ended = true;
                    let trailers = end_stream_trailers(&envelope[HEADER_LEN..]);
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                return Poll::Ready(Some(Ok(Frame::data(envelope))));
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.messages.push(data);
                    }
                }
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                None => {
                    *this.ended = true;
                    return Poll::Ready(Some(Err(Status::internal(
                        "the Connect stream ended without its end-of-stream message",
                    ))));
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
    fn the_unary_methods_are_known() {
        assert!(UNARY_METHODS.contains("/echo.v1.EchoService/Echo"));
        assert!(UNARY_METHODS.contains("/grpc.health.v1.Health/Check"));
        assert!(!UNARY_METHODS.contains("/echo.v1.EchoService/ServerStream"));
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
