//! Where a call's time went, phase by phase (`ClientBuilder::timing`): the
//! connection's (name resolution, TCP connect, the TLS handshake with its
//! version, ALPN and resumption, HTTP/2 setup; QUIC's handshake for HTTP/3)
//! as the connector makes it, and the call's own (request sent, response
//! headers, first message, last message, trailers) as its bodies flow; and
//! the bytes every connection put on the wire and took off it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tower_service::Service;

use crate::classify::{BoxError, chain_text};

/// One phase: its name, when it began and ended, and what it found (the TLS
/// version, the address connected to).
#[derive(Debug, Clone)]
pub struct Phase {
    /// What happened: `resolve`, `TCP connect`, `TLS handshake`, ...
    pub name: &'static str,
    /// When it began.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
    /// What it found, in words (may be empty).
    pub detail: String,
}

impl Phase {
    /// How long it took.
    pub fn duration(&self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }
}

/// One call's phases, with those of the connection it opened (`None` when it
/// went on a connection opened before: those phases were skipped).
#[derive(Debug, Clone)]
pub struct CallTiming {
    /// The call's path (`/package.Service/Method`).
    pub path: String,
    /// The connection's phases, when this call's connection was new.
    pub connection: Option<Vec<Phase>>,
    /// The call's own phases, in order.
    pub phases: Vec<Phase>,
}

impl CallTiming {
    /// When the report begins: the connection's first phase, else the call's.
    pub fn origin(&self) -> Option<Instant> {
        self.connection
            .iter()
            .flatten()
            .chain(&self.phases)
            .map(|phase| phase.start)
            .min()
    }

    /// The call phase `name`'s end, measured from the call's start.
    pub fn since_call_start(&self, name: &str) -> Option<Duration> {
        let start = self.phases.first()?.start;
        let phase = self.phases.iter().find(|phase| phase.name == name)?;
        Some(phase.end.saturating_duration_since(start))
    }
}

/// The phases of the calls a client makes; cheap to clone (clones share).
/// Each finished call is kept until taken ([`Timeline::take_calls`]), or
/// handed to a sink ([`Timeline::with_sink`]); connections are kept for the
/// client's life ([`Timeline::connections`]).
#[derive(Clone)]
pub struct Timeline {
    recorded: Arc<Mutex<Recorded>>,
    sink: Option<Sink>,
    /// Whether calls are timed (not when only bytes are counted).
    calls: bool,
    bytes: Arc<WireBytes>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            recorded: Arc::default(),
            sink: None,
            calls: true,
            bytes: Arc::default(),
        }
    }
}

/// The bytes every connection sent and received: TCP's counted as they go,
/// QUIC's (UDP datagrams, headers included) read from each connection's
/// statistics, while it is open and once more as it is let go.
#[derive(Debug, Default)]
struct WireBytes {
    sent: AtomicU64,
    received: AtomicU64,
    open_quic: Mutex<Vec<Weak<quinn::Connection>>>,
}

type Sink = Arc<dyn Fn(CallTiming) + Send + Sync>;

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("recorded", &self.recorded)
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

#[derive(Debug, Default)]
struct Recorded {
    connections: Vec<Vec<Phase>>,
    /// Indexes into `connections` of those no call has claimed yet.
    unclaimed: VecDeque<usize>,
    calls: Vec<CallTiming>,
}

impl Timeline {
    /// A timeline that keeps every call until taken.
    pub fn new() -> Self {
        Self::default()
    }

    /// A timeline that hands each finished call to `sink` and keeps none (a
    /// load run's, which makes too many calls to keep).
    pub fn with_sink(sink: impl Fn(CallTiming) + Send + Sync + 'static) -> Self {
        Self {
            sink: Some(Arc::new(sink)),
            ..Self::default()
        }
    }

    /// A timeline that times no call: it only counts the bytes each
    /// connection sends and receives ([`Timeline::wire_bytes`]), and the
    /// connections' phases.
    pub fn bytes_only() -> Self {
        Self {
            calls: false,
            ..Self::default()
        }
    }

