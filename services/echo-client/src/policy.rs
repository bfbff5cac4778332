//! Applies the client's defaults to every call: default metadata, and a
//! deadline that ends the call with DEADLINE_EXCEEDED. Also reports a broken
//! connection as UNAVAILABLE, as the gRPC spec says (tonic says UNKNOWN),
//! whether it breaks before the response or in the middle of a stream.
//!
//! A call's own timeout (`tonic::Request::set_timeout`) wins over the default.
//! tonic's channel enforces `grpc-timeout` too, but reports CANCELLED; this
//! layer sits outside it and reports DEADLINE_EXCEEDED, as the gRPC spec says.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use echo_wire::grpc_timeout;
use http::HeaderMap;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    type Response = http::Response<UnavailableOnBreak<ResBody>>;
    type Error = BoxError;
    type Future = CallPolicyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let headers = request.headers_mut();
        for key in self.policy.metadata.keys() {
            if !headers.contains_key(key) {
                for value in self.policy.metadata.get_all(key) {
                    headers.append(key.clone(), value.clone());
                }
            }
        }
        let own_timeout = headers
            .get(grpc_timeout::HEADER)
            .and_then(grpc_timeout::parse);
        let timeout = own_timeout.or(self.policy.timeout);
        if let (None, Some(timeout)) = (own_timeout, timeout) {
            headers.insert(grpc_timeout::HEADER, grpc_timeout::encode(timeout));
        }
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
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
    type Output = Result<http::Response<UnavailableOnBreak<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let expired = |deadline: &Option<Instant>| deadline.is_some_and(|d| Instant::now() >= d);
        match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => {
                return Poll::Ready(Ok(response.map(|inner| UnavailableOnBreak { inner })));
            }
            // The channel's own timer fired (as CANCELLED): report it properly.
            Poll::Ready(Err(_)) if expired(this.deadline) => {
                return Poll::Ready(Err(deadline_exceeded()));
            }
            // Failing before any response, the request never reached a handler:
            // hyper's "canceled" here means the connection closed under it.
            Poll::Ready(Err(err)) => {
                return Poll::Ready(Err(as_unavailable(
                    err.into(),
                    &[Code::Unknown, Code::Cancelled],
                )));
            }
            Poll::Pending => {}
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(deadline_exceeded())),
            _ => Poll::Pending,
        }
    }
}

/// The status tonic would make of `error`, but UNAVAILABLE where it would say
/// one of `codes`: a transport failure (refused, reset, broken pipe) is the
/// "service is currently unavailable" the spec means. A stream the server
/// reset on purpose keeps the code its RST_STREAM maps to.
fn as_unavailable(error: BoxError, codes: &[Code]) -> BoxError {
    if let Some(reason) = reset_by_server(&*error) {
        // Mapped as tonic maps a bare reason (CANCEL is CANCELLED, and so on).
        let code = Status::from_error(Box::new(h2::Error::from(reason))).code();
        return Box::new(Status::new(
            code,
            format!("stream reset by the server: {reason}"),
        ));
    }
    let status = Status::from_error(error);
    if !codes.contains(&status.code()) {
        return Box::new(status);
    }
    Box::new(Status::unavailable(format!(
        "connection lost: {}",
        status.message()
    )))
}

pin_project! {
    /// A response body whose transport failures surface as UNAVAILABLE.
    pub struct UnavailableOnBreak<B> {
        #[pin]
        inner: B,
    }
}

impl<B> http_body::Body for UnavailableOnBreak<B>
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
        self.project().inner.poll_frame(cx).map(|frame| {
            frame.map(|frame| frame.map_err(|err| as_unavailable(err.into(), &[Code::Unknown])))
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The reason of a RST_STREAM the server sent, if that is what `error` is.
fn reset_by_server(error: &(dyn std::error::Error + 'static)) -> Option<h2::Reason> {
    std::iter::successors(Some(error), |err| err.source())
        .filter_map(|err| err.downcast_ref::<h2::Error>())
        .find(|err| err.is_reset() && err.is_remote())
        .and_then(h2::Error::reason)
}

fn deadline_exceeded() -> BoxError {
    Box::new(Status::deadline_exceeded(
        "deadline exceeded before the server answered",
    ))
}
