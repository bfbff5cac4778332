//! TLS and mutual TLS with certificates made at run time, and certificate
//! reload without a restart.

use std::path::PathBuf;
use std::time::Duration;

use echo_client::proto::EchoRequest;
use echo_client::{EchoClient, Protocol, TlsOptions};
use echo_server::Config;
use echo_tests::pki::{self, Ca, Leaf};
use echo_tests::{TestServer, eventually};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    echo_over_tls_in(server, ca, client, Protocol::Grpc, false).await
}

/// [`echo_over_tls`] in `protocol`, over HTTP/1.1 when `http1`.
async fn echo_over_tls_in(
    server: &TestServer,
    ca: &Ca,
    client: Option<&Leaf>,
    protocol: Protocol,
    http1: bool,
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
        .protocol(protocol)
        .http1(http1)
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
    let client_ca_path = pki::write(&dir, "clients.pem", client_ca.pem());
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

    // The same over HTTP/1.1, in both protocols that allow it.
    for protocol in [Protocol::Connect, Protocol::GrpcWeb] {
        let client = client_ca.client("client-two");
        let identity = echo_over_tls_in(&server, &server_ca, Some(&client), protocol, true)
            .await
            .unwrap_or_else(|error| panic!("{protocol:?} over HTTP/1.1: {error}"));
        assert!(identity.contains("CN=client-two"), "{identity:?}");
        echo_over_tls_in(&server, &server_ca, Some(&stranger), protocol, true)
            .await
            .expect_err("untrusted client certificate over HTTP/1.1");
    }
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
    let failed_before = server.tls_reload.failed_reloads();
    std::fs::write(&files.cert, "not a certificate").unwrap();
    server.tls_reload.reload();
    eventually("the bad certificate to be refused", || async {
        server.tls_reload.failed_reloads() > failed_before
    })
    .await;
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

/// A TLS client configuration trusting `ca`, offering `versions` and ALPN `protocols`.
fn rustls_client(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
    protocols: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

async fn handshake(
    server: &TestServer,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// TLS 1.2 as well as 1.3, and ALPN `h2`; `http/1.1` for gRPC-Web and
/// Connect over HTTP/1.1 (an HTTP/1.1 call over TLS is answered); nothing else.
#[tokio::test]
async fn tls_1_2_and_1_3_negotiate_alpn_h2_and_http1() {
    use rustls::version::{TLS12, TLS13};
    let dir = pki::temp_dir("tls-versions");
    let ca = Ca::new("server CA");
    let files = write_server_files(&dir, &ca.server());
    let server = tls_server(&files, None, Config::default()).await;
    for (version, expected) in [
        (&TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let stream = handshake(&server, &rustls_client(&ca, &[version], &[b"h2"]))
            .await
            .unwrap_or_else(|err| panic!("{expected:?}: {err}"));
        let (_, session) = stream.get_ref();
        assert_eq!(session.protocol_version(), Some(expected));
        assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "{expected:?}");
    }
    let mut http1 = handshake(&server, &rustls_client(&ca, &[&TLS13], &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(http1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let body = r#"{"message":"over TLS"}"#;
    let request = format!(
        "POST /echo.v1.EchoService/Echo HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    http1.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = http1.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""message":"over TLS""#), "{answer}");
    // A client that speaks neither is refused at the handshake.
    let refused = handshake(&server, &rustls_client(&ca, &[&TLS13], &[b"spdy/3.1"])).await;
    assert!(refused.is_err(), "ALPN spdy/3.1 was accepted");
    server.stop().await;
}

/// After a completed TLS handshake, the HTTP/2 preface still has to come
/// within the handshake timeout.
#[tokio::test]
async fn a_tls_connection_without_a_preface_is_closed() {
    let dir = pki::temp_dir("tls-no-preface");
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
    let mut stream = handshake(
        &server,
        &rustls_client(&ca, &[&rustls::version::TLS13], &[b"h2"]),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "a TLS connection without a preface was kept open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}
