//! Serving one connection: HTTP/2 or HTTP/1.1 (told apart by the first bytes,
//! hyper-util's auto builder) over an accepted [`Connection`], ended
//! gracefully (GOAWAY, then the open calls finish) on shutdown, at its maximum
//! age, or when a call or a chaos schedule asks for it, and cut at age +
//! grace, when a chaos schedule picks it, or when its peer reads none of its
//! answers while a memory budget is used up.
//!
//! tonic's own serving loop offers no handle on a single connection, and a
//! request that asks for GOAWAY, a closed connection or a stream reset needs
//! one; so the connections are served here, with the same hyper settings.
//! On a single-threaded runtime each HTTP/2 stream runs inside its
//! connection's task ([`StreamExecutor`]), not in a task of its own.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body as HttpBody, Frame};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::StdError;
use tower_service::Service;

use super::accept::{Connection, Flushes};
use super::budget::bodies::{BudgetedAnswer, BudgetedRequest};
use super::budget::{Budgets, ConnectionBudgets, LazyBudgets};
use super::lifetime::{Lifetime, Turn};
use super::woken::WokenBody;
use crate::boxed::boxed;
use crate::config::{Http2Config, LimitsConfig, MAX_LOCAL_ERROR_RESET_STREAMS};
use crate::context::{Arrival, ConnectionControl, PeerInfo, ResetStream};
use crate::ops::channelz::Channelz;
use crate::ops::chaos::Chaos;
use crate::ops::stats::Stats;

/// The largest receive window of a stream (hyper's default).
const MAX_STREAM_WINDOW: u32 = 1024 * 1024;
/// The largest window HTTP/2 allows.
const MAX_WINDOW: usize = (1 << 31) - 1;

/// The smallest read buffer hyper's HTTP/1.1 server takes.
const MIN_HTTP1_BUFFER: usize = 8192;

/// HTTP settings of every connection, and when connections end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpSettings {
    max_concurrent_streams: u32,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    max_header_list_size: u32,
    /// HTTP/1.1: how long a request's headers may take to arrive (an idle
    /// connection waiting for its next request included).
    header_read_timeout: Duration,
    /// GOAWAY once a connection is this old.
    max_age: Option<Duration>,
    /// After the age's GOAWAY, how long the open calls get before the cut.
    max_age_grace: Option<Duration>,
    /// Receive window of the connection: its request budget, so a peer
    /// cannot push more unasked.
    connection_window: u32,
    /// Receive window of each stream: small enough that streams waiting for
    /// room in the budget (which are not read) can never fill the
    /// connection's window between them, which would stall the streams that
    /// have room (`budget.rs`).
    stream_window: u32,
}

impl From<(&Http2Config, &LimitsConfig)> for HttpSettings {
    fn from((config, limits): (&Http2Config, &LimitsConfig)) -> Self {
        let connection_window = limits.connection_request_buffer_budget.min(MAX_WINDOW) as u32;
        let streams = config.max_concurrent_streams.max(1);
        Self {
            connection_window,
            stream_window: (connection_window / streams).clamp(1, MAX_STREAM_WINDOW),
            max_concurrent_streams: config.max_concurrent_streams,
            keepalive_interval: *config.keepalive_interval,
            keepalive_timeout: *config.keepalive_timeout,
            max_header_list_size: config.max_header_list_size,
            header_read_timeout: *config.handshake_timeout,
            max_age: config.max_connection_age.map(Into::into),
            max_age_grace: config.max_connection_age_grace.map(Into::into),
        }
    }
}

impl HttpSettings {
    /// Streams a connection may have open at once.
    pub(crate) fn max_concurrent_streams(&self) -> u32 {
        self.max_concurrent_streams
    }

    /// The largest header section a request may have.
    pub(crate) fn max_header_list_size(&self) -> u32 {
        self.max_header_list_size
    }

    /// The receive windows: each stream's, and the connection's.
    pub(crate) fn windows(&self) -> (u32, u32) {
        (self.stream_window, self.connection_window)
    }

    /// The keepalive ping interval, and how long an answer may take.
    pub(crate) fn keepalive(&self) -> (Duration, Duration) {
        (self.keepalive_interval, self.keepalive_timeout)
    }

