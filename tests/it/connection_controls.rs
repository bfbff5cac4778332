//! The `connection` control: GOAWAY after the answer, RST_STREAM with a chosen
//! code, and a closed connection, checked on the wire with a raw HTTP/2 client
//! and through the client library and CLI.

use std::time::{Duration, Instant};

use echo_client::proto::{
    ConnectionAction, ConnectionControl, EchoRequest, ErrorControl, StatusCode, StreamControl,
};
use echo_tests::TestServer;
use echo_tests::h2raw::{self, DATA, END_STREAM, Frame, GOAWAY, HEADERS, RST_STREAM};
use echo_tests::process::ServerProcess;
use prost::Message;
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tonic::Code;

const ECHO: &str = "/echo.v1.EchoService/Echo";

fn with_action(action: ConnectionAction, reset_code: u32) -> EchoRequest {
    EchoRequest {
        message: "control".into(),
        connection: Some(ConnectionControl {
            action: action as i32,
            reset_code,
        }),
        ..Default::default()
    }
}

/// Opens a raw connection and sends `request` to `path` as stream 1.
async fn send_call(server: &TestServer, path: &str, request: &EchoRequest) -> TcpStream {
    let mut socket = h2raw::connect(server.addr).await;
    h2raw::send_call(&mut socket, 1, path, &[], &request.encode_to_vec()).await;
    socket
}

/// Sends `request` to `path` as stream 1 of a fresh raw connection and returns
/// every frame the server sends until it closes the connection.
async fn frames_until_close(server: &TestServer, path: &str, request: &EchoRequest) -> Vec<Frame> {
    let mut socket = send_call(server, path, request).await;
    h2raw::frames_until_close(&mut socket, Duration::from_secs(5)).await
}

fn on_stream_1(frames: &[Frame]) -> Vec<(u8, u8)> {
    frames
        .iter()
        .filter(|frame| frame.stream == 1)
        .map(|frame| (frame.kind, frame.flags & END_STREAM))
        .collect()
}

#[tokio::test]
async fn goaway_comes_after_a_complete_answer() {
    let server = TestServer::start().await;
    let frames = frames_until_close(&server, ECHO, &with_action(ConnectionAction::Goaway, 0)).await;
    // Response headers, the message, then trailers that end the stream.
    assert_eq!(
        on_stream_1(&frames),
        [(HEADERS, 0), (DATA, 0), (HEADERS, END_STREAM)],
        "{frames:?}"
    );
    let goaways: Vec<&Frame> = frames.iter().filter(|f| f.kind == GOAWAY).collect();
    assert!(!goaways.is_empty(), "no GOAWAY: {frames:?}");
    let last = goaways.last().unwrap();
    let last_stream = u32::from_be_bytes(last.payload[0..4].try_into().unwrap());
    let code = u32::from_be_bytes(last.payload[4..8].try_into().unwrap());
    assert_eq!(
        (last_stream, code),
        (1, 0),
        "final GOAWAY: stream 1 done, NO_ERROR"
    );

    // The client library gets the answer and carries on over a new connection.
    let client = server.client().await;
    let answer = client
        .echo(with_action(ConnectionAction::Goaway, 0))
        .await
        .unwrap();
    assert_eq!(answer.get_ref().message, "control");
    assert_eq!(
        client
            .echo(EchoRequest::default())
            .await
            .unwrap()
            .get_ref()
            .message,
        ""
    );
    server.stop().await;
}

#[tokio::test]
async fn a_connection_drained_by_a_call_is_still_cut_at_age_and_grace() {
    let (age, grace) = (Duration::from_millis(300), Duration::from_millis(200));
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.http2.max_connection_age = Some(age.into());
        c.http2.max_connection_age_grace = Some(grace.into());
    }))
    .await;
    let client = server.client().await;
    let started = Instant::now();
    // 40 messages 50 ms apart: two seconds, far past age + grace.
    let mut stream = client
        .server_stream(echo_tests::ticking(40, 50))
        .await
        .unwrap()
        .into_inner();
    // A call on the same connection asks for GOAWAY before the age does.
    client
        .echo(with_action(ConnectionAction::Goaway, 0))
        .await
        .unwrap();
    let (received, ended) = echo_tests::read_to_end(&mut stream).await;
    assert!(
        ended.is_err() && received < 40,
        "the stream outlived age + grace: {ended:?} after {received} messages"
    );
    assert!(
        started.elapsed() < age + grace + Duration::from_millis(700),
        "cut after {:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn reset_stream_carries_the_chosen_code_after_the_messages() {
    let server = TestServer::start().await;
    let mut socket_frames =
        frames_until_close_or_reset(&server, &with_action(ConnectionAction::ResetStream, 8)).await;
    let reset = socket_frames.pop().unwrap();
    assert_eq!(
        on_stream_1(&socket_frames),
        [(HEADERS, 0), (DATA, 0)],
        "the answer's headers and message, and no trailers, come first"
    );
    assert_eq!(reset.kind, RST_STREAM);
    assert_eq!(reset.stream, 1);
    assert_eq!(
        u32::from_be_bytes(reset.payload[..4].try_into().unwrap()),
        8
    );

    // Through the library: three messages, then the reset as the call's end
    // (ENHANCE_YOUR_CALM reads as RESOURCE_EXHAUSTED); the connection lives on.
    let client = server.client().await;
    let mut stream = client
        .server_stream(EchoRequest {
            stream: Some(StreamControl {
                count: Some(3),
                interval: None,
            }),
            ..with_action(ConnectionAction::ResetStream, 11)
        })
        .await
        .unwrap()
        .into_inner();
    for sequence in 0..3 {
        assert_eq!(stream.next().await.unwrap().unwrap().sequence, sequence);
    }
    let status = stream.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = client
        .echo(with_action(ConnectionAction::ResetStream, 8))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(server.stats.open_connections(), 1);
    client.echo(EchoRequest::default()).await.unwrap();
    server.stop().await;
}

