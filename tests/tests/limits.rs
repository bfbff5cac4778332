//! Every limit holds, including the ones tonic's defaults leave out.

use std::time::{Duration, Instant};

use echo_client::EchoClient;
use echo_client::proto::EchoRequest;
use echo_server::Config;
use echo_tests::h2raw::{self, END_HEADERS, END_STREAM, GOAWAY, HEADERS, SETTINGS};
use echo_tests::{TestServer, ms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::{Code, Request};

fn delayed(millis: u64) -> EchoRequest {
    EchoRequest {
        delay: Some(ms(millis)),
        ..Default::default()
    }
}

async fn assert_serving(server: &TestServer) {
    let client = server.client().await;
    let request = EchoRequest {
        message: "still here".into(),
        ..Default::default()
    };
    assert_eq!(
        client.echo(request).await.unwrap().get_ref().message,
        "still here"
    );
}

/// tonic's builder passes `None`, which leaves streams unlimited; the server
/// must advertise its limit in its first SETTINGS frame.
#[tokio::test]
async fn settings_advertise_max_concurrent_streams() {
    for (config, expected) in [
        (
            Config::default(),
            echo_server::config::DEFAULT_MAX_CONCURRENT_STREAMS,
        ),
        (
            echo_tests::config(|c| {
                c.http2.max_concurrent_streams = 7;
            }),
            7,
        ),
    ] {
        let server = TestServer::with_config(config).await;
        let mut socket = h2raw::connect(server.addr).await;
        let first = h2raw::read_frame(&mut socket)
            .await
            .expect("a SETTINGS frame");
        assert_eq!(first.kind, SETTINGS);
        let advertised = h2raw::settings(&first);
        assert!(
            advertised.contains(&(h2raw::SETTINGS_MAX_CONCURRENT_STREAMS, expected)),
            "{advertised:?}"
        );
        drop(socket);
        server.stop().await;
    }
}

/// RUSTSEC-2024-0003: streams the server must reset for the client's own
/// protocol errors cost it work; past a limit the connection gets GOAWAY.
/// tonic's builder switches that limit off.
#[tokio::test]
async fn a_flood_of_malformed_streams_gets_goaway() {
    let server = TestServer::start().await;
    let mut socket = h2raw::connect(server.addr).await;
    // Connection-specific headers are malformed in HTTP/2: each such stream is
    // reset with PROTOCOL_ERROR while the connection stays up.
    let malformed = h2raw::grpc_request("/echo.v1.EchoService/Echo", &[("connection", "close")]);
    let (mut reader, mut writer) = socket.split();
    let flood = async {
        for i in 0..2_000u32 {
            let frame = h2raw::frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &malformed);
            if writer.write_all(&frame).await.is_err() {
                break; // closed by the server, as hoped
            }
        }
    };
    let goaway = async {
        while let Some(frame) = h2raw::read_frame(&mut reader).await {
            if frame.kind == GOAWAY {
                return Some(u32::from_be_bytes(frame.payload[4..8].try_into().unwrap()));
            }
        }
        None
    };
    let (_, goaway) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(flood, goaway)
    })
    .await
    .expect("the flood neither got GOAWAY nor a closed connection");
    assert_eq!(goaway, Some(h2raw::ENHANCE_YOUR_CALM));
    assert_serving(&server).await;
    server.stop().await;
}

/// hyper has no timeout for the preface: without one a silent peer holds its
/// connection forever.
#[tokio::test]
async fn silent_and_half_open_connections_are_closed() {
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.http2.handshake_timeout = Duration::from_millis(300).into();
    }))
    .await;
    let silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(&h2raw::PREFACE[..10]).await.unwrap();
    for mut socket in [silent, half] {
        let mut buf = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "a connection without a preface was kept open"
        );
    }
    assert_serving(&server).await;
    server.stop().await;
}

/// hyper's graceful shutdown waits for silent connections (hyper #4170):
/// shutdown must still finish within its grace period.
#[tokio::test]
async fn shutdown_finishes_with_silent_connections_open() {
    let mut server = TestServer::with_config(echo_tests::config(|c| {
        c.listen.shutdown_grace = Duration::from_millis(300).into();
    }))
    .await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let started = Instant::now();
    server.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(5), server.join())
        .await
        .expect("shutdown hung on silent connections")
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(300) + echo_server::STREAM_END_FLUSH * 2,
        "{took:?}"
    );
}

/// tonic's own server timeout answers CANCELLED; the spec says DEADLINE_EXCEEDED.
#[tokio::test]
async fn max_call_time_ends_calls_with_deadline_exceeded() {
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.limits.max_call_time = Duration::from_millis(300).into();
    }))
    .await;
    let client = server.client().await;
    let started = Instant::now();
    let status = client.echo(delayed(10_000)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A caller's longer deadline does not lift the cap.
    let mut request = Request::new(delayed(10_000));
    request.set_timeout(Duration::from_secs(60));
    assert_eq!(
        client.echo(request).await.unwrap_err().code(),
        Code::DeadlineExceeded
    );

    let mut stream = client
        .server_stream(echo_tests::ticking(1000, 50))
        .await
        .unwrap()
        .into_inner();
    let (_, ended) = echo_tests::read_to_end(&mut stream).await;
    let status = ended.expect_err("the stream outlived the call time cap");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    server.stop().await;
}

/// A saturated server says so at once instead of queueing without bound.
#[tokio::test]
async fn calls_over_the_concurrency_limit_are_shed_quickly() {
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.limits.max_concurrent_calls = 2;
    }))
    .await;
    let client = server.client().await;
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.echo(delayed(1_000)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let status = client.echo(EchoRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "shedding took {:?}",
        started.elapsed()
    );

    for call in busy {
        call.await.unwrap().expect("calls under the limit succeed");
    }
    client
        .echo(EchoRequest::default())
        .await
        .expect("capacity is back");
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_capacity_returns() {
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.limits.max_connections = 2;
    }))
    .await;
    let first = server.client().await;
    let second = server.client().await;
    first.echo(EchoRequest::default()).await.unwrap();
    second.echo(EchoRequest::default()).await.unwrap();

    let third = EchoClient::builder(server.uri())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy()
        .unwrap();
    let status = third.echo(EchoRequest::default()).await.unwrap_err();
    // tonic reports a connection closed right after it opened as CANCELLED or UNAVAILABLE.
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Cancelled),
        "{status:?}"
    );

    drop(first);
    let mut recovered = false;
    for _ in 0..50 {
        if third.echo(EchoRequest::default()).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "a closed connection did not free its place");
    server.stop().await;
}

#[tokio::test]
async fn a_header_list_over_the_limit_is_refused_and_the_server_stays_up() {
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.http2.max_header_list_size = 4096;
    }))
    .await;
    let client = server.client().await;
    let mut request = Request::new(EchoRequest::default());
    request
        .metadata_mut()
        .insert("x-big", "x".repeat(8000).parse().unwrap());
    let status = client.echo(request).await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    assert_serving(&server).await;
    server.stop().await;
}
