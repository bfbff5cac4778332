//! gRPC message framing: a flag byte (1 = compressed), a big-endian
//! u32 length, then the message.
//!
//! tonic decides compression per call, but the interop tests decide it per
//! message and check it per message. These body wrappers give both ends that
//! control: [`ObservedBody`] records whether each passing message was
//! compressed, [`RecompressBody`] gzips the messages a [`CompressionFlags`]
//! plan marks.

use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;

/// Size of the header in front of every gRPC message.
pub const HEADER_LEN: usize = 5;

/// One flag per message, in message order, shared between a body wrapper and
/// the code producing or consuming the messages.
#[derive(Debug, Clone, Default)]
pub struct CompressionFlags(Arc<Mutex<VecDeque<bool>>>);

impl CompressionFlags {
    /// Appends the flag of the next message.
    pub fn push(&self, compressed: bool) {
        self.0.lock().expect("flags lock").push_back(compressed);
    }

    /// Takes the flag of the oldest message not yet taken.
    pub fn pop(&self) -> Option<bool> {
        self.0.lock().expect("flags lock").pop_front()
    }
}

/// Extension: whether each message that arrived was compressed (filled by [`ObservedBody`]).
#[derive(Debug, Clone, Default)]
pub struct ObservedCompression(pub CompressionFlags);

/// Extension: which messages to send compressed (read by [`RecompressBody`]).
#[derive(Debug, Clone, Default)]
pub struct CompressionPlan(pub CompressionFlags);

/// One whole gRPC message as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The compressed flag of its header.
    pub compressed: bool,
    /// The message bytes, compressed or not.
    pub bytes: Bytes,
}

/// Cuts a byte stream into whole gRPC messages.
#[derive(Debug, Default)]
pub struct MessageSplitter {
    buffer: BytesMut,
}

impl MessageSplitter {
    /// Adds bytes as they arrive.
    pub fn push(&mut self, data: impl Buf) {
        self.buffer.put(data);
    }

    /// The next whole message, if all of it has arrived.
    pub fn next_message(&mut self) -> Option<Message> {
        let envelope = self.next_envelope()?;
        Some(Message {
            compressed: envelope[0] & 1 == 1,
            bytes: envelope.slice(HEADER_LEN..),
        })
    }

    /// The next whole envelope, header included, if all of it has arrived:
    /// for the protocols (gRPC-Web, Connect) whose flags say more than
    /// compression.
    pub fn next_envelope(&mut self) -> Option<Bytes> {
        let (_, length) = header(&self.buffer)?;
        if self.buffer.len() < HEADER_LEN + length {
            return None;
        }
        Some(self.buffer.split_to(HEADER_LEN + length).freeze())
    }

    /// Bytes of an unfinished message.
    pub fn take_rest(&mut self) -> Bytes {
        self.buffer.split().freeze()
    }
}

/// The flags and message length of the envelope header at the start of
/// `bytes`, once all of the header is there.
pub fn header(bytes: &[u8]) -> Option<(u8, usize)> {
    let [flags, length @ ..]: [u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    Some((flags, u32::from_be_bytes(length) as usize))
}

/// Where a stream of enveloped messages is, walked a chunk at a time
/// without holding any of it: for counting messages as they pass and
/// reserving memory for one before all of it has arrived (the server's
/// memory budgets). [`MessageSplitter`] is for when the messages are wanted.
#[derive(Debug, Default)]
pub struct Framing {
    /// Header bytes of the next message seen so far.
    header: [u8; HEADER_LEN],
    header_seen: usize,
    /// Bytes of the current message's body still to come.
    remaining: usize,
    /// Messages whose header has been seen.
    messages: u64,
}

/// Where a chunk left a [`Framing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// At a message boundary.
    Between,
    /// Within a message header.
    InHeader,
    /// Within a message begun in an earlier chunk.
    Continues,
    /// Within a message of this length, begun in this chunk.
    Started(usize),
}

impl Framing {
    /// Walks `chunk`; returns how many messages begin in it.
    pub fn messages_in(&mut self, chunk: &[u8]) -> u64 {
        let before = self.messages;
        self.advance(chunk);
        self.messages - before
    }

    /// Walks `chunk`; says where it left the stream.
    pub fn advance(&mut self, mut chunk: &[u8]) -> Advance {
        let mut started = None;
        loop {
            if self.remaining > 0 {
                let body = self.remaining.min(chunk.len());
                self.remaining -= body;
                chunk = &chunk[body..];
                if self.remaining > 0 {
                    return match started {
                        Some(length) => Advance::Started(length),
                        None => Advance::Continues,
                    };
                }
                started = None;
            }
            if chunk.is_empty() {
                return if self.header_seen > 0 {
                    Advance::InHeader
                } else {
                    Advance::Between
                };
            }
            let wanted = (HEADER_LEN - self.header_seen).min(chunk.len());
            self.header[self.header_seen..self.header_seen + wanted]
                .copy_from_slice(&chunk[..wanted]);
            self.header_seen += wanted;
            chunk = &chunk[wanted..];
            if let Some((_, length)) = header(&self.header[..self.header_seen]) {
                self.header_seen = 0;
                self.messages += 1;
                self.remaining = length;
                started = Some(length);
            }
        }
    }
}

/// Frames `message` with its header.
pub fn encode(message: &Message) -> Bytes {
    envelope(u8::from(message.compressed), &message.bytes)
}

