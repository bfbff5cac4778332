//! One span per RPC (request id, method, peer, and the client certificate's
//! subject under mTLS) and one closing event with its status code
//! and duration, whether the code came in the headers, the trailers, or never
//! (the caller went away first); and the RPC's metrics, with the messages of
//! streams counted as they pass.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use echo_wire::framing::Framing;
use echo_wire::headers::{self as grpc_header, REQUEST_ID};
use http::{HeaderMap, HeaderValue};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tonic::Status;
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;

use super::body::{HookedBody, TrailersHook};
use crate::boxed::boxed;
use crate::context::{Arrival, PeerInfo, SocketCounts};
use crate::ops::metrics::{MethodId, Metrics};

/// Traces every RPC and records it in the metrics; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct TraceLayer {
    metrics: Arc<Metrics>,
}

impl TraceLayer {
    /// Records every RPC in `metrics`.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service made by [`TraceLayer`].
#[derive(Debug, Clone)]
pub(crate) struct TraceService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ResBody> Service<http::Request<Body>> for TraceService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<HookedBody<ResBody, RpcEnd>>;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let request_id = request_id(request.headers());
        let peer = request
            .extensions()
            .get::<Arrival>()
            .map(|arrival| &arrival.peer);
        // At DEBUG: at INFO, formatting these fields for every call would cost
        // a fifth of a unary call (measured with bench/suite.py). Exported
        // over OTLP whatever the level, named and attributed per the
        // OpenTelemetry RPC conventions.
        let path = request.uri().path();
        // Field values are worked out only when the span is enabled.
        let span = tracing::debug_span!(
            "rpc",
            request_id = request_id.to_str().unwrap_or_default(),
            method = path,
            peer = peer.map(|peer| tracing::field::display(peer.addr)),
            client = peer.and_then(PeerInfo::identity),
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service_and_method(path).0,
            rpc.method = service_and_method(path).1,
            rpc.grpc.status_code = tracing::field::Empty,
            server.address = request.uri().host(),
            network.peer.address = peer.map(|peer| tracing::field::display(peer.addr.ip())),
        );
        echo_client::telemetry::set_parent_from(&span, request.headers());
        let method = self.metrics.method(request.uri().path());
        self.metrics.started(method);
        let rpc_type = self.metrics.rpc_type(method);
        // A single request message counts as received at the start, as in
        // the metrics.
        let socket = peer.and_then(|peer| peer.channelz.clone());
        if let Some(socket) = &socket {
            socket.call_started();
            if !rpc_type.client_streams() {
                socket.received(1);
            }
        }
        // Streamed messages are counted as they pass (a single one is counted
        // by `Metrics::started`); a method that takes one message gets exactly
        // one. Unknown paths are answered before their body is read.
        let one_message = self.metrics.takes_one_message(method);
        let request = if rpc_type.client_streams() || one_message {
            let metrics = Arc::clone(&self.metrics);
            request.map(|body| {
                boxed(CountedRequest {
                    inner: body,
                    framing: Framing::default(),
                    metrics,
                    socket: socket.clone(),
                    method,
                    one_message,
                    messages: 0,
                    failed: false,
                })
            })
        } else {
            request
        };
        let end = RpcEnd {
            span,
            start: Instant::now(),
            method,
            metrics: Arc::clone(&self.metrics),
            sent: rpc_type.server_streams().then(Framing::default),
            socket,
            finished: false,
        };
        let inner = end.span.in_scope(|| self.inner.call(request));
        TraceFuture {
            inner,
            request_id: Some(request_id),
            end: Some(end),
        }
    }
}

pin_project! {
    /// Future of [`TraceService`].
    pub(crate) struct TraceFuture<F> {
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
        let mut end = this
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

/// The caller's request id if it sent a usable one, else a new random one;
/// marked sensitive so that HPACK never indexes it: a value new on every
/// response would churn the connection's header table and evict the entries
/// that do repeat (measured: a third of the cost of encoding the headers).
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut id = headers
        .get(REQUEST_ID)
        .filter(|value| value.len() <= 128 && value.to_str().is_ok())
        .cloned()
        .unwrap_or_else(|| {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let random = fastrand::u64(..);
            let digits: [u8; 16] =
                std::array::from_fn(|i| HEX[(random >> (60 - 4 * i)) as usize & 0xf]);
            HeaderValue::from_bytes(&digits).expect("hex is a valid header")
        });
    id.set_sensitive(true);
    id
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get(grpc_header::STATUS)?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

/// `/package.Service/Method` as its service and method.
fn service_and_method(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""))
}

