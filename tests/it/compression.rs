//! gzip, zstd and deflate, both ways, on every service; checked on the wire by the
//! compressed flag of each message, not just by the call succeeding. Brotli and
//! snappy (which tonic lacks) from the client library to the server, in every
//! protocol, checked by the bytes on the wire.

use echo_client::proto::EchoRequest;
use echo_client::proto::echo_service_client::EchoServiceClient;
use echo_tests::{CountingProxy, TestServer};
use echo_wire::framing::{CompressionFlags, ObservedBody};
use grpc_echo::grpc::examples::echo::echo_client::EchoClient as ExampleEchoClient;
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use grpc_echo::grpc::testing::{BoolValue, Payload, SimpleRequest};
use tonic::Code;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tower::ServiceExt;
use tower::util::BoxCloneService;

type Observed = BoxCloneService<http::Request<Body>, http::Response<Body>, tonic::transport::Error>;

/// A channel that records the compressed flag of every response message into `flags`.
async fn observed_channel(server: &TestServer, flags: CompressionFlags) -> Observed {
    let channel = server.channel().await;
    BoxCloneService::new(channel.map_response(move |response: http::Response<Body>| {
        let flags = flags.clone();
        response.map(|body| Body::new(ObservedBody::new(body, flags)))
    }))
}

const ENCODINGS: [(CompressionEncoding, &str); 3] = [
    (CompressionEncoding::Gzip, "gzip"),
    (CompressionEncoding::Zstd, "zstd"),
    (CompressionEncoding::Deflate, "deflate"),
];

#[tokio::test]
async fn every_service_answers_compressed_in_the_encoding_the_client_accepts() {
    let server = TestServer::start().await;
    for (encoding, name) in ENCODINGS {
        let flags = CompressionFlags::default();
        let channel = observed_channel(&server, flags.clone()).await;

        let mut echo = EchoServiceClient::new(channel.clone())
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let request = EchoRequest {
            payload: vec![7; 10_000].into(),
            ..Default::default()
        };
        let response = echo.echo(request).await.unwrap();
        assert_eq!(response.get_ref().payload.len(), 10_000);
        assert_eq!(response.metadata().get("grpc-encoding").unwrap(), name);
        assert_eq!(
            flags.pop(),
            Some(true),
            "echo.v1 response not compressed with {name}"
        );

        let mut example = ExampleEchoClient::new(channel.clone()).accept_compressed(encoding);
        let request = grpc_echo::grpc::examples::echo::EchoRequest {
            message: "hi".into(),
        };
        example.unary_echo(request).await.unwrap();
        assert_eq!(
            flags.pop(),
            Some(true),
            "grpc.examples.echo response not compressed with {name}"
        );

        let mut health =
            tonic_health::pb::health_client::HealthClient::new(channel).accept_compressed(encoding);
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
        assert_eq!(
            flags.pop(),
            Some(true),
            "health response not compressed with {name}"
        );
    }

    // A client that accepts no compression gets none.
    let flags = CompressionFlags::default();
    let mut plain = EchoServiceClient::new(observed_channel(&server, flags.clone()).await);
    plain.echo(EchoRequest::default()).await.unwrap();
    assert_eq!(flags.pop(), Some(false));
    server.stop().await;
}

