//! The accept loop: connections capped in number, TLS handshakes run side by
//! side and bounded in time, a deadline for the HTTP/2 preface (hyper has
//! none: a silent peer would hold a connection, and graceful shutdown,
//! forever; an HTTP/1.1 peer is known by its first bytes and left to hyper's
//! header read timeout), and a pause instead of a spin when the process is out of file
//! descriptors.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;

use echo_wire::h2_frames::PREFACE;

use super::tls::Tls;
use crate::config::{Http2Config, LimitsConfig};
use crate::context::PeerInfo;
use crate::ops::stats::{OpenConnection, Stats};

/// Bytes an HTTP/2 client sends first: the preface and a SETTINGS frame header.
const PREFACE_LEN: usize = PREFACE.len() + 9;
/// First pause after an accept error that is not about one connection.
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while such errors go on.
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Limits on each accepted connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: Option<usize>,
    /// For the TLS handshake, then again for the HTTP/2 preface.
    pub(crate) handshake_timeout: Duration,
}

impl From<(&LimitsConfig, &Http2Config)> for ConnectionLimits {
    fn from((limits, http2): (&LimitsConfig, &Http2Config)) -> Self {
        Self {
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            handshake_timeout: *http2.handshake_timeout,
        }
    }
}

/// Accepts one connection. Errors about that connection alone (reset or
/// aborted before it was accepted) are skipped at once; any other error
/// (EMFILE, ENFILE, ENOBUFS: the process or the system is out of something
/// that only time gives back) pauses the loop, doubling the pause while it
/// goes on, as well-kept servers do, instead of retrying in a hot loop.
pub(crate) async fn accept_or_pause(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut pause = FIRST_ACCEPT_PAUSE;
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) if is_about_one_connection(&err) => {
                tracing::debug!(cause = %err, "accept failed");
            }
            Err(err) => {
                tracing::warn!(cause = %err, pause_ms = pause.as_millis() as u64, "cannot accept connections: pausing");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
            }
        }
    }
}

fn is_about_one_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Which connections may open: under `--max-connections` (TCP and QUIC
/// together) and `--max-connections-per-ip`, each counted in the open
/// connections. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Admission {
    permits: Arc<Semaphore>,
    per_ip: Option<PerIp>,
    stats: Arc<Stats>,
    limits: ConnectionLimits,
}

impl Admission {
    pub(crate) fn new(limits: ConnectionLimits, stats: Arc<Stats>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            per_ip: limits.max_connections_per_ip.map(PerIp::new),
            stats,
            limits,
        }
    }

    /// A place for a new connection from `addr`, or none (the refusal logged)
    /// when a limit is reached.
    pub(crate) fn admit(&self, addr: SocketAddr) -> Option<Slot> {
        let limits = &self.limits;
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            tracing::warn!(peer = %addr, limits.max_connections, "connection limit reached: closing new connection");
            return None;
        };
        let ip_slot = match &self.per_ip {
            Some(per_ip) => match per_ip.take(addr.ip()) {
                Some(slot) => Some(slot),
                None => {
                    tracing::warn!(peer = %addr, limits.max_connections_per_ip, "connection limit per IP address reached: closing new connection");
                    return None;
                }
            },
            None => None,
        };
        Some(Slot {
            _permit: Some(permit),
            _ip: ip_slot,
            _counted: self.stats.open_connection(),
        })
    }

    pub(crate) fn limits(&self) -> ConnectionLimits {
        self.limits
    }
}

