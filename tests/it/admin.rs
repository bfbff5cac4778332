//! The admin service flips the reported health at run time, is off by default,
//! and needs a token when tokens are configured.

use echo_client::EchoClient;
use echo_client::health_proto::health_check_response::ServingStatus;
use echo_client::proto::HealthStatus;
use echo_tests::TestServer;
use tonic::Code;

#[tokio::test]
async fn health_can_be_flipped_and_watchers_see_it() {
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.services.admin = true;
    }))
    .await;
    let client = server.client().await;
    let mut watch = client.health_watch("echo.v1.EchoService").await.unwrap();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    client
        .set_health("echo.v1.EchoService", HealthStatus::NotServing)
        .await
        .unwrap();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    assert_eq!(
        client.health_check("echo.v1.EchoService").await.unwrap(),
        ServingStatus::NotServing
    );
    assert_eq!(
        client.health_check("").await.unwrap(),
        ServingStatus::Serving,
        "only that service"
    );

    client
        .set_health("", HealthStatus::NotServing)
        .await
        .unwrap();
    assert_eq!(
        client.health_check("").await.unwrap(),
        ServingStatus::NotServing
    );
    client
        .set_health("echo.v1.EchoService", HealthStatus::Serving)
        .await
        .unwrap();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let unknown = client
        .set_health("no.such.Service", HealthStatus::NotServing)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let unspecified = client
        .set_health("", HealthStatus::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(unspecified.code(), Code::InvalidArgument);
    drop(watch);
    server.stop().await;
}

#[tokio::test]
async fn the_admin_service_is_off_by_default_and_guarded_by_tokens() {
    let server = TestServer::start().await;
    let status = server
        .client()
        .await
        .set_health("", HealthStatus::NotServing)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    server.stop().await;

    let tokens =
        echo_tests::pki::write(&echo_tests::pki::temp_dir("admin"), "tokens", "ops-token\n");
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.services.admin = true;
        c.auth.auth_token_file = Some(tokens);
    }))
    .await;
    let anonymous = server.client().await;
    let status = anonymous
        .set_health("", HealthStatus::NotServing)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        anonymous.health_check("").await.unwrap(),
        ServingStatus::Serving
    );

    let operator = EchoClient::builder(server.uri())
        .bearer_token("ops-token")
        .unwrap()
        .connect()
        .await
        .unwrap();
    operator
        .set_health("", HealthStatus::NotServing)
        .await
        .unwrap();
    assert_eq!(
        anonymous.health_check("").await.unwrap(),
        ServingStatus::NotServing
    );
    server.stop().await;
}
