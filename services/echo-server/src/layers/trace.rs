//! One span per RPC (request id, method, peer, and the client certificate's
//! subject under mTLS) and one closing event with its status code
//! and duration, whether the code came in the headers, the trailers, or never
//! (the caller went away first).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use pin_project_lite::pin_project;
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;

use super::body::{HookedBody, TrailersHook};
use crate::connections::PeerInfo;

/// Traces every RPC; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service made by [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for TraceService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<HookedBody<ResBody, RpcEnd>>;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let request_id = request_id(request.headers());
        let peer = request.extensions().get::<PeerInfo>();
        // At INFO, so that every log line of the call carries its request id.
        let span = tracing::info_span!(
            "rpc",
            request_id = request_id.to_str().unwrap_or_default(),
            method = request.uri().path(),
            peer = peer.map(|peer| tracing::field::display(peer.addr)),
            client = peer.and_then(|peer| peer.identity.as_deref()),
        );
        let inner = span.in_scope(|| self.inner.call(request));
        TraceFuture {
            inner,
            request_id: Some(request_id),
            end: Some(RpcEnd {
                span,
                start: Instant::now(),
            }),
        }
    }
}

pin_project! {
    /// Future of [`TraceService`].
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        request_id: Option<HeaderValue>,
        end: Option<RpcEnd>,
    }
}

impl<F, B, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<HookedBody<B, RpcEnd>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let end = this
            .end
            .take()
            .expect("TraceFuture polled after completion");
        let output = {
            let _entered = end.span.enter();
            this.inner.poll(cx)
        };
        let Poll::Ready(result) = output else {
            *this.end = Some(end);
            return Poll::Pending;
        };
        let mut response = match result {
            Ok(response) => response,
            Err(err) => {
                end.finish(None);
                return Poll::Ready(Err(err));
            }
        };
        if let Some(request_id) = this.request_id.take() {
            response.headers_mut().insert(REQUEST_ID, request_id);
        }
        // A trailers-only response carries its status in the headers.
        let end = match grpc_status(response.headers()) {
            Some(code) => {
                end.finish(Some(code));
                None
            }
            None => Some(end),
        };
        Poll::Ready(Ok(response.map(|body| HookedBody::new(body, end))))
    }
}

/// The header that carries a call's request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The caller's request id if it sent a usable one, else a new random one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|value| value.len() <= 128 && value.to_str().is_ok())
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&format!("{:016x}", fastrand::u64(..))).expect("hex is a valid header")
        })
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

/// What the closing event of an RPC needs.
#[derive(Debug)]
pub struct RpcEnd {
    span: Span,
    start: Instant,
}

impl RpcEnd {
    fn finish(self, code: Option<Code>) {
        let elapsed_ms = self.start.elapsed().as_secs_f64() * 1e3;
        match code {
            Some(code) => {
                tracing::debug!(parent: &self.span, code = ?code, elapsed_ms, "rpc finished");
            }
            None => {
                tracing::debug!(parent: &self.span, elapsed_ms, "rpc ended without a status (peer went away)");
            }
        }
    }
}

impl TrailersHook for RpcEnd {
    fn on_trailers(self, trailers: &mut HeaderMap) {
        let code = grpc_status(trailers);
        self.finish(code);
    }

    fn on_no_trailers(self) {
        self.finish(None);
    }
}
