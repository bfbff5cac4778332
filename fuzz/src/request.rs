//! The `requests` target's inputs: one HTTP request as a small text file, so
//! that the seed corpus is readable and written by hand, and its mutations
//! stay requests:
//!
//! ```text
//! h2 POST /echo.v1.EchoService/Echo
//! content-type: application/grpc
//! te: trailers
//!
//! <body bytes, to the end of the file>
//! ```
//!
//! The first line is the HTTP version (`h1` or `h2`), the method and the
//! target; then header lines; after the empty line, the body. A body line
//! `@grpc-web-text` first turns the rest into base64 text.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use crate::{HANG, server};

/// The body prefix that asks for the rest in base64 (gRPC-Web text).
const BASE64_BODY: &[u8] = b"@grpc-web-text\n";

/// One request, as the file says it.
#[derive(Debug)]
pub struct RequestFile {
    /// HTTP/2 rather than HTTP/1.1.
    pub http2: bool,
    /// The request itself.
    pub request: Request<Bytes>,
}

/// The request `file` holds; None if its first line is not one.
pub fn parse(file: &[u8]) -> Option<RequestFile> {
    let (head, body) = match file.windows(2).position(|pair| pair == b"\n\n") {
        Some(end) => (&file[..end], &file[end + 2..]),
        None => (file, &b""[..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let http2 = match first.next()? {
        "h1" => false,
        "h2" => true,
        _ => return None,
    };
    let method = Method::from_bytes(first.next()?.as_bytes()).ok()?;
    let target = first.next()?;
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://fuzz{target}"))
        .body(body_of(body))
        .ok()?;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        // A header hyper would refuse to send is skipped, not the request.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            request.headers_mut().append(name, value);
        }
    }
    Some(RequestFile { http2, request })
}

fn body_of(body: &[u8]) -> Bytes {
    match body.strip_prefix(BASE64_BODY) {
        Some(rest) => STANDARD.encode(rest).into(),
        None => Bytes::copy_from_slice(body),
    }
}

/// What came back of one request.
#[derive(Debug)]
pub struct Answer {
    /// The response's head, if one came.
    pub response: Option<Response<()>>,
    /// Whether its body and trailers arrived whole (not reset, not cut).
    pub complete: bool,
    /// The trailers, if any came.
    pub trailers: Option<http::HeaderMap>,
}

/// Sends `file`'s request on a new connection with hyper's client, reads
/// the whole answer and goes away, as a client closes its socket; then waits
/// for the server to end its side. Panics if the answer is not over, or the
/// server's connection still open, [`HANG`] later on the server's clock.
///
/// With `ECHO_FUZZ_RECORD=DIR` in the environment, the bytes the client sent
/// are also written to a file in DIR: the `connection` target's seeds.
pub fn send(file: RequestFile) -> Answer {
    let record = std::env::var_os("ECHO_FUZZ_RECORD");
    let sent = Arc::new(Mutex::new(Vec::new()));
    let answer = crate::block_on(async {
        let io = TokioIo::new(Recorded {
            inner: server().1.connect().await,
            sent: record.is_some().then(|| Arc::clone(&sent)),
        });
        let request = file.request.map(Full::new);
        let mut client_connection = None;
        let exchange = async {
            let response = if file.http2 {
                let Ok((mut sender, connection)) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await
                else {
                    return None;
                };
                client_connection = Some(tokio::spawn(async {
                    let _ = connection.await;
                }));
                sender.send_request(request).await
            } else {
                let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(io).await
                else {
                    return None;
                };
                client_connection = Some(tokio::spawn(async {
                    let _ = connection.await;
                }));
                sender.send_request(request).await
            };
            Some(read(response).await)
        };
        let answer = match tokio::time::timeout(HANG, exchange).await {
            Ok(answer) => answer.unwrap_or(Answer {
                response: None,
                complete: false,
                trailers: None,
            }),
            Err(_) => panic!("no whole answer {HANG:?} after the request"),
        };
        // The client's end closes, whatever its calls were doing: a
        // connection the server kept past that would be a leak in a server
        // that runs for months, and one the harness kept would hold its
        // buffers past the input.
        if let Some(connection) = client_connection {
            connection.abort();
        }
        crate::connections_closed().await;
        answer
    });
    if let Some(dir) = record {
        let sent = sent.lock().expect("recorded bytes");
        let name = format!("{:016x}", fnv1a(&sent));
        std::fs::write(std::path::Path::new(&dir).join(name), &*sent)
            .expect("the recording directory is writable");
    }
    answer
}

/// A name for a recording that changes with its bytes (FNV-1a).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A client's connection that keeps a copy of what is written on it.
struct Recorded {
    inner: DuplexStream,
    sent: Option<Arc<Mutex<Vec<u8>>>>,
}

impl AsyncRead for Recorded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recorded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        if let Some(sent) = &self.sent {
            sent.lock()
                .expect("recorded bytes")
                .extend_from_slice(&buf[..written]);
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn read(response: hyper::Result<Response<Incoming>>) -> Answer {
    let Ok(response) = response else {
        return Answer {
            response: None,
            complete: false,
            trailers: None,
        };
    };
    let (parts, mut body) = response.into_parts();
    let mut trailers = None;
    let complete = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => {
                if let Ok(frame_trailers) = frame.into_trailers() {
                    trailers = Some(frame_trailers);
                }
            }
        }
    };
    // Let the connection's task see the end before it is dropped.
    tokio::time::sleep(Duration::from_millis(1)).await;
    Answer {
        response: Some(Response::from_parts(parts, ())),
        complete,
        trailers,
    }
}
