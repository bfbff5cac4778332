//! Hand-made HTTP/2 frames, for attacks and checks a well-behaved client library
//! will not produce.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use echo_wire::h2_frames::*;

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
        SETTINGS if frame.flags & ACK == 0 => Some(self::frame(SETTINGS, ACK, 0, &[])),
        PING if frame.flags & ACK == 0 => Some(self::frame(PING, ACK, 0, &frame.payload)),
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
