//! Applies the client's defaults to every call: default metadata, and a
//! deadline that ends the call with DEADLINE_EXCEEDED. A transport failure
//! in the middle of a response becomes the status `classify.rs` gives it
//! (before the response, [`Endpoints`](crate::endpoints::Endpoints) has
//! already classified it, and retried it if it could).
//!
//! A call's own timeout (`tonic::Request::set_timeout`, or a retry policy's
//! [`CallDeadline`]) wins over the default. The deadline travels on as a
//! [`CallDeadline`] extension, and the link writes it on the wire. tonic's
//! channel enforces `grpc-timeout` too, but reports CANCELLED; this layer
//! sits outside it and reports DEADLINE_EXCEEDED, as the gRPC spec says.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderMap;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::Status;

use crate::classify::{self, BoxError};
use crate::deadline::CallDeadline;
use tower_layer::Layer;
use tower_service::Service;

/// Builds [`CallPolicy`] services.
#[derive(Debug, Clone, Default)]
pub struct CallPolicyLayer {
    metadata: Arc<HeaderMap>,
    timeout: Option<Duration>,
}

impl CallPolicyLayer {
    /// Adds `metadata` to calls that do not set those keys, and gives calls
    /// without their own timeout this one.
    pub fn new(metadata: HeaderMap, timeout: Option<Duration>) -> Self {
        Self {
            metadata: Arc::new(metadata),
            timeout,
        }
    }
}

impl<S> Layer<S> for CallPolicyLayer {
    type Service = CallPolicy<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallPolicy {
            inner,
            policy: self.clone(),
        }
    }
}

/// The service made by [`CallPolicyLayer`].
#[derive(Debug, Clone)]
pub struct CallPolicy<S> {
    inner: S,
    policy: CallPolicyLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for CallPolicy<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<ClassifiedBody<ResBody>>;
    type Error = BoxError;
    type Future = CallPolicyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let headers = request.headers_mut();
        #[cfg(feature = "otlp")]
        crate::telemetry::inject_current(headers);
        for key in self.policy.metadata.keys() {
            if !headers.contains_key(key) {
                for value in self.policy.metadata.get_all(key) {
                    headers.append(key.clone(), value.clone());
                }
            }
        }
        let own_timeout = CallDeadline::take_timeout(headers);
        let deadline = match request.extensions().get::<CallDeadline>() {
            Some(&deadline) => Some(deadline),
            None => own_timeout
                .or(self.policy.timeout)
                .and_then(CallDeadline::after),
        };
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(deadline);
        }
        let deadline = deadline.map(|deadline| deadline.0);
        CallPolicyFuture {
            inner: self.inner.call(request),
            deadline,
            sleep: deadline.map(tokio::time::sleep_until),
        }
    }
}

pin_project! {
    /// Future of [`CallPolicy`].
    pub struct CallPolicyFuture<F> {
        #[pin]
        inner: F,
        deadline: Option<Instant>,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F, B, E> Future for CallPolicyFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<ClassifiedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let expired = |deadline: &Option<Instant>| deadline.is_some_and(|d| Instant::now() >= d);
        match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => {
                // A trailers-only answer carries its status in the headers;
                // one that is not HTTP 200 has its status mapped from that.
                let needs_trailers = response.status() == http::StatusCode::OK
                    && !response.headers().contains_key("grpc-status");
                return Poll::Ready(Ok(response.map(|inner| ClassifiedBody {
                    inner,
                    needs_trailers,
                })));
            }
            // The channel's own timer fired (as CANCELLED): report it properly.
            Poll::Ready(Err(_)) if expired(this.deadline) => {
                return Poll::Ready(Err(deadline_exceeded()));
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
            Poll::Pending => {}
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(deadline_exceeded())),
            _ => Poll::Pending,
        }
    }
}

pin_project! {
    /// A response body whose transport failures surface as the status
    /// `classify.rs` gives them, and which ends with INTERNAL when it ends
    /// without a status (as when the server resets the stream with NO_ERROR
    /// before its trailers), as the gRPC spec says; tonic would say UNKNOWN.
    pub struct ClassifiedBody<B> {
        #[pin]
        inner: B,
        // Whether the status has yet to come, in trailers.
        needs_trailers: bool,
    }
}

impl<B> http_body::Body for ClassifiedBody<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, BoxError>>> {
        let this = self.project();
        match std::task::ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if frame.is_trailers() {
                    *this.needs_trailers = false;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                *this.needs_trailers = false;
                let err: BoxError = err.into();
                Poll::Ready(Some(Err(Box::new(classify::in_body(&*err)))))
            }
            None if std::mem::take(this.needs_trailers) => Poll::Ready(Some(Err(Box::new(
                Status::internal("the stream ended without a status"),
            )))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.needs_trailers && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn deadline_exceeded() -> BoxError {
    Box::new(Status::deadline_exceeded(
        "deadline exceeded before the server answered",
    ))
}
