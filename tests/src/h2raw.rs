//! Hand-made HTTP/2 frames, for attacks and checks a well-behaved client library
//! will not produce.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a client sends first.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame type DATA.
pub const DATA: u8 = 0x0;
/// Frame type HEADERS.
pub const HEADERS: u8 = 0x1;
/// Frame type RST_STREAM.
pub const RST_STREAM: u8 = 0x3;
/// Frame type SETTINGS.
pub const SETTINGS: u8 = 0x4;
/// Frame type PING.
pub const PING: u8 = 0x6;
/// Frame type GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// Frame type WINDOW_UPDATE.
pub const WINDOW_UPDATE: u8 = 0x8;
/// Frame type CONTINUATION.
pub const CONTINUATION: u8 = 0x9;
/// Flag END_STREAM (DATA, HEADERS); also ACK (SETTINGS, PING).
pub const END_STREAM: u8 = 0x1;
/// Flag END_HEADERS (HEADERS, CONTINUATION).
pub const END_HEADERS: u8 = 0x4;
/// SETTINGS_MAX_CONCURRENT_STREAMS.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// SETTINGS_INITIAL_WINDOW_SIZE.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// Error code REFUSED_STREAM.
pub const REFUSED_STREAM: u32 = 0x7;
/// Error code CANCEL.
pub const CANCEL: u32 = 0x8;
/// Error code ENHANCE_YOUR_CALM.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: 24-bit length, type, flags, stream id, payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with a `prefix`-bit prefix, after the `flags` bits.
fn hpack_int(out: &mut Vec<u8>, flags: u8, prefix: u8, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// An HPACK block of literal, never-indexed fields (no Huffman), so any name
/// can be sent, valid or not, of any length.
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x10);
        for text in [name, value] {
            hpack_int(&mut out, 0, 7, text.len());
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

/// The request headers of a gRPC call to `path`, plus `extra`.
pub fn grpc_request(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    fields.extend_from_slice(extra);
    header_block(&fields)
}

/// A frame as read back.
#[derive(Debug)]
pub struct Frame {
    /// Its type.
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its stream id (0: the connection).
    pub stream: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Reads one frame; `None` at end of stream.
pub async fn read_frame(socket: &mut (impl AsyncReadExt + Unpin)) -> Option<Frame> {
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).await.ok()?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0; length];
    socket.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: header[3],
        flags: header[4],
        stream: u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff,
        payload,
    })
}

/// Connects and sends the preface and an empty SETTINGS frame.
pub async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(PREFACE).await.unwrap();
    socket.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    socket
}

/// The parameters of a SETTINGS frame.
pub fn settings(frame: &Frame) -> Vec<(u16, u32)> {
    frame
        .payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

/// Sends a gRPC call to `path` on `stream` of `socket`: the request headers
/// (plus `extra`), then `message` as one gRPC message ending the stream.
pub async fn send_call(
    socket: &mut (impl AsyncWriteExt + Unpin),
    stream: u32,
    path: &str,
    extra: &[(&str, &str)],
    message: &[u8],
) {
    let mut out = frame(HEADERS, END_HEADERS, stream, &grpc_request(path, extra));
    out.extend(frame(
        DATA,
        END_STREAM,
        stream,
        &crate::grpc_message(message),
    ));
    socket.write_all(&out).await.unwrap();
}

/// Every frame the server sends until it closes the connection, answering
/// its SETTINGS and PINGs as a client must. Panics if it is still open after
/// `limit`.
pub async fn frames_until_close(socket: &mut TcpStream, limit: std::time::Duration) -> Vec<Frame> {
    let mut frames = Vec::new();
    let read_all = async {
        while let Some(frame) = read_frame(socket).await {
            if let Some(ack) = acknowledgement(&frame) {
                // The server may already be gone; what it sent is what counts.
                let _ = socket.write_all(&ack).await;
            }
            frames.push(frame);
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open past {limit:?}"));
    frames
}

/// The ACK a client owes `frame`, if it is a SETTINGS or PING that asks for one.
pub fn acknowledgement(frame: &Frame) -> Option<Vec<u8>> {
    match frame.kind {
        SETTINGS if frame.flags & END_STREAM == 0 => {
            Some(self::frame(SETTINGS, END_STREAM, 0, &[]))
        }
        PING if frame.flags & END_STREAM == 0 => {
            Some(self::frame(PING, END_STREAM, 0, &frame.payload))
        }
        _ => None,
    }
}

/// The last-stream-id and error code of a GOAWAY frame.
pub fn goaway(frame: &Frame) -> (u32, u32) {
    assert_eq!(frame.kind, GOAWAY, "{frame:?}");
    (
        u32::from_be_bytes(frame.payload[0..4].try_into().unwrap()) & 0x7fff_ffff,
        u32::from_be_bytes(frame.payload[4..8].try_into().unwrap()),
    )
}
