//! What the fuzz targets share: one in-memory server with its default layers
//! on a runtime whose clock moves only when nothing else can (delays,
//! deadlines and timeouts cost no real time, and a connection that never
//! ends is told from a slow one), and the inputs the structured targets are
//! built from.
//!
//! # Layout
//!
//! - This file: the runtime and server, [`exchange`] (bytes on one
//!   connection, to its end) and the paths, content types and header names
//!   the structured inputs choose from.
//! - [`request`]: the request files of the `requests` target.
//! - [`frames`]: HTTP/2 frames and HPACK literals for the `h2_frames` target.
#![forbid(unsafe_code)]

pub mod frames;
pub mod request;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use echo_server::Config;
use echo_server::fuzzing::InMemoryServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// How long, on the server's clock, a connection may stay open after its
/// client has sent everything and closed its side: longer is a hang. Every
/// timer of the default configuration (call time, keepalive, drain) is shorter.
pub const HANG: Duration = Duration::from_secs(3600);

/// How long the server may stay silent before the client closes its side:
/// by then it has answered everything it was going to answer at once.
const QUIET: Duration = Duration::from_secs(1);

/// Bytes of an answer kept for the targets' checks; the rest is read and dropped.
const KEPT_ANSWER: usize = 1 << 20;

/// Every method the default server serves, and some it does not.
pub const PATHS: &[&str] = &[
    "/echo.v1.EchoService/Echo",
    "/echo.v1.EchoService/ServerStream",
    "/echo.v1.EchoService/ClientStream",
    "/echo.v1.EchoService/BidiStream",
    "/grpc.testing.TestService/EmptyCall",
    "/grpc.testing.TestService/UnaryCall",
    "/grpc.testing.TestService/CacheableUnaryCall",
    "/grpc.testing.TestService/StreamingOutputCall",
    "/grpc.testing.TestService/StreamingInputCall",
    "/grpc.testing.TestService/FullDuplexCall",
    "/grpc.testing.TestService/HalfDuplexCall",
    "/grpc.testing.TestService/UnimplementedCall",
    "/grpc.examples.echo.Echo/UnaryEcho",
    "/grpc.examples.echo.Echo/ServerStreamingEcho",
    "/grpc.examples.echo.Echo/ClientStreamingEcho",
    "/grpc.examples.echo.Echo/BidirectionalStreamingEcho",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/echo.v1.AdminService/SetHealth",
    "/no.such.Service/Method",
    "/",
];

/// Every content type the server tells protocols by, and some it does not know.
pub const CONTENT_TYPES: &[&str] = &[
    "application/grpc",
    "application/grpc+proto",
    "application/grpc+json",
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web+json",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
    "application/proto",
    "application/json",
    "application/json; charset=utf-8",
    "application/connect+proto",
    "application/connect+json",
    "text/plain",
];

/// Request headers the server reads.
pub const HEADER_NAMES: &[&str] = &[
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "grpc-previous-rpc-attempts",
    "x-echo-behavior",
    "rpc-behavior",
    "x-echo-reflect",
    "x-request-id",
    "authorization",
    "content-length",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-content-encoding",
    "connect-accept-encoding",
    "content-encoding",
    "accept-encoding",
    "traceparent",
    "x-grpc-web",
    "te",
    "user-agent",
];

/// `list[index]`, wrapping around.
pub fn pick<'a>(list: &[&'a str], index: u8) -> &'a str {
    list[usize::from(index) % list.len()]
}

/// The shared runtime, paused, and the server on it.
pub fn server() -> &'static (Runtime, InMemoryServer) {
    static SERVER: OnceLock<(Runtime, InMemoryServer)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a tokio runtime");
        let server = {
            let _entered = runtime.enter();
            InMemoryServer::start(Config::default())
        };
        (runtime, server)
    })
}

/// Waits until the server has no connection open; panics if one is still
/// open [`HANG`] later on its clock. Each ends once its client has gone.
pub async fn connections_closed() {
    let stats = server().1.stats();
    let closed = async {
        while stats.open_connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(HANG, closed).await.is_err() {
        panic!(
            "{} connections still open {HANG:?} after their clients went away",
            stats.open_connections()
        );
    }
}

/// Runs `future` on the shared runtime, beside the server.
pub fn block_on<F: Future>(future: F) -> F::Output {
    server().0.block_on(future)
}

/// Sends `bytes` on a new connection to the server, closes the sending side
/// once the server has gone quiet, and reads until the server closes the
/// connection; returns what it answered (the first [`KEPT_ANSWER`] bytes).
/// Panics if the connection is still open [`HANG`] later.
pub fn exchange(bytes: &[u8]) -> Vec<u8> {
    block_on(async {
        let client = server().1.connect().await;
        let (mut read, mut write) = tokio::io::split(client);
        let quiet = Notify::new();
        let send = async {
            // A write fails once the server closes; what it read is what counts.
            let _ = write.write_all(bytes).await;
            quiet.notified().await;
            let _ = write.shutdown().await;
        };
        let receive = async {
            let mut answer = Vec::new();
            let mut buffer = vec![0; 16 * 1024];
            loop {
                match tokio::time::timeout(QUIET, read.read(&mut buffer)).await {
                    Ok(Ok(0) | Err(_)) => {
                        // The sender stops waiting for quiet too.
                        quiet.notify_one();
                        return answer;
                    }
                    Ok(Ok(read)) => {
                        let keep = read.min(KEPT_ANSWER.saturating_sub(answer.len()));
                        answer.extend_from_slice(&buffer[..keep]);
                    }
                    Err(_) => quiet.notify_one(),
                }
            }
        };
        let exchanged = async { tokio::join!(send, receive).1 };
        match tokio::time::timeout(HANG, exchanged).await {
            Ok(answer) => answer,
            Err(_) => panic!("the connection is still open {HANG:?} after its client went quiet"),
        }
    })
}