    /// The maximum age of a connection, and the grace after it.
    pub(crate) fn max_age(&self) -> (Option<Duration>, Option<Duration>) {
        (self.max_age, self.max_age_grace)
    }

    /// hyper's HTTP/1.1 and HTTP/2 server with these settings, running
    /// HTTP/2 streams with `streams`.
    fn builder(&self, streams: StreamExecutor) -> auto::Builder<StreamExecutor> {
        let mut builder = auto::Builder::new(streams);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // The same bound on a request's headers as HTTP/2's header list.
            .max_buf_size((self.max_header_list_size as usize).max(MIN_HTTP1_BUFFER));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
            .keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .max_header_list_size(self.max_header_list_size)
            .initial_stream_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window);
        builder
    }
}

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where hyper runs each HTTP/2 stream (a call: the layers, the handler and
/// the answer's body): a task of its own, or, on a single-threaded runtime,
/// first inside its connection's task, where most unary calls finish in one
/// poll and so cost no spawn, schedule or wake-up (BENCHMARKS.md). A stream
/// still going after that poll (a stream of messages, a slow handler) gets
/// its task then: polled in step with its connection, a bidi ping-pong's
/// answers were written a few at a time and its throughput halved.
#[derive(Clone)]
pub(crate) struct StreamExecutor {
    /// Streams handed over and not yet polled; `None`: spawn each.
    in_connection: Option<Arc<Mutex<Vec<StreamFuture>>>>,
}

impl StreamExecutor {
    /// For a connection served by the current runtime.
    fn for_runtime() -> Self {
        let single_threaded = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread;
        Self {
            in_connection: single_threaded.then(Arc::default),
        }
    }

    /// Polls each stream handed to the connection's task once, as long as
    /// it polls this, and spawns those that do not finish; never ends. The
    /// streams are taken out of the hand-over list before they are polled,
    /// so that one that starts another (an upgrade) cannot deadlock.
    async fn run_streams(&self) -> Infallible {
        let Some(handed_over) = &self.in_connection else {
            return std::future::pending().await;
        };
        std::future::poll_fn(|cx| {
            loop {
                let streams = std::mem::take(
                    &mut *handed_over.lock().unwrap_or_else(PoisonError::into_inner),
                );
                if streams.is_empty() {
                    return Poll::Pending;
                }
                for mut stream in streams {
                    // A wake-up meant for this poll reaches the connection's
                    // task, which ignores it; the new task's first poll
                    // registers its own.
                    if stream.as_mut().poll(cx).is_pending() {
                        tokio::spawn(stream);
                    }
                }
            }
        })
        .await
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        match &self.in_connection {
            Some(handed_over) => handed_over
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Box::pin(future)),
            None => {
                tokio::spawn(future);
            }
        }
    }
}

