//! The wire reflected back: `EchoRequest.reflect_wire` and the
//! `x-echo-reflect: wire` header answer with what the server received, over
//! every protocol and over TLS with a client certificate; credentials never
//! come back.

use std::time::Duration;

use echo_client::proto::{EchoRequest, Wire};
use echo_client::{EchoClient, Protocol, TlsOptions};
use echo_tests::TestServer;
use echo_tests::pki::{self, Ca};
use grpc_echo::grpc::testing::SimpleRequest;
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;

fn reflecting(timeout: Duration) -> tonic::Request<EchoRequest> {
    let mut request = tonic::Request::new(EchoRequest {
        message: "where".into(),
        reflect_wire: true,
        ..Default::default()
    });
    request.set_timeout(timeout);
    let metadata = request.metadata_mut();
    metadata.insert("x-sent", "by-the-test".parse().unwrap());
    metadata.insert("authorization", "Bearer secret-token".parse().unwrap());
    metadata.insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    request
}

fn header<'a>(wire: &'a Wire, name: &str) -> Option<&'a str> {
    wire.headers
        .iter()
        .find(|header| header.name == name)
        .map(|header| header.value.as_str())
}

#[tokio::test]
async fn each_protocol_sees_what_arrived_and_never_the_credentials() {
    let server = TestServer::start().await;
    let authority = server.addr.to_string();
    let cases = [
        (
            Protocol::Grpc,
            false,
            "grpc",
            "HTTP/2.0",
            "application/grpc",
        ),
        (
            Protocol::GrpcWeb,
            true,
            "grpc-web",
            "HTTP/1.1",
            "application/grpc-web",
        ),
        (
            Protocol::Connect,
            true,
            "connect",
            "HTTP/1.1",
            "application/proto",
        ),
        (
            Protocol::Connect,
            false,
            "connect",
            "HTTP/2.0",
            "application/proto",
        ),
    ];
    for (protocol, http1, name, version, content_type) in cases {
        let client = EchoClient::builder(server.uri())
            .protocol(protocol)
            .http1(http1)
            .connect()
            .await
            .unwrap();
        let response = client
            .echo(reflecting(Duration::from_secs(7)))
            .await
            .unwrap()
            .into_inner();
        let wire = response.wire.expect("reflect_wire answers with the wire");
        let case = format!("{protocol:?} http1={http1}: {wire:?}");
        assert_eq!(wire.protocol, name, "{case}");
        assert_eq!(wire.http_version, version, "{case}");
        assert!(wire.content_type.starts_with(content_type), "{case}");
        assert_eq!(wire.authority, authority, "{case}");
        // The deadline as sent: gRPC's header, or Connect's in milliseconds
        // (the client rounds its 7 s up to the unit it sends).
        match protocol {
            Protocol::Connect => assert_eq!(header(&wire, "connect-timeout-ms"), Some("7000")),
            _ => assert!(header(&wire, "grpc-timeout").is_some(), "{case}"),
        }
        assert!(!wire.timeout.is_empty(), "{case}");
        assert_eq!(header(&wire, "x-sent"), Some("by-the-test"), "{case}");
        assert!(wire.traceparent.starts_with("00-0af765"), "{case}");
        assert!(!format!("{wire:?}").contains("secret-token"), "{case}");
        assert!(wire.tls.is_none(), "{case}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_header_reflects_on_any_service() {
    let server = TestServer::start().await;
    let mut client = TestServiceClient::new(server.channel().await);
    let mut request = tonic::Request::new(SimpleRequest::default());
    request.set_timeout(Duration::from_millis(2500));
    let metadata = request.metadata_mut();
    metadata.insert("x-echo-reflect", "wire".parse().unwrap());
    metadata.insert("authorization", "Bearer secret-token".parse().unwrap());
    let response = client.unary_call(request).await.unwrap();
    let json = response.metadata().get("x-echo-wire").expect("x-echo-wire");
    let wire: serde_json::Value = serde_json::from_str(json.to_str().unwrap()).unwrap();
    assert_eq!(wire["protocol"], "grpc", "{wire}");
    assert_eq!(wire["httpVersion"], "HTTP/2.0", "{wire}");
    assert_eq!(wire["timeout"], "2500000u", "{wire}");
    assert!(!wire.to_string().contains("secret-token"), "{wire}");
    let names: Vec<&str> = wire["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|header| header["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"x-echo-reflect"), "{names:?}");
    server.stop().await;
}

#[tokio::test]
async fn tls_and_the_client_certificate_are_reflected() {
    let dir = pki::temp_dir("wire-tls");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let leaf = server_ca.server();
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.tls.tls_cert = Some(pki::write(&dir, "server.pem", &leaf.cert));
        c.tls.tls_key = Some(pki::write(&dir, "server.key", &leaf.key));
        c.tls.tls_client_ca = Some(pki::write(&dir, "clients.pem", client_ca.pem()));
    }))
    .await;
    let workload = client_ca.workload("checkout", "spiffe://example.org/ns/shop/sa/checkout");
    let client = EchoClient::builder(server.addr.to_string())
        .tls(TlsOptions {
            ca_pem: server_ca.pem().into_bytes(),
            server_name: Some("localhost".into()),
            identity: Some((workload.cert.into_bytes(), workload.key.into_bytes())),
        })
        .connect()
        .await
        .unwrap();
    let response = client
        .echo(reflecting(Duration::from_secs(5)))
        .await
        .unwrap()
        .into_inner();
    let tls = response.wire.unwrap().tls.expect("a TLS session");
    assert_eq!(tls.version, "TLSv1_3", "{tls:?}");
    assert!(tls.cipher.starts_with("TLS13_"), "{tls:?}");
    assert_eq!(tls.alpn, "h2", "{tls:?}");
    assert_eq!(tls.sni, "localhost", "{tls:?}");
    assert!(tls.client_subject.contains("CN=checkout"), "{tls:?}");
    assert_eq!(tls.spiffe_id, "spiffe://example.org/ns/shop/sa/checkout");
    server.stop().await;
}
