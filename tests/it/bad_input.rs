//! Hostile or broken input gets a proper status or a closed connection, and the
//! server keeps serving everyone else.

use std::time::Duration;

use echo_client::proto::EchoRequest;
use echo_client::proto::echo_service_client::EchoServiceClient;
use echo_tests::{TestServer, assert_still_serving};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

/// A message whose field 1 is a varint, where `EchoRequest.message` is a string.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(uint64, tag = "1")]
    message: u64,
}

/// `EchoRequest.message` (field 1) as raw bytes, so it can hold invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawMessageField {
    #[prost(bytes = "vec", tag = "1")]
    message: Vec<u8>,
}

async fn raw_unary<M>(channel: Channel, path: &'static str, message: M) -> Result<(), tonic::Status>
where
    M: prost::Message + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary::<M, EchoRequest, ProstCodec<M, EchoRequest>>(
        tonic::Request::new(message),
        PathAndQuery::from_static(path),
        ProstCodec::default(),
    )
    .await
    .map(drop)
}

#[tokio::test]
async fn garbage_bytes_close_the_connection_and_the_server_stays_up() {
    let server = TestServer::start().await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe garbage")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server neither answered nor closed the connection"
    );

    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(&[0xde; 4096]).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server neither answered nor closed the connection"
    );

    assert_still_serving(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_method_and_service_get_unimplemented() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    for path in ["/echo.v1.EchoService/NoSuchMethod", "/no.such.Service/Echo"] {
        let status = raw_unary(channel.clone(), path, EchoRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
    }
    assert_still_serving(server.addr).await;
    server.stop().await;
}

/// Bytes that are not a valid `EchoRequest` get INTERNAL naming the problem.
#[tokio::test]
async fn malformed_protobuf_gets_a_status_not_a_crash() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let wrong_wire_type = raw_unary(
        channel.clone(),
        "/echo.v1.EchoService/Echo",
        WrongWireType { message: 42 },
    );
    let invalid_utf8 = raw_unary(
        channel,
        "/echo.v1.EchoService/Echo",
        RawMessageField {
            message: vec![b'h', 0xff, 0xfe, b'i'],
        },
    );
    for (status, says) in [
        (wrong_wire_type.await, "wire type"),
        (invalid_utf8.await, "UTF-8"),
    ] {
        let status = status.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(status.message().contains(says), "{}", status.message());
    }
    assert_still_serving(server.addr).await;
    server.stop().await;
}

/// RESOURCE_EXHAUSTED as the gRPC spec says (tonic alone says OUT_OF_RANGE),
/// and the same connection goes on serving.
#[tokio::test]
async fn oversized_messages_get_resource_exhausted_both_ways() {
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.limits.max_message_size = 64 * 1024;
    }))
    .await;
    let client = server.client().await;
    let too_big = EchoRequest {
        payload: vec![0; 100 * 1024].into(),
        ..Default::default()
    };
    let status = client.echo(too_big.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );

    // On a stream the status arrives in the trailers.
    let status = client
        .client_stream(tokio_stream::iter([EchoRequest::default(), too_big]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // Too big to send back (uncompressed, so the limit bites): refused on the way out.
    let channel = server.channel().await;
    let request = EchoRequest {
        response_size: Some(100 * 1024),
        ..Default::default()
    };
    let status = EchoServiceClient::new(channel)
        .echo(request)
        .await
        .map(|response| response.into_inner().payload.len())
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let again = EchoRequest {
        message: "same connection".into(),
        ..Default::default()
    };
    assert_eq!(
        client.echo(again).await.unwrap().get_ref().message,
        "same connection"
    );
    server.stop().await;
}
