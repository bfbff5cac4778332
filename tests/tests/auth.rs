//! Bearer-token authentication: who gets in, what stays open, what never leaks.

use std::path::PathBuf;

use echo_client::EchoClient;
use echo_client::health_proto::health_check_response::ServingStatus;
use echo_client::proto::{EchoRequest, MetadataEcho};
use echo_tests::TestServer;
use tonic::Code;

fn token_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("grpc-echo-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
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