/// Whether a server span ending with `code` is an error, per the
/// OpenTelemetry RPC conventions for gRPC (a caller's mistake is not).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// What the closing event of an RPC needs. Dropped unfinished (the caller
/// went away before the response started), it finishes without a code.
#[derive(Debug)]
pub(crate) struct RpcEnd {
    span: Span,
    start: Instant,
    method: MethodId,
    metrics: Arc<Metrics>,
    /// The framing of a streamed answer, whose messages are counted.
    sent: Option<Framing>,
    /// What channelz counts of the call's connection, when it is on.
    socket: Option<Arc<SocketCounts>>,
    finished: bool,
}

impl Drop for RpcEnd {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(None);
        }
    }
}

impl RpcEnd {
    fn finish(&mut self, code: Option<Code>) {
        self.finished = true;
        if let Some(code) = code
            && !self.span.is_disabled()
        {
            self.span.record("rpc.grpc.status_code", code as i64);
            if is_server_error(code) {
                self.span.record("otel.status_code", "ERROR");
            }
        }
        let elapsed = self.start.elapsed();
        self.metrics.finished(self.method, code, elapsed);
        if let Some(socket) = &self.socket {
            let ok = code == Some(Code::Ok);
            // A one-message answer is sent with its OK, as the metrics count it.
            if ok && self.sent.is_none() {
                socket.sent(1);
            }
            socket.call_finished(ok);
        }
        let elapsed_ms = elapsed.as_secs_f64() * 1e3;
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
    fn on_trailers(mut self, trailers: &mut HeaderMap) {
        self.finish(grpc_status(trailers));
    }

    fn on_no_trailers(mut self) {
        self.finish(None);
    }

    fn on_data(&mut self, data: &[u8]) {
        if let Some(framing) = &mut self.sent {
            let messages = framing.messages_in(data);
            if messages > 0 {
                self.metrics.sent(self.method, messages);
                if let Some(socket) = &self.socket {
                    socket.sent(messages);
                }
            }
        }
    }
}

pin_project! {
    /// A request body whose messages are counted as they arrive: a stream's
    /// into the metrics; for a method that takes one message (unary and
    /// server-streaming), a second message, or none by the end, ends the body
    /// in UNIMPLEMENTED, the status gRPC documents for a cardinality
    /// violation (tonic would take the first and drop the rest, or answer
    /// INTERNAL). Here, inside the protocol layer, every protocol's calls
    /// meet it as gRPC, and tonic reads the status as the call's.
    struct CountedRequest {
        #[pin]
        inner: Body,
        framing: Framing,
        metrics: Arc<Metrics>,
        socket: Option<Arc<SocketCounts>>,
        method: MethodId,
        one_message: bool,
        messages: u64,
        // Set once the body has ended in an error.
        failed: bool,
    }
}

impl http_body::Body for CountedRequest {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let frame = ready!(this.inner.poll_frame(cx));
        let violation = match &frame {
            Some(Ok(frame)) => {
                let arrived = frame
                    .data_ref()
                    .map_or(0, |data| this.framing.messages_in(data));
                *this.messages += arrived;
                if !*this.one_message && arrived > 0 {
                    this.metrics.received(*this.method, arrived);
                    if let Some(socket) = this.socket {
                        socket.received(arrived);
                    }
                }
                (*this.one_message && *this.messages > 1).then_some(
                    "a unary or server-streaming call sent more than one request message",
                )
            }
            None => (*this.one_message && *this.messages == 0)
                .then_some("a unary or server-streaming call sent no request message"),
            Some(Err(_)) => None,
        };
        match violation {
            Some(violation) => {
                *this.failed = true;
                Poll::Ready(Some(Err(Status::unimplemented(violation))))
            }
            None => Poll::Ready(frame),
        }
    }

    fn is_end_stream(&self) -> bool {
        // With one message due, the end is where a missing one is told.
        self.failed || (self.inner.is_end_stream() && !(self.one_message && self.messages == 0))
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
