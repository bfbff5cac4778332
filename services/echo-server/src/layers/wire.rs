//! The wire reflected back: what the server received for a call, as it
//! arrived, for finding what a proxy changed on the way (a deadline
//! rewritten, a header dropped, TLS ended early). Asked for by the
//! `x-echo-reflect: wire` header on any call of any service and protocol
//! (answered in the `x-echo-wire` response header, as proto3 JSON of
//! `echo.v1.Wire`), or by `EchoRequest.reflect_wire` (in `EchoResponse.wire`).
//! Credentials are never reflected.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use futures_util::future::Either;
use grpc_echo::echo::v1::Wire;
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message as _;
use prost_reflect::MessageDescriptor;
use tower_layer::Layer;
use tower_service::Service;

use crate::context::reflect_wire;
use crate::protocol::json::{pool, proto_to_json};

/// The request header that asks for the wire, by the word `wire` in its value.
const REFLECT: HeaderName = HeaderName::from_static("x-echo-reflect");
/// The response header that carries it.
const WIRE: HeaderName = HeaderName::from_static("x-echo-wire");
/// Whether `headers` ask for the wire in the answer's headers.
fn asked(headers: &HeaderMap) -> bool {
    headers.get(&REFLECT).is_some_and(|value| {
        value
            .as_bytes()
            .split(|&byte| byte == b',')
            .any(|word| word.trim_ascii() == b"wire")
    })
}

/// `wire` as a header value: its proto3 JSON, with anything but ASCII escaped.
fn header_value(wire: &Wire) -> HeaderValue {
    static DESCRIPTOR: OnceLock<Option<MessageDescriptor>> = OnceLock::new();
    let descriptor = DESCRIPTOR.get_or_init(|| {
        pool(&[grpc_echo::FILE_DESCRIPTOR_SET])
            .ok()?
            .get_message_by_name("echo.v1.Wire")
    });
    let json = descriptor
        .as_ref()
        .and_then(|descriptor| proto_to_json(descriptor, &wire.encode_to_vec()).ok())
        .unwrap_or_default();
    let mut ascii = String::with_capacity(json.len());
    for c in String::from_utf8_lossy(&json).chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let mut units = [0; 2];
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    // JSON escapes every control character, so only visible ASCII is left.
    HeaderValue::from_str(&ascii).unwrap_or_else(|_| HeaderValue::from_static("{}"))
}

/// Answers calls that ask with `x-echo-reflect: wire` with an `x-echo-wire` header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WireLayer;

impl<S> Layer<S> for WireLayer {
    type Service = WireService<S>;

    fn layer(&self, inner: S) -> WireService<S> {
        WireService { inner }
    }
}

/// The service made by [`WireLayer`].
#[derive(Debug, Clone)]
pub(crate) struct WireService<S> {
    inner: S,
}

type Reflected<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for WireService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Reflected<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if !asked(request.headers()) {
            return Either::Left(self.inner.call(request));
        }
        let value = header_value(&reflect_wire(request.headers(), request.extensions()));
        let answer = self.inner.call(request);
        Either::Right(Box::pin(async move {
            let mut response = answer.await?;
            response.headers_mut().insert(WIRE, value);
            Ok(response)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_never_reflected_and_the_header_is_ascii() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        headers.insert(
            "x-name",
            HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
        );
        let value = header_value(&reflect_wire(&headers, &http::Extensions::new()));
        let json = value.to_str().unwrap();
        assert!(!json.contains("secret"), "{json}");
        assert!(json.contains(r#""value":"caf\u00e9""#), "{json}");
    }

    #[test]
    fn the_header_asks_by_the_word_wire() {
        let ask = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(REFLECT, HeaderValue::from_static(value));
            asked(&headers)
        };
        assert!(ask("wire"));
        assert!(ask("other, wire"));
        assert!(!ask("wired"));
    }
}