/// Serves `connection` with `service` until it ends, is cut, or (after
/// `stop`) has drained.
///
/// Every byte of the returned future is memory each idle connection holds:
/// the set-up runs before it, so that the arguments take no room in it, and
/// what it keeps is only what the serving loop uses.
pub(crate) fn serve_connection<S, B>(
    connection: Connection,
    service: S,
    shared: &Shared,
) -> impl Future<Output = ()> + Send + 'static
where
    S: Stack<B>,
    B: AnswerBody,
{
    let settings = shared.settings;
    let flushes = connection.flushes();
    let control = ConnectionControl::default();
    let budgets = shared.budgets.connection(control.clone());
    let mut peer = connection.peer().clone();
    // Listed while the connection is served (the guard lives in its future).
    let channelz = shared
        .channelz
        .as_ref()
        .map(|channelz| channelz.open_socket(connection.local_addr(), &mut peer, "TCP"));
    let service = PerConnection {
        inner: service,
        peer,
        control: control.clone(),
        flushes: Some(Arc::clone(&flushes)),
        budgets: Arc::clone(&budgets),
        served: Arc::clone(&shared.served),
    };
    let streams = StreamExecutor::for_runtime();
    // Owned, so that the builder lives only until the protocol is known;
    // boxed, so that it can be pinned without a copy in the future.
    let mut conn = Box::pin(
        settings
            .builder(streams.clone())
            .serve_connection(TokioIo::new(connection), TowerToHyperService::new(service))
            .into_owned(),
    );
    let mut lifetime = Lifetime::new(
        control,
        shared.chaos.as_deref().map(Chaos::subscribe),
        shared.stop.clone(),
        settings.max_age(),
    );
    async move {
        let _channelz = channelz;
        let run_streams = streams.run_streams();
        let mut run_streams = std::pin::pin!(run_streams);
        loop {
            let turn = tokio::select! {
                // The connection first, so that the streams it hands over are
                // polled in the same turn (`StreamExecutor`).
                biased;
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(cause = %err, "connection ended with an error");
                    }
                    return;
                }
                // Polling the connection again flushes it (see `Flushes`).
                () = flushes.poke.notified() => continue,
                turn = lifetime.next() => turn,
                never = run_streams.as_mut() => match never {},
            };
            match turn {
                Turn::Close(reason) => {
                    tracing::debug!(reason, "closing the connection");
                    return;
                }
                Turn::Drain(reason) => {
                    tracing::debug!(reason, "GOAWAY: draining the connection");
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The server's whole stack as each connection serves it (a clone each):
/// named once, for the functions that pass it on.
pub(crate) trait Stack<B>:
    Service<
        http::Request<Body>,
        Response = http::Response<B>,
        Error: Into<StdError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> Stack<B> for S where
    S: Service<
            http::Request<Body>,
            Response = http::Response<B>,
            Error: Into<StdError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The body of the stack's answers.
pub(crate) trait AnswerBody:
    HttpBody<Data = Bytes, Error = Status> + Send + 'static
{
}

impl<B> AnswerBody for B where B: HttpBody<Data = Bytes, Error = Status> + Send + 'static {}

/// What serving shares with every connection, over TCP and QUIC.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) settings: HttpSettings,
    pub(crate) budgets: Arc<Budgets>,
    pub(crate) served: Arc<Served>,
    pub(crate) chaos: Option<Arc<Chaos>>,
    /// Where each connection is shown, with `--channelz`.
    pub(crate) channelz: Option<Arc<Channelz>>,
    /// Cancelled when shutdown begins: no new connections, GOAWAY on the rest.
    pub(crate) stop: CancellationToken,
}

/// What the requests of every connection share: the counters, and with
/// HTTP/3 on the `Alt-Svc` header that points answers over TCP at it. One
/// per server, so that a connection holds one pointer to it.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) stats: Arc<Stats>,
    pub(crate) alt_svc: Option<HeaderValue>,
}

/// `inner` for the requests of one connection: gives them its [`Arrival`]
/// and budgets, counts them, and applies [`ResetStream`] to their responses
/// (HTTP/3, which has no [`Flushes`], applies it itself: the extension stays).
#[derive(Clone)]
pub(crate) struct PerConnection<S> {
    pub(crate) inner: S,
    pub(crate) peer: PeerInfo,
    pub(crate) control: ConnectionControl,
    pub(crate) flushes: Option<Arc<Flushes>>,
    pub(crate) budgets: Arc<LazyBudgets>,
    pub(crate) served: Arc<Served>,
}

impl<S, B> Service<http::Request<Incoming>> for PerConnection<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    B: AnswerBody,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = PerConnectionFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        if request.version() < http::Version::HTTP_2 {
            return self.call_with(request.map(|body| DrainedHttp1Body(Some(body))));
        }
        self.call_with(request)
    }
}

impl<S, B> PerConnection<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    B: AnswerBody,
{
    pub(crate) fn call_with<R>(
        &mut self,
        request: http::Request<R>,
    ) -> PerConnectionFuture<S::Future>
    where
        R: HttpBody<Data = Bytes> + Send + 'static,
        R::Error: Into<StdError>,
    {
        // Made at the connection's first request; every answer is counted.
        let budgets = self.budgets.get();
        // Counted where the body is boxed anyway, so the budgets cost no
        // allocation; only enveloped bodies, whose length prefixes the budget reads.
        let mut request = if is_enveloped(request.headers()) {
            let budgets = Arc::clone(budgets);
            request.map(|body| boxed(BudgetedRequest::new(body, budgets)))
        } else {
            request.map(Body::new)
        };
        let version = request.version();
        let arrival = Arrival {
            peer: self.peer.clone(),
            control: self.control.clone(),
            version,
            authority: request.uri().authority().cloned(),
        };
        request.extensions_mut().insert(arrival);
        self.served.stats.http_requests.of(version).inc();
        PerConnectionFuture {
            inner: self.inner.call(request),
            flushes: self.flushes.clone(),
            budgets: Arc::clone(budgets),
            served: Arc::clone(&self.served),
            // Answers over HTTP/3 need not point at it.
            over_http3: version == http::Version::HTTP_3,
        }
    }
}

