//! Per-message compression for `grpc.testing.TestService`, whose interop tests
//! decide and check compression message by message (tonic does it per call).
//!
//! Requests: each message's compressed flag is recorded in an
//! [`ObservedCompression`] extension for the handler. Responses: a handler that
//! attaches a [`CompressionPlan`] gets the marked messages gzipped, when the
//! client accepts gzip.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use echo_wire::framing::{CompressionPlan, ObservedBody, ObservedCompression, RecompressBody};
use http::HeaderValue;
use pin_project_lite::pin_project;
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::boxed::boxed;

/// Path prefix of the calls this layer acts on.
const TEST_SERVICE_PATH: &str = "/grpc.testing.TestService/";

/// Applies per-message compression to TestService calls; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MessageCompressionLayer;

impl<S> Layer<S> for MessageCompressionLayer {
    type Service = MessageCompressionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageCompressionService { inner }
    }
}

/// The service made by [`MessageCompressionLayer`].
#[derive(Debug, Clone)]
pub(crate) struct MessageCompressionService<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for MessageCompressionService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = MessageCompressionFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if !request.uri().path().starts_with(TEST_SERVICE_PATH) {
            return MessageCompressionFuture {
                inner: self.inner.call(request),
                client_accepts_gzip: false,
            };
        }
        let client_accepts_gzip = request
            .headers()
            .get("grpc-accept-encoding")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.split(',').any(|encoding| encoding.trim() == "gzip"));
        let observed = ObservedCompression::default();
        request.extensions_mut().insert(observed.clone());
        let request = request.map(|body| boxed(ObservedBody::new(body, observed.0)));
        MessageCompressionFuture {
            inner: self.inner.call(request),
            client_accepts_gzip,
        }
    }
}

pin_project! {
    /// Future of [`MessageCompressionService`].
    pub(crate) struct MessageCompressionFuture<F> {
        #[pin]
        inner: F,
        client_accepts_gzip: bool,
    }
}

impl<F, E> Future for MessageCompressionFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        let Some(plan) = response.extensions_mut().remove::<CompressionPlan>() else {
            return Poll::Ready(Ok(response));
        };
        if !*this.client_accepts_gzip {
            return Poll::Ready(Ok(response));
        }
        response
            .headers_mut()
            .insert("grpc-encoding", HeaderValue::from_static("gzip"));
        Poll::Ready(Ok(
            response.map(|body| boxed(RecompressBody::new(body, plan)))
        ))
    }
}
