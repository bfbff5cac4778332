//! HTTP messages over `h3` request streams, for the server's and the client
//! library's HTTP/3: a stream's receiving half read as an [`http_body::Body`]
//! (data, then trailers), and a body written to a sending half.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use h3::quic;
use http::HeaderMap;
use http_body::{Body, Frame};

/// The receiving half of a request stream (the server's or the client's).
pub trait ReceiveHalf: Send + Unpin {
    /// The next piece of the message's body; `None` at its end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>>;
    /// The trailers, after the body's end; `None` when there are none.
    fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, StreamError>>;
}

/// [`ReceiveHalf`] for the request streams of `h3::$side` (server or client).
macro_rules! receive_half {
    ($side:ident) => {
        impl<S: quic::RecvStream + Send + Unpin> ReceiveHalf
            for h3::$side::RequestStream<S, Bytes>
        {
            fn poll_data(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Option<Bytes>, StreamError>> {
                self.poll_recv_data(cx)
                    .map_ok(|data| data.map(|mut data| data.copy_to_bytes(data.remaining())))
            }

            fn poll_trailers(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Option<HeaderMap>, StreamError>> {
                self.poll_recv_trailers(cx)
            }
        }
    };
}

receive_half!(server);
receive_half!(client);

/// The sending half of a request stream (the server's or the client's).
pub trait SendHalf: Send {
    /// Sends a piece of the message's body.
    fn send_data(&mut self, data: Bytes) -> impl Future<Output = Result<(), StreamError>> + Send;
    /// Sends the trailers, which end the message.
    fn send_trailers(
        &mut self,
        trailers: HeaderMap,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;
    /// Ends the message.
    fn finish(&mut self) -> impl Future<Output = Result<(), StreamError>> + Send;
}

/// [`SendHalf`] for the request streams of `h3::$side` (server or client).
macro_rules! send_half {
    ($side:ident) => {
        impl<S: quic::SendStream<Bytes> + Send> SendHalf for h3::$side::RequestStream<S, Bytes> {
            fn send_data(
                &mut self,
                data: Bytes,
            ) -> impl Future<Output = Result<(), StreamError>> + Send {
                h3::$side::RequestStream::send_data(self, data)
            }

            fn send_trailers(
                &mut self,
                trailers: HeaderMap,
            ) -> impl Future<Output = Result<(), StreamError>> + Send {
                h3::$side::RequestStream::send_trailers(self, trailers)
            }

            fn finish(&mut self) -> impl Future<Output = Result<(), StreamError>> + Send {
                h3::$side::RequestStream::finish(self)
            }
        }
    };
}

send_half!(server);
send_half!(client);

/// Why [`send_body`] stopped, and the code to reset the stream with.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The body failed.
    #[error("body failed: {0}")]
    Body(String),
    /// The stream failed (the peer went away).
    #[error("{0}")]
    Stream(#[from] StreamError),
}

impl SendError {
    /// The HTTP/3 error code to reset the stream with.
    pub fn code(&self) -> Code {
        match self {
            Self::Body(_) => Code::H3_INTERNAL_ERROR,
            Self::Stream(_) => Code::H3_REQUEST_CANCELLED,
        }
    }
}

/// Writes `body` to `send`: its data, then its trailers (if any), then the
/// end of the message unless `end` is false (the caller resets instead).
pub async fn send_body<B>(send: &mut impl SendHalf, body: B, end: bool) -> Result<(), SendError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut trailers = None;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|err| SendError::Body(err.to_string()))?;
        match frame.into_data() {
            Ok(data) => send.send_data(data).await?,
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    if !end {
        return Ok(());
    }
    if let Some(trailers) = trailers {
        send.send_trailers(trailers).await?;
    }
    Ok(send.finish().await?)
}

/// A message's body read from the receiving half of its stream: data, then
/// trailers.
pub struct ReceivedBody<R> {
    stream: R,
    read: Read,
}

/// What a [`ReceivedBody`] reads next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Data,
    Trailers,
    Nothing,
}

impl<R> ReceivedBody<R> {
    /// The body arriving on `stream`.
    pub fn new(stream: R) -> Self {
        Self {
            stream,
            read: Read::Data,
        }
    }
}

impl<R: ReceiveHalf> Body for ReceivedBody<R> {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        if self.read == Read::Data {
            match ready!(self.stream.poll_data(cx)) {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => self.read = Read::Trailers,
                Err(err) => {
                    self.read = Read::Nothing;
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
        if self.read == Read::Nothing {
            return Poll::Ready(None);
        }
        let trailers = ready!(self.stream.poll_trailers(cx));
        self.read = Read::Nothing;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(err) => Poll::Ready(Some(Err(err))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read == Read::Nothing
    }
}