    /// The bytes sent and received on the wire by every connection so far:
    /// TCP's payload (TLS records included), or QUIC's UDP payload.
    pub fn wire_bytes(&self) -> (u64, u64) {
        let bytes = &self.bytes;
        let (mut sent, mut received) = (
            bytes.sent.load(Ordering::Relaxed),
            bytes.received.load(Ordering::Relaxed),
        );
        let open = bytes.open_quic.lock().unwrap_or_else(|p| p.into_inner());
        for connection in open.iter().filter_map(Weak::upgrade) {
            let stats = connection.stats();
            sent += stats.udp_tx.bytes;
            received += stats.udp_rx.bytes;
        }
        (sent, received)
    }

    /// A QUIC connection now open: its bytes are read while it lives.
    pub(crate) fn quic_opened(&self, connection: &Arc<quinn::Connection>) {
        let mut open = self
            .bytes
            .open_quic
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.retain(|weak| weak.strong_count() > 0);
        open.push(Arc::downgrade(connection));
    }

    /// A QUIC connection let go: its bytes, for good.
    pub(crate) fn quic_closed(&self, connection: &quinn::Connection) {
        let stats = connection.stats();
        self.bytes
            .sent
            .fetch_add(stats.udp_tx.bytes, Ordering::Relaxed);
        self.bytes
            .received
            .fetch_add(stats.udp_rx.bytes, Ordering::Relaxed);
    }

    /// Whether calls are timed (else only connections and bytes are).
    pub(crate) fn times_calls(&self) -> bool {
        self.calls
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panic while holding the lock leaves the phases as they were.
        self.recorded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The calls finished since the last take, in the order they finished.
    pub fn take_calls(&self) -> Vec<CallTiming> {
        std::mem::take(&mut self.lock().calls)
    }

    /// Every connection's phases, in the order they were opened.
    pub fn connections(&self) -> Vec<Vec<Phase>> {
        self.lock().connections.clone()
    }

    /// A new connection's first phases; its index, for phases that follow.
    pub(crate) fn connection_opened(&self, phases: Vec<Phase>) -> usize {
        let mut recorded = self.lock();
        recorded.connections.push(phases);
        let index = recorded.connections.len() - 1;
        recorded.unclaimed.push_back(index);
        index
    }

    pub(crate) fn connection_phase(&self, index: usize, phase: Phase) {
        if let Some(phases) = self.lock().connections.get_mut(index) {
            phases.push(phase);
        }
    }

    fn call_finished(&self, path: String, phases: Vec<Phase>) {
        let mut recorded = self.lock();
        // The call that opened a connection is the first to end after it:
        // the oldest connection not yet claimed that began before the answer.
        let answered = phases.last().map_or_else(Instant::now, |phase| phase.end);
        let connection = match recorded.unclaimed.front() {
            Some(&index)
                if recorded.connections[index]
                    .first()
                    .is_some_and(|phase| phase.start <= answered) =>
            {
                recorded.unclaimed.pop_front();
                Some(recorded.connections[index].clone())
            }
            _ => None,
        };
        let call = CallTiming {
            path,
            connection,
            phases,
        };
        match &self.sink {
            Some(sink) => {
                drop(recorded);
                sink(call);
            }
            None => recorded.calls.push(call),
        }
    }

    /// `request` timed: the request's body until its end, the answer's
    /// headers, its first and last message and its trailers.
    pub(crate) fn call(
        &self,
        request: Request<Body>,
        send: impl FnOnce(Request<Body>) -> BoxFuture<Response<Body>, BoxError>,
    ) -> BoxFuture<Response<Body>, BoxError> {
        let started = Instant::now();
        let call = Arc::new(Mutex::new(OpenCall {
            timeline: self.clone(),
            path: request.uri().path().to_owned(),
            started,
            phases: Vec::new(),
            last_mark: started,
            finished: false,
        }));
        let request = request.map(|body| {
            Body::new(TimedBody {
                inner: body,
                call: Arc::clone(&call),
                side: Side::Request,
                seen_data: false,
            })
        });
        let answer = send(request);
        Box::pin(async move {
            let answer = answer.await;
            let mut open = lock(&call);
            match answer {
                Ok(response) => {
                    open.mark("response headers", "");
                    drop(open);
                    Ok(response.map(|body| {
                        Body::new(TimedBody {
                            inner: body,
                            call,
                            side: Side::Response,
                            seen_data: false,
                        })
                    }))
                }
                Err(error) => {
                    // No answer came: the phase says why, each cause once.
                    open.mark("failed", &chain_text(&*error));
                    open.finish();
                    Err(error)
                }
            }
        })
    }
}

fn lock(call: &Mutex<OpenCall>) -> MutexGuard<'_, OpenCall> {
    call.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A call under way: its phases so far.
#[derive(Debug)]
struct OpenCall {
    timeline: Timeline,
    path: String,
    started: Instant,
    phases: Vec<Phase>,
    /// Where the next phase begins: the end of the one before.
    last_mark: Instant,
    finished: bool,
}

impl OpenCall {
    fn mark(&mut self, name: &'static str, detail: &str) {
        let now = Instant::now();
        // "request sent" is measured from the call's start: the answer may
        // come before the request has ended (a stream).
        let start = if name == "request sent" {
            self.started
        } else {
            self.last_mark
        };
        self.phases.push(Phase {
            name,
            start,
            end: now,
            detail: detail.to_owned(),
        });
        if name != "request sent" {
            self.last_mark = now;
        }
    }

