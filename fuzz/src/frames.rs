//! The `h2_frames` target's inputs: sequences of HTTP/2 frames derived with
//! `arbitrary`, encoded after the connection preface. Streams are odd
//! client ids, HEADERS carry a real method's path and a known content type
//! (HPACK literals, never indexed, so any name and value is expressible)
//! and DATA carries gRPC-framed messages, so the sequences reach the gRPC
//! layers instead of dying in the preface.

use arbitrary::Arbitrary;
use echo_wire::h2_frames::{
    ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, PREFACE, PRIORITY,
    RST_STREAM, SETTINGS, WINDOW_UPDATE, header_block as hpack_block,
};

use crate::{CONTENT_TYPES, HEADER_NAMES, PATHS, pick};

/// The largest frame payload a peer must accept without a SETTINGS change.
const MAX_FRAME: usize = 16 * 1024;

/// A client's frames on one connection.
#[derive(Debug, Arbitrary)]
pub struct Session {
    /// Settings of the client's first SETTINGS frame.
    pub settings: Vec<(u16, u32)>,
    /// Then these frames, in order.
    pub frames: Vec<Frame>,
}

/// One frame; `stream` picks one of the first 16 client streams.
#[derive(Debug, Arbitrary)]
pub enum Frame {
    /// A request's headers: pseudo-headers for a path, then headers.
    Headers {
        stream: u8,
        end_stream: bool,
        path: u8,
        content_type: u8,
        headers: Vec<(u8, String)>,
        /// Names of any kind (upper case, pseudo, connection-specific).
        extra: Vec<(String, String)>,
    },
    /// gRPC messages: `(compressed flag, length change, bytes)`.
    Messages {
        stream: u8,
        end_stream: bool,
        messages: Vec<(bool, Option<u32>, Vec<u8>)>,
    },
    /// DATA with any bytes.
    Data {
        stream: u8,
        end_stream: bool,
        bytes: Vec<u8>,
    },
    /// Trailers on a request (HEADERS that end the stream).
    Trailers {
        stream: u8,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream: u8,
        code: u32,
    },
    /// Stream 0 is the connection.
    WindowUpdate {
        stream: Option<u8>,
        increment: u32,
    },
    Settings {
        ack: bool,
        settings: Vec<(u16, u32)>,
    },
    Ping {
        ack: bool,
        data: u64,
    },
    GoAway {
        last_stream: u8,
        code: u32,
    },
    Priority {
        stream: u8,
        dependency: u8,
        weight: u8,
    },
    /// Any frame at all.
    Raw {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    },
}

/// The bytes a client sends for `session`: the preface, then its frames.
pub fn encode(session: &Session) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &settings(&session.settings));
    for one in &session.frames {
        encode_frame(&mut out, one);
    }
    out
}

fn encode_frame(out: &mut Vec<u8>, one: &Frame) {
    match one {
        Frame::Headers {
            stream,
            end_stream,
            path,
            content_type,
            headers,
            extra,
        } => {
            let mut fields = vec![
                (":method", "POST"),
                (":scheme", "http"),
                (":path", pick(PATHS, *path)),
                (":authority", "fuzz"),
                ("content-type", pick(CONTENT_TYPES, *content_type)),
                ("te", "trailers"),
            ];
            fields.extend(
                headers
                    .iter()
                    .map(|(name, value)| (pick(HEADER_NAMES, *name), value.as_str())),
            );
            fields.extend(
                extra
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            );
            header_block(out, stream_id(*stream), *end_stream, &hpack_block(&fields));
        }
        Frame::Messages {
            stream,
            end_stream,
            messages,
        } => {
            let mut payload = Vec::new();
            for (compressed, length, bytes) in messages {
                payload.push(u8::from(*compressed));
                let length = length.unwrap_or(bytes.len() as u32);
                payload.extend_from_slice(&length.to_be_bytes());
                payload.extend_from_slice(bytes);
            }
            data(out, stream_id(*stream), *end_stream, &payload);
        }
        Frame::Data {
            stream,
            end_stream,
            bytes,
        } => data(out, stream_id(*stream), *end_stream, bytes),
        Frame::Trailers { stream, headers } => {
            let fields: Vec<_> = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            header_block(out, stream_id(*stream), true, &hpack_block(&fields));
        }
        Frame::RstStream { stream, code } => {
            frame(out, RST_STREAM, 0, stream_id(*stream), &code.to_be_bytes());
        }
        Frame::WindowUpdate { stream, increment } => {
            let stream = stream.map_or(0, stream_id);
            frame(out, WINDOW_UPDATE, 0, stream, &increment.to_be_bytes());
        }
        Frame::Settings {
            ack,
            settings: list,
        } => {
            let payload = if *ack { Vec::new() } else { settings(list) };
            frame(out, SETTINGS, if *ack { ACK } else { 0 }, 0, &payload);
        }
        Frame::Ping { ack, data } => {
            frame(
                out,
                PING,
                if *ack { ACK } else { 0 },
                0,
                &data.to_be_bytes(),
            );
        }
        Frame::GoAway { last_stream, code } => {
            let mut payload = stream_id(*last_stream).to_be_bytes().to_vec();
            payload.extend_from_slice(&code.to_be_bytes());
            frame(out, GOAWAY, 0, 0, &payload);
        }
        Frame::Priority {
            stream,
            dependency,
            weight,
        } => {
            let mut payload = stream_id(*dependency).to_be_bytes().to_vec();
            payload.push(*weight);
            frame(out, PRIORITY, 0, stream_id(*stream), &payload);
        }
        Frame::Raw {
            kind,
            flags,
            stream,
            payload,
        } => frame(out, *kind, *flags, *stream, payload),
    }
}

/// Client stream `index % 16`: ids 1, 3, 5, ...
fn stream_id(index: u8) -> u32 {
    u32::from(index % 16) * 2 + 1
}

fn settings(list: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in list {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    payload
}

/// DATA frames for `payload`, split at the largest frame size.
fn data(out: &mut Vec<u8>, stream: u32, end_stream: bool, payload: &[u8]) {
    let mut chunks = payload.chunks(MAX_FRAME).peekable();
    if chunks.peek().is_none() {
        frame(
            out,
            DATA,
            if end_stream { END_STREAM } else { 0 },
            stream,
            &[],
        );
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last && end_stream { END_STREAM } else { 0 };
        frame(out, DATA, flags, stream, chunk);
    }
}

/// HEADERS, then CONTINUATION frames for what does not fit in one frame.
fn header_block(out: &mut Vec<u8>, stream: u32, end_stream: bool, block: &[u8]) {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let first = chunks.next().unwrap_or_default();
    let end_headers = |last: bool| if last { END_HEADERS } else { 0 };
    let end_stream = if end_stream { END_STREAM } else { 0 };
    let flags = end_stream | end_headers(chunks.peek().is_none());
    frame(out, HEADERS, flags, stream, first);
    while let Some(chunk) = chunks.next() {
        let flags = end_headers(chunks.peek().is_none());
        frame(out, CONTINUATION, flags, stream, chunk);
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend(echo_wire::h2_frames::frame(kind, flags, stream, payload));
}