/// Frames `message` in an envelope with `flags` (gRPC uses only the
/// compressed bit; gRPC-Web and Connect have more).
pub fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(HEADER_LEN + message.len());
    framed.put_u8(flags);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

/// Gzips `bytes`, as the `gzip` grpc-encoding does.
pub fn gzip(bytes: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder
        .finish()
        .expect("writing to a Vec cannot fail")
        .into()
}

pin_project! {
    /// Passes a body on unchanged, pushing each message's compressed flag to `flags`.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        splitter: MessageSplitter,
        flags: CompressionFlags,
    }
}

impl<B> ObservedBody<B> {
    /// Observes `inner` into `flags`.
    pub fn new(inner: B, flags: CompressionFlags) -> Self {
        Self {
            inner,
            splitter: MessageSplitter::default(),
            flags,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ObservedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            this.splitter.push(data.clone());
            while let Some(message) = this.splitter.next_message() {
                this.flags.push(message.compressed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

pin_project! {
    /// Re-frames a body's messages, gzipping each one that `plan` marks (a
    /// message without a mark goes as it is). The peer must accept gzip and
    /// the call must declare `grpc-encoding: gzip`.
    pub struct RecompressBody<B> {
        #[pin]
        inner: B,
        splitter: MessageSplitter,
        plan: CompressionPlan,
    }
}

impl<B> RecompressBody<B> {
    /// Recompresses `inner` by `plan`.
    pub fn new(inner: B, plan: CompressionPlan) -> Self {
        Self {
            inner,
            splitter: MessageSplitter::default(),
            plan,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for RecompressBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        loop {
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.splitter.push(data);
                        let mut out = BytesMut::new();
                        while let Some(mut message) = this.splitter.next_message() {
                            if this.plan.0.pop() == Some(true) && !message.compressed {
                                message = Message {
                                    compressed: true,
                                    bytes: gzip(&message.bytes),
                                };
                            }
                            out.put(encode(&message));
                        }
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                    }
                    Err(frame) => {
                        let rest = this.splitter.take_rest();
                        if !rest.is_empty() {
                            // A truncated message: pass it on for the peer to reject.
                            return Poll::Ready(Some(Ok(Frame::data(rest))));
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                },
                other => return Poll::Ready(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: usize) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&(length as u32).to_be_bytes());
        framed.resize(HEADER_LEN + length, 7);
        framed
    }

    #[test]
    fn framing_finds_messages_left_unfinished_wherever_chunks_are_cut() {
        let mut stream = message(3);
        stream.extend(message(10));
        stream.extend(message(0));
        for cut in 0..=stream.len() {
            let mut framing = Framing::default();
            let first = framing.advance(&stream[..cut]);
            let second = framing.advance(&stream[cut..]);
            assert_eq!(second, Advance::Between, "cut at {cut}");
            let expected = match cut {
                0 | 8 | 23 | 28 => Advance::Between,
                1..=4 | 9..=12 | 24..=27 => Advance::InHeader,
                5..=7 => Advance::Started(3),
                13..=22 => Advance::Started(10),
                _ => unreachable!("the stream is 28 bytes"),
            };
            assert_eq!(first, expected, "cut at {cut}");
            assert_eq!(framing.messages, 3, "cut at {cut}");
        }
    }

    #[test]
    fn splits_messages_across_arbitrary_chunks() {
        let first = encode(&Message {
            compressed: false,
            bytes: Bytes::from_static(b"hello"),
        });
        let second = encode(&Message {
            compressed: true,
            bytes: Bytes::from_static(b""),
        });
        let all: Vec<u8> = [first, second].concat();
        for cut in 0..all.len() {
            let mut splitter = MessageSplitter::default();
            let mut messages = Vec::new();
            for chunk in [&all[..cut], &all[cut..]] {
                splitter.push(chunk);
                while let Some(message) = splitter.next_message() {
                    messages.push(message);
                }
            }
            assert_eq!(messages.len(), 2, "cut at {cut}");
            assert_eq!(&messages[0].bytes[..], b"hello");
            assert!(!messages[0].compressed && messages[1].compressed);
        }
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let compressed = gzip(&[0; 1000]);
        assert!(compressed.len() < 100);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, vec![0; 1000]);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_in_any_chunks_split_without_panicking(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            cuts in proptest::collection::vec(0usize..2048, 0..8),
        ) {
            let mut splitter = MessageSplitter::default();
            let mut start = 0;
            let mut cuts = cuts;
            cuts.sort_unstable();
            for cut in cuts.into_iter().chain([bytes.len()]) {
                let cut = cut.min(bytes.len()).max(start);
                splitter.push(&bytes[start..cut]);
                while splitter.next_message().is_some() {}
                start = cut;
            }
        }

        #[test]
        fn framed_messages_come_back_whole_however_they_are_cut(
            messages in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
                0..6,
            ),
            chunk in 1usize..64,
        ) {
            let framed: Vec<u8> = messages
                .iter()
                .flat_map(|(compressed, bytes)| {
                    encode(&Message { compressed: *compressed, bytes: bytes.clone().into() }).to_vec()
                })
                .collect();
            let mut splitter = MessageSplitter::default();
            let mut back = Vec::new();
            for piece in framed.chunks(chunk) {
                splitter.push(piece);
                while let Some(message) = splitter.next_message() {
                    back.push((message.compressed, message.bytes.to_vec()));
                }
            }
            proptest::prop_assert_eq!(back, messages);
        }
    }
}