    /// Hands the phases to the timeline once (the answer's end, or a failure).
    fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let mut phases = std::mem::take(&mut self.phases);
        phases.sort_by_key(|phase| phase.end);
        self.timeline
            .call_finished(std::mem::take(&mut self.path), phases);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

pin_project! {
    /// A body that marks its call's phases as it flows.
    struct TimedBody {
        #[pin]
        inner: Body,
        call: Arc<Mutex<OpenCall>>,
        side: Side,
        seen_data: bool,
    }

    impl PinnedDrop for TimedBody {
        fn drop(this: Pin<&mut Self>) {
            // An answer dropped before its end (a cancelled call) still reports.
            if this.side == Side::Response {
                lock(&this.call).finish();
            }
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let mut call = lock(this.call);
        match (*this.side, &frame) {
            (Side::Request, None) => call.mark("request sent", ""),
            (Side::Request, _) => {}
            (Side::Response, Some(Ok(frame))) if frame.is_data() => {
                if !std::mem::replace(this.seen_data, true) {
                    call.mark("first message", "");
                } else {
                    // Only the last data frame's mark stays.
                    if call
                        .phases
                        .last()
                        .is_some_and(|phase| phase.name == "last message")
                    {
                        call.phases.pop();
                    }
                    let start = call
                        .phases
                        .iter()
                        .rev()
                        .find(|phase| phase.name == "first message")
                        .map_or(call.last_mark, |phase| phase.end);
                    let now = Instant::now();
                    call.phases.push(Phase {
                        name: "last message",
                        start,
                        end: now,
                        detail: String::new(),
                    });
                    call.last_mark = now;
                }
            }
            (Side::Response, Some(Ok(_))) => call.mark("trailers", ""),
            (Side::Response, Some(Err(_)) | None) => call.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// TLS for a timed connection: the configuration (its ALPN set for the HTTP
/// version) and the name the certificate must have.
#[derive(Clone)]
pub(crate) struct TimedTls {
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for TimedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Connects as hyper's and tonic's connectors do (resolve, TCP with
/// `TCP_NODELAY`, TLS), recording each phase; HTTP/2's setup ends when the
/// server's first bytes (its SETTINGS) arrive.
#[derive(Debug, Clone)]
pub(crate) struct TimedConnector {
    pub(crate) timeline: Timeline,
    pub(crate) tls: Option<TimedTls>,
    pub(crate) connect_timeout: Option<Duration>,
    /// The HTTP version's setup phase, if it has one (`HTTP/2 setup`).
    pub(crate) setup: Option<&'static str>,
}

impl Service<Uri> for TimedConnector {
    type Response = TokioIo<TimedStream>;
    type Error = BoxError;
    type Future = BoxFuture<TokioIo<TimedStream>, BoxError>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let limit = this.connect_timeout;
            let connecting = this.connect(uri);
            match limit {
                Some(limit) => tokio::time::timeout(limit, connecting)
                    .await
                    .map_err(|_| "connecting timed out")?,
                None => connecting.await,
            }
        })
    }
}

impl TimedConnector {
    async fn connect(self, uri: Uri) -> Result<TokioIo<TimedStream>, BoxError> {
        let host = uri.host().ok_or("the endpoint has no host")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let mut phases = Vec::new();
        let start = Instant::now();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .collect();
        let end = Instant::now();
        let listed = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        phases.push(Phase {
            name: "resolve",
            start,
            end,
            detail: format!("{host} -> {listed}"),
        });
        let mut last_error: Option<io::Error> = None;
        let mut tcp = None;
        for addr in &addrs {
            let start = Instant::now();
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    phases.push(Phase {
                        name: "TCP connect",
                        start,
                        end: Instant::now(),
                        detail: addr.to_string(),
                    });
                    tcp = Some(stream);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let tcp = match (tcp, last_error) {
            (Some(tcp), _) => tcp,
            (None, Some(error)) => return Err(error.into()),
            (None, None) => return Err(format!("{host} has no address").into()),
        };
        tcp.set_nodelay(true)?;
        let tcp = CountedTcp {
            tcp,
            bytes: Arc::clone(&self.timeline.bytes),
        };
        let stream = match &self.tls {
            None => Io::Plain(tcp),
            Some(tls) => {
                let start = Instant::now();
                let stream = tls.connector.connect(tls.server_name.clone(), tcp).await?;
                let (_, session) = stream.get_ref();
                phases.push(Phase {
                    name: "TLS handshake",
                    start,
                    end: Instant::now(),
                    detail: tls_detail(session),
                });
                Io::Tls(Box::new(stream))
            }
        };
        let setup_from = Instant::now();
        let index = self.timeline.connection_opened(phases);
        let setup = self
            .setup
            .map(|name| (self.timeline.clone(), index, name, setup_from));
        Ok(TokioIo::new(TimedStream { io: stream, setup }))
    }
}

/// The TLS session in words: version, ALPN, and whether it was resumed.
fn tls_detail(session: &rustls::ClientConnection) -> String {
    let version = session
        .protocol_version()
        .and_then(|version| version.as_str())
        .unwrap_or("unknown version")
        .replace('_', ".")
        .replace("TLSv1.", "TLS 1.");
    let alpn = session.alpn_protocol().map_or_else(
        || "none".to_owned(),
        |alpn| String::from_utf8_lossy(alpn).into_owned(),
    );
    let kind = match session.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => "resumed",
        Some(rustls::HandshakeKind::FullWithHelloRetryRequest) => "full, after a HelloRetryRequest",
        _ => "full",
    };
    format!("{version}, ALPN {alpn}, {kind} handshake")
}

/// A stream plain or in TLS.
#[derive(Debug)]
enum Io {
    Plain(CountedTcp),
    Tls(Box<tokio_rustls::client::TlsStream<CountedTcp>>),
}

/// A TCP stream that counts the bytes it carries (TLS records included).
#[derive(Debug)]
struct CountedTcp {
    tcp: TcpStream,
    bytes: Arc<WireBytes>,
}

impl AsyncRead for CountedTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.bytes
            .received
            .fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for CountedTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.count(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.count(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl CountedTcp {
    fn count(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = &written {
            self.bytes.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        written
    }
}

/// A connection that ends its HTTP setup phase when the server's first bytes arrive.
#[derive(Debug)]
pub(crate) struct TimedStream {
    io: Io,
    setup: Option<(Timeline, usize, &'static str, Instant)>,
}

impl Connection for TimedStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        match &self.io {
            Io::Tls(stream) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                connected.negotiated_h2()
            }
            _ => connected,
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        };
        if polled.is_ready()
            && buf.filled().len() > before
            && let Some((timeline, index, name, start)) = self.setup.take()
        {
            timeline.connection_phase(
                index,
                Phase {
                    name,
                    start,
                    end: Instant::now(),
                    detail: "until the server's first frame (its SETTINGS)".to_owned(),
                },
            );
        }
        polled
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
