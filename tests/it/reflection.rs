//! Reflection v1 (newer clients) and v1alpha (grpcurl 1.8) both describe every service.

use echo_tests::TestServer;
use tokio_stream::StreamExt;

const EXPECTED: [&str; 7] = [
    "connectrpc.conformance.v1.ConformanceService",
    "echo.v1.EchoService",
    "grpc.examples.echo.Echo",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.testing.TestService",
];

#[tokio::test]
async fn v1_lists_services_and_serves_the_echo_file() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let channel = server.channel().await;
    let mut client = ServerReflectionClient::new(channel);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("echo.v1.EchoService".into()),
    ]
    .map(|request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();

    let listed = responses
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap();
    let MessageResponse::ListServicesResponse(listed) = listed else {
        panic!("{listed:?}")
    };
    let mut names: Vec<_> = listed.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, EXPECTED);

    let file = responses
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap();
    let MessageResponse::FileDescriptorResponse(file) = file else {
        panic!("{file:?}")
    };
    let descriptor: prost_types::FileDescriptorProto =
        prost::Message::decode(&file.file_descriptor_proto[0][..]).unwrap();
    assert_eq!(descriptor.name(), "echo/v1/echo.proto");
    server.stop().await;
}
