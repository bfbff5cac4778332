//! Bearer-token authentication: who gets in, what stays open, what never leaks.

use std::path::PathBuf;

use echo_client::EchoClient;
use echo_client::health_proto::health_check_response::ServingStatus;
use echo_client::proto::{EchoRequest, MetadataEcho};
use echo_tests::{TestServer, pki};
use tonic::Code;

fn token_file(name: &str, contents: &str) -> PathBuf {
    pki::write(&pki::temp_dir(name), "tokens", contents)
}

async fn client(server: &TestServer, token: Option<&str>) -> EchoClient {
    let mut builder = EchoClient::builder(server.uri());
    if let Some(token) = token {
        builder = builder.bearer_token(token).unwrap();
    }
    builder.connect().await.unwrap()
}

#[tokio::test]
async fn calls_need_one_of_the_tokens_but_health_and_reflection_stay_open() {
    let path = token_file("tokens", "# ops\nfirst-token\nsecond-token\n");
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.auth.auth_token_file = Some(path);
    }))
    .await;

    for token in ["first-token", "second-token"] {
        client(&server, Some(token))
            .await
            .echo(EchoRequest::default())
            .await
            .unwrap();
    }
    let missing = client(&server, None)
        .await
        .echo(EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        missing.message().contains("missing"),
        "{}",
        missing.message()
    );
    for wrong in ["first-toke", "first-tokenx", "FIRST-TOKEN", "# ops"] {
        let status = client(&server, Some(wrong))
            .await
            .echo(EchoRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{wrong}");
        assert!(status.message().contains("invalid"), "{}", status.message());
    }

    let anonymous = client(&server, None).await;
    assert_eq!(
        anonymous.health_check("").await.unwrap(),
        ServingStatus::Serving
    );

    // The token is a credential: it is not echoed back with the rest of the metadata.
    let request = EchoRequest {
        echo_metadata: MetadataEcho::Both as i32,
        ..Default::default()
    };
    let response = client(&server, Some("first-token"))
        .await
        .echo(request)
        .await
        .unwrap();
    assert!(response.metadata().get("authorization").is_none());
    server.stop().await;
}

#[tokio::test]
async fn health_can_be_closed_too() {
    let path = token_file("closed", "only-token\n");
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.auth.auth_token_file = Some(path);
        c.auth.auth_open_services = Vec::new();
    }))
    .await;
    let status = client(&server, None)
        .await
        .health_check("")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let serving = client(&server, Some("only-token"))
        .await
        .health_check("")
        .await
        .unwrap();
    assert_eq!(serving, ServingStatus::Serving);
    server.stop().await;
}

#[tokio::test]
async fn an_unreadable_or_empty_token_file_stops_the_start() {
    for path in [
        token_file("empty", "# nothing\n\n"),
        PathBuf::from("/nonexistent/grpc-echo-tokens"),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = echo_tests::config(|c| {
            c.auth.auth_token_file = Some(path.clone());
        });
        let error = echo_server::run(listener, config, std::future::pending())
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }
}

/// Reflection stays open by default; a custom list opens what it names, and
/// only that.
#[tokio::test]
async fn reflection_is_open_by_default_and_the_open_list_can_change() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    let list_services = async |server: &TestServer| {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut reflection = ServerReflectionClient::new(server.channel().await);
        match reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
        {
            Ok(response) => response.into_inner().message().await.map(|_| ()),
            Err(status) => Err(status),
        }
    };

    let tokens = token_file("open-default", "the-token\n");
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.auth.auth_token_file = Some(tokens.clone());
    }))
    .await;
    list_services(&server)
        .await
        .expect("reflection needs no token by default");
    server.stop().await;

    let server = TestServer::with_config(echo_tests::config(|c| {
        c.auth.auth_token_file = Some(tokens);
        c.auth.auth_open_services = vec!["echo.v1.EchoService".to_owned()];
    }))
    .await;
    client(&server, None)
        .await
        .echo(EchoRequest::default())
        .await
        .expect("a service on the open list needs no token");
    let status = list_services(&server).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client(&server, None)
        .await
        .health_check("")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    server.stop().await;
}

/// An `authorization` header that is not `Bearer <token>` is refused as such.
#[tokio::test]
async fn a_non_bearer_authorization_is_refused() {
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.auth.auth_token_file = Some(token_file("non-bearer", "the-token\n"));
    }))
    .await;
    for value in [
        "Basic dXNlcjp0aGUtdG9rZW4=",
        "the-token",
        "bearer the-token",
    ] {
        let client = EchoClient::builder(server.uri())
            .metadata("authorization", value)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let status = client.echo(EchoRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{value}");
        assert_eq!(
            status.message(),
            "authorization is not a bearer token",
            "{value}"
        );
    }
    server.stop().await;
}
