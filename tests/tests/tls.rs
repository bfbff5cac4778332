//! TLS and mutual TLS with certificates made at run time, and certificate
//! reload without a restart.

use std::path::PathBuf;
use std::time::Duration;

use echo_client::proto::EchoRequest;
use echo_client::{EchoClient, TlsOptions};
use echo_server::Config;
use echo_tests::TestServer;
use echo_tests::pki::{self, Ca, Leaf};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
}

fn write_server_files(dir: &std::path::Path, leaf: &Leaf) -> ServerFiles {
    ServerFiles {
        cert: pki::write(dir, "server.pem", &leaf.cert),
        key: pki::write(dir, "server.key", &leaf.key),
    }
}

async fn tls_server(files: &ServerFiles, client_ca: Option<PathBuf>, extra: Config) -> TestServer {
    TestServer::with_config({
        let mut c = extra;
        c.tls.tls_cert = Some(files.cert.clone());
        c.tls.tls_key = Some(files.key.clone());
        c.tls.tls_client_ca = client_ca;
        c
    })
    .await
}

/// Connects with TLS trusting `ca`, as `client` when given; the error as text.
async fn echo_over_tls(
    server: &TestServer,
    ca: &Ca,
    client: Option<&Leaf>,
) -> Result<String, String> {
    let options = TlsOptions {
        ca_pem: ca.pem().into_bytes(),
        server_name: Some("localhost".into()),
        identity: client.map(|leaf| {
            (
                leaf.cert.clone().into_bytes(),
                leaf.key.clone().into_bytes(),
            )
        }),
    };
    let client = EchoClient::builder(server.addr.to_string())
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3))
        .tls(options)
        .connect()
        .await
        .map_err(|err| format!("{err:?}"))?;
    let response = client
        .echo(EchoRequest {
            message: "secret".into(),
            ..Default::default()
        })
        .await;
    let response = response
        .map_err(|status| format!("{status:?}"))?
        .into_inner();
    assert_eq!(response.message, "secret");
    Ok(response.peer_identity)
}

#[tokio::test]
async fn tls_works_and_plaintext_or_the_wrong_ca_fail_cleanly() {
    let dir = pki::temp_dir("tls-basic");
    let ca = Ca::new("server CA");
    let files = write_server_files(&dir, &ca.server());
    let server = tls_server(&files, None, Config::default()).await;

    assert_eq!(
        echo_over_tls(&server, &ca, None).await.unwrap(),
        "",
        "no client certificate, no identity"
    );

    let plaintext = EchoClient::builder(server.addr.to_string())
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3))
        .connect_lazy()
        .unwrap();
    let status = plaintext.echo(EchoRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    let error = echo_over_tls(&server, &Ca::new("some other CA"), None)
        .await
        .unwrap_err();
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    echo_over_tls(&server, &ca, None)
        .await
        .expect("still serving after the failures");
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_requires_a_trusted_client_certificate_and_reports_its_subject() {
    let dir = pki::temp_dir("tls-mutual");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let files = write_server_files(&dir, &server_ca.server());
    let client_ca_path = pki::write(&dir, "clients.pem", &client_ca.pem());
    let server = tls_server(&files, Some(client_ca_path), Config::default()).await;

    echo_over_tls(&server, &server_ca, None)
        .await
        .expect_err("no client certificate");
    let stranger = Ca::new("stranger CA").client("mallory");
    echo_over_tls(&server, &server_ca, Some(&stranger))
        .await
        .expect_err("untrusted client certificate");

    let identity = echo_over_tls(&server, &server_ca, Some(&client_ca.client("client-one")))
        .await
        .unwrap();
    assert!(identity.contains("CN=client-one"), "{identity:?}");
    server.stop().await;
}

#[tokio::test]
async fn certificates_reload_without_a_restart_and_bad_files_keep_the_old_one() {
    let dir = pki::temp_dir("tls-reload");
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let files = write_server_files(&dir, &old_ca.server());
    let server = tls_server(&files, None, Config::default()).await;
    echo_over_tls(&server, &old_ca, None).await.unwrap();
    echo_over_tls(&server, &new_ca, None)
        .await
        .expect_err("not the new certificate yet");

    // On request (what SIGHUP does): new connections get the new certificate.
    write_server_files(&dir, &new_ca.server());
    server.tls_reload.reload();
    let mut reloaded = false;
    for _ in 0..50 {
        if echo_over_tls(&server, &new_ca, None).await.is_ok() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "the reload did not take effect");
    echo_over_tls(&server, &old_ca, None)
        .await
        .expect_err("the old certificate is gone");

    // A broken file is refused, and the certificate in use stays.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    server.tls_reload.reload();
    tokio::time::sleep(Duration::from_millis(200)).await;
    echo_over_tls(&server, &new_ca, None)
        .await
        .expect("the last good certificate stays");

    // When the files change, they are picked up without being asked.
    write_server_files(&dir, &old_ca.server());
    let mut picked_up = false;
    for _ in 0..100 {
        if echo_over_tls(&server, &old_ca, None).await.is_ok() {
            picked_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(picked_up, "a changed certificate file was not picked up");
    server.stop().await;
}

#[tokio::test]
async fn connections_that_never_finish_the_handshake_are_closed() {
    let dir = pki::temp_dir("tls-silent");
    let ca = Ca::new("server CA");
    let files = write_server_files(&dir, &ca.server());
    let server = tls_server(
        &files,
        None,
        echo_tests::config(|c| {
            c.http2.handshake_timeout = Duration::from_millis(300).into();
        }),
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Meanwhile, handshakes that do happen are not held up.
    echo_over_tls(&server, &ca, None).await.unwrap();
    for mut socket in silent {
        let mut buf = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "a connection without a TLS handshake was kept open"
        );
    }
    server.stop().await;
}