/// Frames of one call until its RST_STREAM (the last frame returned).
async fn frames_until_close_or_reset(server: &TestServer, request: &EchoRequest) -> Vec<Frame> {
    let mut socket = send_call(server, ECHO, request).await;
    let mut frames = Vec::new();
    let read = async {
        loop {
            let frame = h2raw::read_frame(&mut socket)
                .await
                .expect("connection closed before RST_STREAM");
            let reset = frame.kind == RST_STREAM;
            if frame.stream == 1 {
                frames.push(frame);
            }
            if reset {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("no RST_STREAM");
    frames
}

#[tokio::test]
async fn close_drops_the_connection_and_every_call_on_it() {
    let server = TestServer::start().await;
    let frames = frames_until_close(&server, ECHO, &with_action(ConnectionAction::Close, 0)).await;
    assert!(
        on_stream_1(&frames).is_empty(),
        "nothing is answered on a closed connection: {frames:?}"
    );

    let client = server.client().await;
    // A stream in flight on the same connection dies with it.
    let mut bystander = client
        .server_stream(echo_tests::ticking(100, 50))
        .await
        .unwrap()
        .into_inner();
    bystander.next().await.unwrap().unwrap();
    let status = client
        .echo(with_action(ConnectionAction::Close, 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let bystander_end = loop {
        match bystander.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("the stream ended cleanly on a closed connection"),
        }
    };
    assert_eq!(bystander_end.code(), Code::Unavailable, "{bystander_end:?}");

    // The server is fine; the client reconnects.
    client.echo(EchoRequest::default()).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn bad_connection_controls_are_invalid_argument() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let reset_with_error = EchoRequest {
        error: Some(ErrorControl {
            code: StatusCode::Internal as i32,
            ..Default::default()
        }),
        ..with_action(ConnectionAction::ResetStream, 2)
    };
    let goaway_with_code = with_action(ConnectionAction::Goaway, 2);
    let mut unknown = with_action(ConnectionAction::None, 0);
    unknown.connection.as_mut().unwrap().action = 42;
    for (request, field) in [
        (reset_with_error, "connection.action"),
        (goaway_with_code, "connection.reset_code"),
        (unknown, "connection.action"),
    ] {
        let status = client.echo(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(field), "{status:?}");
    }
    let mut bidi = client
        .bidi_stream(tokio_stream::iter([with_action(
            ConnectionAction::Close,
            0,
        )]))
        .await
        .unwrap()
        .into_inner();
    let status = bidi.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("connection"), "{status:?}");
    // No control closed or drained the connection.
    client.echo(EchoRequest::default()).await.unwrap();
    assert_eq!(server.stats.open_connections(), 1);
    server.stop().await;
}

#[test]
fn the_cli_asks_for_each_action() {
    let server = ServerProcess::start(&[]);
    let goaway = server.client(&["echo", "hi", "--goaway"]);
    assert!(goaway.status.success(), "{goaway:?}");

    let reset = server.client(&["echo", "hi", "--reset-stream", "8"]);
    assert!(!reset.status.success());
    let stderr = String::from_utf8_lossy(&reset.stderr);
    assert!(stderr.contains("CANCELLED"), "{stderr}");

    let closed = server.client(&["server-stream", "hi", "--count", "2", "--close-connection"]);
    assert!(!closed.status.success());
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert!(stderr.contains("UNAVAILABLE"), "{stderr}");

    let both = server.client(&["echo", "hi", "--goaway", "--close-connection"]);
    assert!(!both.status.success());
    assert!(
        String::from_utf8_lossy(&both.stderr).contains("cannot be used with"),
        "{both:?}"
    );
}