/// Accepts connections from `listener` while `admission` lets them in (one
/// over a cap is closed at once). Stops, closing the listener, when the
/// returned stream is dropped.
pub(crate) fn accept(
    listener: TcpListener,
    admission: Admission,
    tls: Option<Tls>,
) -> ReceiverStream<Connection> {
    let (ready, incoming) = mpsc::channel(64);
    let limits = admission.limits();
    tokio::spawn(async move {
        loop {
            let (stream, addr) = tokio::select! {
                accepted = accept_or_pause(&listener) => accepted,
                () = ready.closed() => return,
            };
            let Some(slot) = admission.admit(addr) else {
                continue;
            };
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(cause = %err, "cannot set TCP_NODELAY");
            }
            let peer = PeerInfo::new(addr);
            let local = stream.local_addr().ok();
            let Some(tls) = tls.clone() else {
                let connection = Connection::new(Box::new(stream), peer, local, slot, limits);
                if ready.send(connection).await.is_err() {
                    return;
                }
                continue;
            };
            // Handshakes run side by side: a slow one must not hold up the rest.
            let ready = ready.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(limits.handshake_timeout, tls.accept(stream)).await {
                    Ok(Ok((stream, session))) => {
                        let peer = PeerInfo {
                            tls: Some(Arc::new(session)),
                            ..peer
                        };
                        let _ = ready
                            .send(Connection::new(Box::new(stream), peer, local, slot, limits))
                            .await;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(peer = %addr, cause = %err, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// A connection's place under `--max-connections` (and the per-IP limit),
/// and in the open-connections count; given back when dropped.
pub(crate) struct Slot {
    /// None for a connection handed over in memory, which no listener caps.
    _permit: Option<OwnedSemaphorePermit>,
    _ip: Option<IpSlot>,
    _counted: OpenConnection,
}

/// Open connections per IP address, under `--max-connections-per-ip`.
#[derive(Clone)]
struct PerIp {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Arc::default(),
        }
    }

    /// A place for one more connection from `ip`, if it has fewer than the limit.
    fn take(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().expect("per-IP lock");
        let count = open.entry(ip).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            ip,
            per_ip: self.clone(),
        })
    }
}

/// One connection's place under its IP address's limit; given back when dropped.
struct IpSlot {
    ip: IpAddr,
    per_ip: PerIp,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().expect("per-IP lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A byte stream a connection runs on: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An accepted connection: closed with an error if the preface is late.
pub(crate) struct Connection {
    io: Box<dyn Io>,
    peer: PeerInfo,
    /// The server's end of it (none for one handed over in memory).
    local: Option<SocketAddr>,
    flushes: Arc<Flushes>,
    _slot: Slot,
    preface_read: usize,
    preface_deadline: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    fn new(
        io: Box<dyn Io>,
        peer: PeerInfo,
        local: Option<SocketAddr>,
        slot: Slot,
        limits: ConnectionLimits,
    ) -> Self {
        Self {
            io,
            peer,
            local,
            flushes: Arc::default(),
            _slot: slot,
            preface_read: 0,
            preface_deadline: Some(Box::pin(tokio::time::sleep(limits.handshake_timeout))),
        }
    }

    /// A connection on `io`, handed over in memory (fuzzing) rather than accepted.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn in_memory(
        io: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
        stats: &Stats,
        limits: ConnectionLimits,
    ) -> Self {
        let peer = PeerInfo::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        let slot = Slot {
            _permit: None,
            _ip: None,
            _counted: stats.open_connection(),
        };
        Self::new(Box::new(io), peer, None, slot, limits)
    }

    /// Who is on the other end.
    pub(crate) fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The server's end of the connection.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The count of completed flushes of this connection.
    pub(crate) fn flushes(&self) -> Arc<Flushes> {
        Arc::clone(&self.flushes)
    }
}

/// Counts a connection's completed flushes, so that a stream reset can wait
/// until the frames queued before it are written (h2 drops a reset stream's
/// queued frames).
#[derive(Debug, Default)]
pub(crate) struct Flushes {
    count: AtomicU64,
    waiters: AtomicUsize,
    flushed: Notify,
    /// Wakes the task serving the connection, whose every poll flushes.
    pub(crate) poke: Notify,
}

impl Flushes {
    fn flushed(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        // Waking takes a lock; the hot path only pays for it when someone waits.
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.flushed.notify_waiters();
        }
    }

    /// Completes once everything queued before the call has been flushed:
    /// after two flushes, as the first may have begun earlier. Each round
    /// pokes the connection's task, so a flush comes even on an idle connection.
    pub(crate) async fn all_queued(self: Arc<Self>) {
        let seen = self.count.load(Ordering::Acquire);
        self.waiters.fetch_add(1, Ordering::AcqRel);
        while self.count.load(Ordering::Acquire) < seen + 2 {
            let flushed = self.flushed.notified();
            self.poke.notify_one();
            flushed.await;
        }
        self.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(deadline) = &mut this.preface_deadline {
            let read = &buf.filled()[before..];
            let expected = PREFACE.get(this.preface_read..).unwrap_or_default();
            let compared = read.len().min(expected.len());
            let http1 = read[..compared] != expected[..compared];
            this.preface_read += read.len();
            if this.preface_read >= PREFACE_LEN || http1 {
                this.preface_deadline = None;
            } else if result.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within the handshake timeout",
                )));
            }
        }
        result
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = result {
            this.flushes.flushed();
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
