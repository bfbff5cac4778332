//! Enveloped message streams (gRPC, gRPC-Web and Connect streaming share the
//! 5-byte envelope: flags, then a big-endian length), rewritten a message at a
//! time: JSON to protobuf and back, and gRPC trailers turned into Connect's
//! end-of-stream message.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
pub(crate) use echo_wire::compression::Compression;
use echo_wire::framing::{HEADER_LEN, envelope, header};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};
use pin_project_lite::pin_project;
use prost_reflect::MessageDescriptor;
use tonic::Status;

use super::connect::status::end_stream;
use super::json::{json_to_proto, proto_to_json};
use super::shared::{too_large, undecompressed};

/// Envelope flag: the message is compressed.
pub(crate) const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag (gRPC-Web): the trailers.
const FLAG_TRAILERS: u8 = 0x80;

pin_project! {
    /// A request body whose zero-length messages marked compressed are
    /// passed on unmarked, as the empty messages they are: zstd encoders may
    /// write nothing at all for an empty message (the Connect conformance
    /// suite's client does), which no zstd decoder reads as a frame.
    pub(crate) struct EmptyUncompressed<B> {
        #[pin]
        inner: B,
        // The start of a header that the last chunk cut.
        pending: BytesMut,
        // Bytes of the current message still to come.
        remaining: usize,
    }
}

impl<B> EmptyUncompressed<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self {
            inner,
            pending: BytesMut::new(),
            remaining: 0,
        }
    }
}

/// `chunk`, after what `pending` held, with each empty message's compressed
/// flag cleared; a header cut at its end waits in `pending`.
fn clear_empty_compressed(pending: &mut BytesMut, remaining: &mut usize, chunk: &[u8]) -> Bytes {
    pending.extend_from_slice(chunk);
    let mut bytes = std::mem::take(pending);
    let mut at = 0;
    loop {
        let body = (*remaining).min(bytes.len() - at);
        at += body;
        *remaining -= body;
        if *remaining > 0 {
            break;
        }
        let Some((flags, length)) = header(&bytes[at..]) else {
            *pending = bytes.split_off(at);
            break;
        };
        if flags & FLAG_COMPRESSED != 0 && length == 0 {
            bytes[at] &= !FLAG_COMPRESSED;
        }
        at += HEADER_LEN;
        *remaining = length;
    }
    bytes.freeze()
}

impl<B> HttpBody for EmptyUncompressed<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => Poll::Ready(Some(Ok(Frame::data(clear_empty_compressed(
                    this.pending,
                    this.remaining,
                    &chunk,
                ))))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            // A cut header at the end goes on as it is, for the reader to refuse.
            None if !this.pending.is_empty() => {
                Poll::Ready(Some(Ok(Frame::data(this.pending.split().freeze()))))
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }
}

/// The messages of a whole enveloped body, with their flags.
pub(crate) fn split_all(mut bytes: Bytes) -> Result<Vec<(u8, Bytes)>, Status> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let Some((flags, len)) = header(&bytes) else {
            return Err(Status::internal("truncated message envelope"));
        };
        if bytes.len() < HEADER_LEN + len {
            return Err(Status::internal("truncated message"));
        }
        bytes.advance(HEADER_LEN);
        messages.push((flags, bytes.split_to(len)));
    }
    Ok(messages)
}

/// What happens to each message.
#[derive(Debug, Clone)]
pub(crate) enum Rewrite {
    /// Messages pass as they are.
    Keep,
    /// JSON messages (compressed with `.1` when flagged) become protobuf.
    JsonToProto(MessageDescriptor, Compression),
    /// Protobuf messages become JSON.
    ProtoToJson(MessageDescriptor),
    /// Messages flagged compressed (with `.0`, one tonic lacks) go on
    /// decompressed.
    Decompress(Compression),
}

/// What happens to the trailers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// They pass as they are.
    Keep,
    /// They become a Connect end-of-stream message ([`end_stream`]).
    ConnectEndStream,
}

pin_project! {
    /// `inner`'s messages rewritten one at a time.
    pub(crate) struct Rewritten<B> {
        #[pin]
        inner: B,
        rewrite: Rewrite,
        ending: Ending,
        max_message_size: usize,
        buffer: BytesMut,
        ready: VecDeque<Bytes>,
        ended: bool,
    }
}

impl<B> Rewritten<B> {
    pub(crate) fn new(inner: B, rewrite: Rewrite, ending: Ending, max_message_size: usize) -> Self {
        Self {
            inner,
            rewrite,
            ending,
            max_message_size,
            buffer: BytesMut::new(),
            ready: VecDeque::new(),
            ended: false,
        }
    }
}

