//! gzip and zstd, both ways, on every service; checked on the wire by the
//! compressed flag of each message, not just by the call succeeding.

use echo_client::proto::EchoRequest;
use echo_client::proto::echo_service_client::EchoServiceClient;
use echo_tests::TestServer;
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

const ENCODINGS: [(CompressionEncoding, &str); 2] = [
    (CompressionEncoding::Gzip, "gzip"),
    (CompressionEncoding::Zstd, "zstd"),
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
    for (encoding, name) in ENCODINGS {
        let client = echo_client::EchoClient::builder(server.uri())
            .compression(encoding)
            .connect()
            .await
            .unwrap();
        let request = EchoRequest {
            message: "squeeze".into(),
            ..Default::default()
        };
        let response = client.echo(request).await.unwrap();
        assert_eq!(response.get_ref().message, "squeeze");
        assert_eq!(response.metadata().get("grpc-encoding").unwrap(), name);
    }
    server.stop().await;
}