/// What an HTTP/1.1 connection reads of a request body that its call no
/// longer wants (it answered early: an error, a size limit) before giving up
/// the connection.
const HTTP1_DRAIN_LIMIT: usize = 8 * 1024 * 1024;
/// How long it reads it.
const HTTP1_DRAIN_TIME: Duration = Duration::from_secs(5);

/// An HTTP/1.1 request body that, dropped before its end, is read to its end
/// (up to [`HTTP1_DRAIN_LIMIT`] and [`HTTP1_DRAIN_TIME`]) by a task of its
/// own. hyper closes a connection whose request body was left unread, and a
/// client still writing that body then meets a broken pipe instead of the
/// answer sent to it (Go's server drains the same way).
struct DrainedHttp1Body(Option<Incoming>);

impl HttpBody for DrainedHttp1Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.0.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for DrainedHttp1Body {
    fn drop(&mut self) {
        let Some(mut body) = self.0.take().filter(|body| !body.is_end_stream()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0;
                while let Some(Ok(frame)) =
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                {
                    read += frame.data_ref().map_or(0, Bytes::len);
                    if read > HTTP1_DRAIN_LIMIT {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(HTTP1_DRAIN_TIME, drain).await;
        });
    }
}

/// Whether a request's body is a stream of enveloped messages (gRPC,
/// binary gRPC-Web, Connect streams) rather than one bare message (Connect
/// unary) or base64 text (gRPC-Web text).
fn is_enveloped(headers: &http::HeaderMap) -> bool {
    let Some(content_type) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let content_type = content_type.as_bytes();
    (content_type.starts_with(b"application/grpc")
        && !content_type.starts_with(b"application/grpc-web-text"))
        || content_type.starts_with(b"application/connect+")
}

pin_project! {
    pub(crate) struct PerConnectionFuture<F> {
        #[pin]
        inner: F,
        flushes: Option<Arc<Flushes>>,
        budgets: Arc<ConnectionBudgets>,
        served: Arc<Served>,
        over_http3: bool,
    }
}

impl<F, B, E> Future for PerConnectionFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: AnswerBody,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(alt_svc) = this.served.alt_svc.as_ref().filter(|_| !*this.over_http3) {
            response
                .headers_mut()
                .insert(http::header::ALT_SVC, alt_svc.clone());
        }
        let reset = match this.flushes {
            Some(_) => response.extensions_mut().remove::<ResetStream>(),
            None => None,
        };
        let budgets = Arc::clone(this.budgets);
        Poll::Ready(Ok(response.map(|body| {
            // Outermost but for the reset: h2's wake-ups for send capacity
            // pass over the budget's count and every body within.
            let body = WokenBody::new(BudgetedAnswer::new(body, budgets));
            match (reset, this.flushes) {
                (Some(ResetStream(code)), Some(flushes)) => boxed(ResetAtEnd {
                    inner: boxed(body),
                    code,
                    flushes: Arc::clone(flushes),
                    written: None,
                }),
                _ => boxed(body),
            }
        })))
    }
}

pin_project! {
    /// `inner`'s data, then, once that is written, an error that makes hyper
    /// reset the stream with `code` (hyper takes the RST_STREAM code from an
    /// `h2::Error` among the body error's sources).
    struct ResetAtEnd {
        #[pin]
        inner: Body,
        code: u32,
        flushes: Arc<Flushes>,
        written: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    }
}

impl HttpBody for ResetAtEnd {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if this.written.is_none() {
            match ready!(this.inner.poll_frame(cx)) {
                Some(Ok(frame)) if frame.is_data() => return Poll::Ready(Some(Ok(frame))),
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                Some(Ok(_)) | None => {
                    *this.written = Some(Box::pin(Arc::clone(this.flushes).all_queued()));
                }
            }
        }
        if let Some(written) = this.written {
            ready!(written.as_mut().poll(cx));
        }
        let reset = h2::Error::from(h2::Reason::from(*this.code));
        Poll::Ready(Some(Err(Status::from_error(Box::new(reset)))))
    }
}