impl<B> Rewritten<B> {
    /// Rewrites the whole messages in the buffer into `ready`.
    fn rewrite_buffered(
        buffer: &mut BytesMut,
        ready: &mut VecDeque<Bytes>,
        rewrite: &Rewrite,
        max: usize,
    ) -> Result<(), Status> {
        while let Some((flags, len)) = header(buffer) {
            if flags & FLAG_TRAILERS == 0 && len > max {
                return Err(too_large(max));
            }
            if buffer.len() < HEADER_LEN + len {
                buffer.reserve(HEADER_LEN + len - buffer.len());
                return Ok(());
            }
            let header = buffer.split_to(HEADER_LEN);
            let message = buffer.split_to(len).freeze();
            let rewritten = match rewrite {
                _ if flags & FLAG_TRAILERS != 0 => None,
                Rewrite::Keep => None,
                Rewrite::JsonToProto(desc, compression) => {
                    let json = if flags & FLAG_COMPRESSED != 0 {
                        compression
                            .decompress(&message, max)
                            .map_err(undecompressed)?
                    } else {
                        message.clone()
                    };
                    Some(json_to_proto(desc, &json)?)
                }
                Rewrite::Decompress(compression) if flags & FLAG_COMPRESSED != 0 => Some(
                    compression
                        .decompress(&message, max)
                        .map_err(undecompressed)?,
                ),
                Rewrite::Decompress(_) => None,
                Rewrite::ProtoToJson(desc) => {
                    if flags & FLAG_COMPRESSED != 0 {
                        return Err(Status::internal("a compressed answer cannot become JSON"));
                    }
                    Some(proto_to_json(desc, &message)?)
                }
            };
            match rewritten {
                Some(rewritten) => ready.push_back(envelope(flags & !FLAG_COMPRESSED, &rewritten)),
                None => {
                    let mut whole = header;
                    whole.extend_from_slice(&message);
                    ready.push_back(whole.freeze());
                }
            }
        }
        Ok(())
    }
}

impl<B> HttpBody for Rewritten<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        loop {
            if let Some(message) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(message))));
            }
            if *this.ended {
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => {
                        if matches!(this.rewrite, Rewrite::Keep) && this.buffer.is_empty() {
                            // Nothing to rewrite: the bytes pass as they came.
                            return Poll::Ready(Some(Ok(Frame::data(
                                data.copy_to_bytes(data.remaining()),
                            ))));
                        }
                        this.buffer.put(data);
                        Self::rewrite_buffered(
                            this.buffer,
                            this.ready,
                            this.rewrite,
                            *this.max_message_size,
                        )?;
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        *this.ended = true;
                        match this.ending {
                            Ending::Keep => {
                                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                            }
                            Ending::ConnectEndStream => {
                                this.ready.push_back(end_stream(&trailers, None));
                            }
                        }
                    }
                },
                Some(Err(err)) => {
                    let status = Status::from_error(err.into());
                    *this.ended = true;
                    match this.ending {
                        Ending::Keep => return Poll::Ready(Some(Err(status))),
                        Ending::ConnectEndStream => {
                            this.ready
                                .push_back(end_stream(&HeaderMap::new(), Some(status)));
                        }
                    }
                }
                None => {
                    *this.ended = true;
                    if !this.buffer.is_empty() {
                        return Poll::Ready(Some(Err(Status::internal(
                            "the stream ended inside a message",
                        ))));
                    }
                    if *this.ending == Ending::ConnectEndStream {
                        // No trailers: the stream ended without a status.
                        let status = Status::internal("the stream ended without a status");
                        this.ready
                            .push_back(end_stream(&HeaderMap::new(), Some(status)));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_messages_marked_compressed_are_unmarked_across_chunks() {
        let stream = [
            envelope(FLAG_COMPRESSED, b"").to_vec(),
            envelope(FLAG_COMPRESSED, b"zz").to_vec(),
            envelope(FLAG_COMPRESSED, b"").to_vec(),
            envelope(0, b"").to_vec(),
        ]
        .concat();
        let expected = [
            envelope(0, b"").to_vec(),
            envelope(FLAG_COMPRESSED, b"zz").to_vec(),
            envelope(0, b"").to_vec(),
            envelope(0, b"").to_vec(),
        ]
        .concat();
        // Every way of cutting the stream in two.
        for cut in 0..=stream.len() {
            let (mut pending, mut remaining) = (BytesMut::new(), 0);
            let mut out =
                clear_empty_compressed(&mut pending, &mut remaining, &stream[..cut]).to_vec();
            out.extend_from_slice(&clear_empty_compressed(
                &mut pending,
                &mut remaining,
                &stream[cut..],
            ));
            assert_eq!(out, expected, "cut at {cut}");
            assert!(pending.is_empty(), "cut at {cut}");
        }
    }
}