#[tokio::test]
async fn the_interop_service_sees_whether_each_request_was_compressed() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let request = || SimpleRequest {
        expect_compressed: Some(BoolValue { value: true }),
        payload: Some(Payload {
            body: vec![0; 1000].into(),
            ..Default::default()
        }),
        response_size: 10,
        ..Default::default()
    };
    for (encoding, name) in ENCODINGS {
        let mut compressed = TestServiceClient::new(channel.clone()).send_compressed(encoding);
        let response = compressed.unary_call(request()).await;
        assert!(response.is_ok(), "{name}: {response:?}");
    }
    let status = TestServiceClient::new(channel)
        .unary_call(request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("expect_compressed"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn the_client_library_compresses_requests_and_prefers_the_same_encoding_back() {
    let server = TestServer::start().await;
    // 100 KB that compress to almost nothing: the bytes on the wire tell.
    let request = EchoRequest {
        message: "squeeze".into(),
        payload: vec![b'z'; 100_000].into(),
        ..Default::default()
    };
    let sent_through = async |compression: Option<CompressionEncoding>| {
        let proxy = CountingProxy::start(server.addr).await;
        let mut builder = echo_client::EchoClient::builder(proxy.addr.to_string());
        if let Some(encoding) = compression {
            builder = builder.compression(encoding);
        }
        let client = builder.connect().await.unwrap();
        let response = client.echo(request.clone()).await.unwrap();
        assert_eq!(response.get_ref().message, "squeeze");
        (proxy.upstream_bytes(), response)
    };
    let (plain, _) = sent_through(None).await;
    assert!(plain > 100_000, "{plain} bytes sent uncompressed");
    for (encoding, name) in ENCODINGS {
        let (compressed, response) = sent_through(Some(encoding)).await;
        assert!(
            compressed < plain / 10,
            "{name}: {compressed} bytes sent, {plain} uncompressed"
        );
        assert_eq!(response.metadata().get("grpc-encoding").unwrap(), name);
    }
    server.stop().await;
}

/// Brotli and snappy, which tonic lacks: the client library compresses each
/// request message itself, the server decompresses it before its services
/// (tonic would refuse the call), in every protocol and both HTTP versions.
#[tokio::test]
async fn brotli_and_snappy_requests_in_every_protocol() {
    use echo_client::{Compression, Protocol};
    let server = TestServer::start().await;
    let request = EchoRequest {
        message: "squeeze".into(),
        payload: vec![b'z'; 100_000].into(),
        ..Default::default()
    };
    for (protocol, http1) in [
        (Protocol::Grpc, false),
        (Protocol::GrpcWeb, true),
        (Protocol::Connect, false),
        (Protocol::Connect, true),
    ] {
        for compression in [Compression::Brotli, Compression::Snappy] {
            let case = format!("{protocol:?}, http1: {http1}, {compression:?}");
            let proxy = CountingProxy::start(server.addr).await;
            let client = echo_client::EchoClient::builder(proxy.addr.to_string())
                .protocol(protocol)
                .http1(http1)
                .message_compression(compression)
                .connect()
                .await
                .unwrap();
            let response = client
                .echo(request.clone())
                .await
                .unwrap_or_else(|status| panic!("{case}: {status:?}"));
            assert_eq!(response.get_ref().payload.len(), 100_000, "{case}");
            let sent = proxy.upstream_bytes();
            assert!(sent < 20_000, "{case}: {sent} bytes sent for 100 KB");
            let mut stream = client
                .client_stream(tokio_stream::iter(["a", "b"].map(|message| EchoRequest {
                    message: message.into(),
                    ..Default::default()
                })))
                .await
                .unwrap_or_else(|status| panic!("{case}: {status:?}"));
            assert_eq!(stream.get_mut().messages, ["a", "b"], "{case}");
        }
    }
    server.stop().await;
}

/// A client that accepts several encodings gets the first it lists that the
/// server supports.
#[tokio::test]
async fn the_first_encoding_the_client_accepts_is_chosen() {
    let server = TestServer::start().await;
    let socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    for (accepted, chosen) in [
        ("zstd,gzip", "zstd"),
        ("gzip,zstd", "gzip"),
        ("br, identity, zstd ,gzip", "zstd"),
        ("deflate,gzip", "deflate"),
    ] {
        let request = http::Request::post(format!("{}/echo.v1.EchoService/Echo", server.uri()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-accept-encoding", accepted)
            .body(())
            .unwrap();
        let mut client = client.clone().ready().await.unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        body.send_data(echo_tests::grpc_message(b""), true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(
            response
                .headers()
                .get("grpc-encoding")
                .map(|v| v.to_str().unwrap()),
            Some(chosen),
            "{accepted}"
        );
    }
    server.stop().await;
}
