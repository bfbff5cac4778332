//! Accepted TCP connections, with a cap on how many are open, a deadline for
//! the HTTP/2 preface (hyper has neither: a silent peer would hold a connection,
//! and graceful shutdown, forever), and an optional hard end of life.
//!
//! The hard end of life completes `--max-connection-age-grace`: tonic sends
//! the age's GOAWAY only when no grace is set, and with one it cuts the
//! connection at age + grace without any GOAWAY. So tonic is given the age
//! alone, and the cut comes from here.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes a client sends first: the 24-byte preface and a SETTINGS frame header.
const PREFACE_LEN: usize = 24 + 9;

/// Accepts connections from `listener` while fewer than `max_connections` are
/// open; one over the cap is closed at once.
pub(crate) fn accept(
    listener: TcpListener,
    max_connections: usize,
    handshake_timeout: Duration,
    max_lifetime: Option<Duration>,
) -> impl Stream<Item = io::Result<Connection>> {
    let permits = Arc::new(Semaphore::new(max_connections));
    async_stream::stream! {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Per-connection failures (e.g. reset before accept) must not stop the server.
                Err(err) => {
                    tracing::debug!(cause = %err, "accept failed");
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                tracing::warn!(%peer, max_connections, "connection limit reached: closing new connection");
                continue;
            };
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(cause = %err, "cannot set TCP_NODELAY");
            }
            yield Ok(Connection {
                stream,
                _permit: permit,
                preface_read: 0,
                preface_deadline: Some(Box::pin(tokio::time::sleep(handshake_timeout))),
                end_of_life: max_lifetime.map(|lifetime| Box::pin(tokio::time::sleep(lifetime))),
            });
        }
    }
}

pin_project! {
    /// An accepted connection: closed with an error if the preface is late or
    /// its lifetime is over.
    pub struct Connection {
        #[pin]
        stream: TcpStream,
        _permit: OwnedSemaphorePermit,
        preface_read: usize,
        preface_deadline: Option<Pin<Box<Sleep>>>,
        end_of_life: Option<Pin<Box<Sleep>>>,
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if let Some(end) = this.end_of_life
            && end.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection past its maximum age and grace",
            )));
        }
        let before = buf.filled().len();
        let result = this.stream.poll_read(cx, buf);
        if let Some(deadline) = this.preface_deadline {
            *this.preface_read += buf.filled().len() - before;
            if *this.preface_read >= PREFACE_LEN {
                *this.preface_deadline = None;
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
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}
