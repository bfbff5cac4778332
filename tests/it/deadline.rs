//! The server ends a call at its deadline by itself, whatever the client
//! does, on the paths where nothing but the deadline layer's own timer can:
//! a unary call whose request message never arrives (tonic reads the whole
//! message before the handler runs) and a call held open by `rpc-behavior:
//! keep-open`. The client here is the `h2` crate, which keeps no deadline of
//! its own, so an answer can only be the server's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use echo_tests::TestServer;
use tokio::net::TcpStream;

/// The deadline each call carries.
const DEADLINE: Duration = Duration::from_millis(200);
/// Far past the deadline: a call still open then was never ended by the server.
const NEVER: Duration = Duration::from_secs(5);

async fn client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let socket = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    client.ready().await.unwrap()
}

/// Starts a unary call to `path` with the deadline and `headers`, sends
/// `body` without ending the stream, and waits for the server's answer:
/// its grpc-status and how long it took.
async fn held_call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (Option<String>, Duration) {
    let mut client = client(addr).await;
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "200m");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let started = Instant::now();
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    if !body.is_empty() {
        send.send_data(body, false).unwrap();
    }
    let answer = tokio::time::timeout(NEVER, async {
        let response = response.await.unwrap();
        if let Some(status) = response.headers().get("grpc-status") {
            return Some(status.to_str().unwrap().to_owned());
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.ok()?.len());
        }
        let trailers = body.trailers().await.ok()??;
        Some(trailers.get("grpc-status")?.to_str().unwrap().to_owned())
    })
    .await
    .unwrap_or_else(|_| panic!("{path}: no answer {NEVER:?} after a {DEADLINE:?} deadline"));
    drop(send);
    (answer, started.elapsed())
}

#[tokio::test]
async fn the_server_ends_a_call_whose_request_never_arrives_at_its_deadline() {
    let server = TestServer::start().await;
    for path in [
        "/echo.v1.EchoService/Echo",
        "/grpc.testing.TestService/UnaryCall",
        "/grpc.health.v1.Health/Check",
    ] {
        // Nothing of the message, then half of it: the handler never runs.
        for body in [Bytes::new(), Bytes::from_static(&[0, 0, 0, 0, 10, 1, 2])] {
            let (status, took) = held_call(server.addr, path, &[], body).await;
            println!("{path}: {status:?} after {took:?}");
            assert_eq!(status.as_deref(), Some("4"), "{path}: DEADLINE_EXCEEDED");
            assert!(took >= DEADLINE && took < DEADLINE * 5, "{path}: {took:?}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_server_ends_a_call_kept_open_by_a_behaviour_at_its_deadline() {
    let server = TestServer::start().await;
    let empty_echo = Bytes::from_static(&[0, 0, 0, 0, 0]);
    for behavior in ["keep-open", "sleep-30"] {
        let (status, took) = held_call(
            server.addr,
            "/echo.v1.EchoService/Echo",
            &[("rpc-behavior", behavior)],
            empty_echo.clone(),
        )
        .await;
        println!("rpc-behavior {behavior}: {status:?} after {took:?}");
        assert_eq!(status.as_deref(), Some("4"), "{behavior}");
        assert!(
            took >= DEADLINE && took < DEADLINE * 5,
            "{behavior}: {took:?}"
        );
    }
    server.stop().await;
}
