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
use tonic::metadata::MetadataMap;

use bytes::Buf as _;
use echo_wire::compression::Compression;
use echo_wire::framing::Framing;
use echo_wire::headers as grpc_header;

use crate::classify::{self, BoxError};
use crate::deadline::CallDeadline;
use crate::protocol::SCHEMAS;
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

impl<S> CallPolicy<S> {
    /// The service the calls go to (for a [`Transport`](crate::Transport),
    /// its [`Endpoints`](crate::endpoints::Endpoints)).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
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
        // Looked up before the deadline starts: the first call reads the
        // descriptors.
        let single_answer = SCHEMAS
            .method(request.uri().path())
            .is_some_and(|schema| !schema.server_streaming);
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
            single_answer,
            inner: self.inner.call(request),
            deadline,
            // Boxed, so that the response body can take it over.
            sleep: deadline.map(|deadline| Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
}

pin_project! {
    /// Future of [`CallPolicy`].
    pub struct CallPolicyFuture<F> {
        #[pin]
        inner: F,
        deadline: Option<Instant>,
        sleep: Option<Pin<Box<Sleep>>>,
        // Whether the method answers with exactly one message.
        single_answer: bool,
    }
}

impl<F, B, E> Future for CallPolicyFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    B: http_body::Body,
{
    type Output = Result<http::Response<ClassifiedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let expired = |deadline: &Option<Instant>| deadline.is_some_and(|d| Instant::now() >= d);
        match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => {
                let (mut parts, inner) = response.into_parts();
                if let Some(status) = refused_answer(&parts) {
                    return Poll::Ready(Err(Box::new(status)));
                }
                // A trailers-only answer carries its status in the headers;
                // one that is not HTTP 200 has its status mapped from that.
                let mut needs_trailers = parts.status == http::StatusCode::OK;
                let mut header_status = None;
                if parts.headers.contains_key(grpc_header::STATUS) && needs_trailers {
                    if inner.is_end_stream() {
                        if *this.single_answer && is_ok(&parts.headers) {
                            let mut status = Status::unimplemented(NO_ANSWER);
                            *status.metadata_mut() = MetadataMap::from_headers(parts.headers);
                            return Poll::Ready(Err(Box::new(status)));
                        }
                        needs_trailers = false;
                    } else {
                        // A body may follow, and then its trailers decide;
                        // if none does, the headers were the trailers.
                        header_status = Some(parts.headers.clone());
                        take_status(&mut parts.headers);
                    }
                }
                let body = ClassifiedBody {
                    inner,
                    needs_trailers,
                    deadline: this.sleep.take(),
                    header_status,
                    answers: this.single_answer.then(Framing::default),
                    answered: 0,
                };
                return Poll::Ready(Ok(http::Response::from_parts(parts, body)));
            }
            // The channel's own timer fired (as CANCELLED): report it properly.
            Poll::Ready(Err(_)) if expired(this.deadline) => {
                return Poll::Ready(Err(deadline_exceeded()));
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
            Poll::Pending => {}
        }
        match this.sleep.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
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
    /// The call's deadline holds to its last message: past it, the body ends
    /// with DEADLINE_EXCEEDED (and dropping it resets the stream), and so
    /// does any failure after it (a server that reset the stream as its own
    /// timer fired).
    ///
    /// Answers that break the protocol fail as grpc-go's and connect-go's
    /// clients fail them (tonic passes them): a method with one answer that
    /// ends with none or sends two (UNIMPLEMENTED), a status in the headers
    /// followed by a body (the body's trailers decide; without them,
    /// INTERNAL).
    pub struct ClassifiedBody<B> {
        #[pin]
        inner: B,
        // Whether the status has yet to come, in trailers.
        needs_trailers: bool,
        deadline: Option<Pin<Box<Sleep>>>,
        // Headers that carried a status, when a body followed them.
        header_status: Option<HeaderMap>,
        // For a method with one answer: where its messages are.
        answers: Option<Framing>,
        answered: u64,
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
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                return match this.deadline.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => {
                        *this.needs_trailers = false;
                        *this.deadline = None;
                        Poll::Ready(Some(Err(deadline_exceeded())))
                    }
                    _ => Poll::Pending,
                };
            }
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.header_status = None;
                    if let Some(framing) = this.answers.as_mut() {
                        *this.answered += framing.messages_in(data.chunk());
                        if *this.answered > 1 {
                            *this.needs_trailers = false;
                            *this.answers = None;
                            return Poll::Ready(Some(Err(Box::new(Status::unimplemented(
                                "a second answer from a method that answers once",
                            )))));
                        }
                    }
                }
                if let Some(trailers) = frame.trailers_ref() {
                    *this.needs_trailers = false;
                    *this.deadline = None;
                    if this.answers.is_some() && *this.answered == 0 && is_ok(trailers) {
                        return Poll::Ready(Some(Err(no_answer())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(_))
                if this
                    .deadline
                    .as_ref()
                    .is_some_and(|sleep| Instant::now() >= sleep.deadline()) =>
            {
                *this.needs_trailers = false;
                Poll::Ready(Some(Err(deadline_exceeded())))
            }
            Some(Err(err)) => {
                *this.needs_trailers = false;
                let err: BoxError = err.into();
                Poll::Ready(Some(Err(Box::new(classify::in_body(&*err)))))
            }
            None if std::mem::take(this.needs_trailers) => match this.header_status.take() {
                // Nothing followed the headers after all: their status stands.
                Some(status) if this.answers.is_some() && is_ok(&status) => {
                    Poll::Ready(Some(Err(no_answer())))
                }
                Some(status) => Poll::Ready(Some(Ok(http_body::Frame::trailers(status)))),
                None => Poll::Ready(Some(Err(Box::new(Status::internal(
                    "the stream ended without a status",
                ))))),
            },
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

/// Why an answer's headers show it is not one to read, if they do: not gRPC
/// (UNKNOWN, as HTTP 200 maps), or in a compression this client lacks.
fn refused_answer(parts: &http::response::Parts) -> Option<Status> {
    if parts.status != http::StatusCode::OK {
        return None; // tonic maps the HTTP status
    }
    let content_type = parts.headers.get(http::header::CONTENT_TYPE);
    if !content_type.is_some_and(|value| value.as_bytes().starts_with(b"application/grpc")) {
        return Some(Status::unknown(format!(
            "the answer is not gRPC (content type {:?})",
            content_type.map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        )));
    }
    // Answers come in what the client accepts: tonic's compressions.
    let encoding = parts.headers.get(grpc_header::ENCODING)?;
    let readable = Compression::from_name(encoding.as_bytes()).is_some_and(Compression::in_tonic);
    (!readable).then(|| {
        Status::internal(format!(
            "the answer is compressed with {:?}, which this client does not read",
            String::from_utf8_lossy(encoding.as_bytes())
        ))
    })
}

/// Takes the status out of `headers`.
fn take_status(headers: &mut HeaderMap) {
    for name in [
        grpc_header::STATUS,
        grpc_header::MESSAGE,
        grpc_header::STATUS_DETAILS,
    ] {
        headers.remove(name);
    }
}

/// Whether `headers` carry an OK status.
fn is_ok(headers: &HeaderMap) -> bool {
    headers
        .get(grpc_header::STATUS)
        .is_some_and(|code| code == "0")
}

const NO_ANSWER: &str = "no answer from a method that answers once";

fn no_answer() -> BoxError {
    Box::new(Status::unimplemented(NO_ANSWER))
}

fn deadline_exceeded() -> BoxError {
    Box::new(Status::deadline_exceeded(
        "deadline exceeded before the call finished",
    ))
}
