//! Honours the caller's `grpc-timeout`, capped by the server's longest call
//! time: handlers see it as a [`Deadline`], and a call whose response has not
//! started by then ends with DEADLINE_EXCEEDED.
//!
//! tonic's own timer (part of its `Server`, which this server does not use)
//! answers CANCELLED; this layer answers with the code the gRPC spec asks for.
//! Streams past their first response are bounded by their handlers, which
//! watch the [`Deadline`].

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use echo_wire::grpc_timeout;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::context::Deadline;
use crate::error::EchoError;

/// Applies the caller's deadline; see the module docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeadlineLayer {
    max_call_time: Duration,
}

impl DeadlineLayer {
    /// No call lasts longer than `max_call_time`, whatever its caller asks.
    pub(crate) fn new(max_call_time: Duration) -> Self {
        Self { max_call_time }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            max_call_time: self.max_call_time,
        }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub(crate) struct DeadlineService<S> {
    inner: S,
    max_call_time: Duration,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DeadlineService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let timeout = request
            .headers()
            .get(grpc_timeout::HEADER)
            .and_then(grpc_timeout::parse)
            .map_or(self.max_call_time, |asked| asked.min(self.max_call_time));
        let deadline = Instant::now() + timeout;
        request.extensions_mut().insert(Deadline(deadline));
        DeadlineFuture {
            sleep: tokio::time::sleep_until(deadline),
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Future of [`DeadlineService`].
    pub(crate) struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
    }
}

impl<F, B, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            return Poll::Ready(output);
        }
        ready!(this.sleep.poll(cx));
        Poll::Ready(Ok(
            tonic::Status::from(EchoError::DeadlineExceeded).into_http()
        ))
    }
}
