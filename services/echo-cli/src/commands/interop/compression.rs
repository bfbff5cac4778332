//! Per-message compression for the interop client: the cases decide and
//! check compression message by message, where tonic decides it per call.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use echo_client::Transport;
use echo_wire::framing::{CompressionPlan, ObservedBody, ObservedCompression, RecompressBody};
use http::HeaderValue;
use pin_project_lite::pin_project;
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

/// The transport of the interop clients.
pub(crate) type Interop = PerMessageCompression<Transport>;

/// Gives a call's messages per-message compression ([`CompressionPlan`] in the
/// request extensions) and reports the responses' flags
/// ([`ObservedCompression`] in the response extensions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PerMessageCompressionLayer;

impl<S> Layer<S> for PerMessageCompressionLayer {
    type Service = PerMessageCompression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PerMessageCompression { inner }
    }
}

/// The service made by [`PerMessageCompressionLayer`].
#[derive(Debug, Clone)]
pub(crate) struct PerMessageCompression<S> {
    inner: S,
}

impl<S, B> Service<http::Request<Body>> for PerMessageCompression<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ObservedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(plan) = request.extensions_mut().remove::<CompressionPlan>() {
            request
                .headers_mut()
                .insert("grpc-encoding", HeaderValue::from_static("gzip"));
            request = request.map(|body| Body::new(RecompressBody::new(body, plan)));
        }
        ObservedResponse {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Future of [`PerMessageCompression`].
    pub(crate) struct ObservedResponse<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for ObservedResponse<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(self.project().inner.poll(cx))?;
        let observed = ObservedCompression::default();
        response.extensions_mut().insert(observed.clone());
        Poll::Ready(Ok(
            response.map(|body| Body::new(ObservedBody::new(body, observed.0)))
        ))
    }
}
