//! Reports an over-size message as RESOURCE_EXHAUSTED, as the gRPC spec asks,
//! where tonic says OUT_OF_RANGE (its decompression limit already says
//! RESOURCE_EXHAUSTED). Works on the status however it travels: in the headers
//! of a trailers-only response, or in the trailers.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use echo_wire::headers as grpc_header;
use http::{HeaderMap, HeaderValue};
use pin_project_lite::pin_project;
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{HookedBody, TrailersHook};

/// How tonic's message-size statuses begin (decoding and encoding).
const SIZE_MESSAGES: [&str; 2] = [
    "Error, decoded message length too large",
    "Error, encoded message length too large",
];

/// Rewrites tonic's over-size OUT_OF_RANGE into RESOURCE_EXHAUSTED in `headers`.
fn remap(headers: &mut HeaderMap) {
    // Every response passes here: the cheap check first, and no allocation.
    const OUT_OF_RANGE: &[u8] = b"11";
    debug_assert_eq!(
        OUT_OF_RANGE,
        (Code::OutOfRange as i32).to_string().as_bytes()
    );
    let out_of_range = headers
        .get(grpc_header::STATUS)
        .is_some_and(|code| code.as_bytes() == OUT_OF_RANGE);
    if !out_of_range {
        return;
    }
    // grpc-message travels percent-encoded.
    let about_size = headers
        .get(grpc_header::MESSAGE)
        .and_then(|message| message.to_str().ok())
        .map(|message| percent_encoding::percent_decode_str(message).decode_utf8_lossy())
        .is_some_and(|message| {
            SIZE_MESSAGES
                .iter()
                .any(|prefix| message.starts_with(prefix))
        });
    if about_size {
        headers.insert(
            grpc_header::STATUS,
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
}

/// Remaps over-size statuses; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MessageSizeStatusLayer;

impl<S> Layer<S> for MessageSizeStatusLayer {
    type Service = MessageSizeStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageSizeStatus { inner }
    }
}

/// The service made by [`MessageSizeStatusLayer`].
#[derive(Debug, Clone)]
pub(crate) struct MessageSizeStatus<S> {
    inner: S,
}

/// The [`TrailersHook`] that remaps the final status.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemapTrailers;

impl TrailersHook for RemapTrailers {
    fn on_trailers(self, trailers: &mut HeaderMap) {
        remap(trailers);
    }

    fn on_no_trailers(self) {}
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for MessageSizeStatus<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<HookedBody<ResBody, RemapTrailers>>;
    type Error = S::Error;
    type Future = MessageSizeStatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        MessageSizeStatusFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Future of [`MessageSizeStatus`].
    pub(crate) struct MessageSizeStatusFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for MessageSizeStatusFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<HookedBody<B, RemapTrailers>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(self.project().inner.poll(cx))?;
        let trailers_only = response.headers().contains_key(grpc_header::STATUS);
        if trailers_only {
            remap(response.headers_mut());
        }
        let hook = (!trailers_only).then_some(RemapTrailers);
        Poll::Ready(Ok(response.map(|body| HookedBody::new(body, hook))))
    }
}
