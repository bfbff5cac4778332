//! How the client library reads answers: the odd ones a server may send (as
//! the Connect conformance suite's reference server sends them on purpose),
//! served here by a raw HTTP/2 server that answers each call as the test
//! says; a deadline held to a stream's last message; and its JSON codec and
//! Connect GET against the real server. What the suite found in the client
//! library, kept in `cargo test`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use echo_client::proto::{EchoRequest, EchoResponse};
use echo_client::{Codec, EchoClient, Protocol};
use echo_tests::{CountingProxy, TestServer, grpc_message, ticking};
use prost::Message as _;
use tokio::net::TcpListener;
use tonic::Code;

/// One canned answer: its HTTP status and headers, body chunks, trailers.
#[derive(Clone, Default)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<Bytes>,
    /// A pause before each body chunk.
    pause: Duration,
    trailers: Vec<(&'static str, String)>,
}

impl Answer {
    fn grpc() -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "application/grpc".into())],
            ..Self::default()
        }
    }
}

/// A server that answers every call with `answer`, over HTTP/2.
async fn canned(answer: Answer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_request, respond))) = connection.accept().await {
                    tokio::spawn(send(answer.clone(), respond));
                }
            });
        }
    });
    addr
}

/// Sends `answer` on one stream.
async fn send(answer: Answer, mut respond: h2::server::SendResponse<Bytes>) {
    let mut response = http::Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        response = response.header(*name, value);
    }
    let ends_at_headers = answer.body.is_empty() && answer.trailers.is_empty();
    let mut send = respond
        .send_response(response.body(()).unwrap(), ends_at_headers)
        .unwrap();
    for (i, chunk) in answer.body.iter().enumerate() {
        tokio::time::sleep(answer.pause).await;
        let last = i + 1 == answer.body.len() && answer.trailers.is_empty();
        if send.send_data(chunk.clone(), last).is_err() {
            return; // the client reset the stream
        }
    }
    if !answer.trailers.is_empty() {
        let mut trailers = http::HeaderMap::new();
        for (name, value) in &answer.trailers {
            trailers.append(*name, value.parse().unwrap());
        }
        let _ = send.send_trailers(trailers);
    }
}

async fn echo_from(addr: SocketAddr, protocol: Protocol) -> Result<EchoResponse, tonic::Status> {
    let client = EchoClient::builder(addr.to_string())
        .protocol(protocol)
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    client
        .echo(EchoRequest::default())
        .await
        .map(tonic::Response::into_inner)
}

fn reply(message: &str) -> Bytes {
    grpc_message(
        &EchoResponse {
            message: message.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

/// A method that answers once, answered twice or not at all, fails
/// (UNIMPLEMENTED, as grpc-go and connect-go fail it; tonic alone takes the
/// first answer, or says INTERNAL). A status in the headers followed by a
/// body yields to the body's trailers.
#[tokio::test]
async fn a_unary_call_answered_twice_or_not_at_all_fails() {
    let twice = Answer {
        body: vec![reply("one"), reply("two")],
        trailers: vec![("grpc-status", "0".into())],
        ..Answer::grpc()
    };
    let status = echo_from(canned(twice).await, Protocol::Grpc)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    let none = Answer {
        trailers: vec![("grpc-status", "0".into())],
        body: vec![Bytes::new()],
        ..Answer::grpc()
    };
    let status = echo_from(canned(none).await, Protocol::Grpc)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    let mut trailers_only = Answer::grpc();
    trailers_only.headers.push(("grpc-status", "0".into()));
    let status = echo_from(canned(trailers_only).await, Protocol::Grpc)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    let mut header_then_trailers = Answer {
        body: vec![Bytes::new()],
        trailers: vec![("grpc-status", "9".into())],
        ..Answer::grpc()
    };
    header_then_trailers
        .headers
        .push(("grpc-status", "8".into()));
    let status = echo_from(canned(header_then_trailers).await, Protocol::Grpc)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // An answer that is not gRPC, or in a compression the client lacks.
    let html = Answer {
        status: 200,
        headers: vec![("content-type", "text/html".into())],
        body: vec![Bytes::from_static(b"<html>")],
        ..Answer::default()
    };
    let status = echo_from(canned(html).await, Protocol::Grpc)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    let mut foo = Answer {
        body: vec![reply("x")],
        trailers: vec![("grpc-status", "0".into())],
        ..Answer::grpc()
    };
    foo.headers.push(("grpc-encoding", "foo".into()));
    let status = echo_from(canned(foo).await, Protocol::Grpc)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
}

/// gRPC-Web trailers sent compressed (flag 0x81), with a name given twice:
/// the status and both values arrive (tonic-web alone refuses the flag and
/// keeps one value a name).
#[tokio::test]
async fn grpc_web_trailers_compressed_and_repeated_are_read() {
    let block = "grpc-status: 5\r\ngrpc-message: gone\r\nx-tag: a\r\nX-Tag: b\r\n";
    let answer = Answer {
        status: 200,
        headers: vec![
            ("content-type", "application/grpc-web+proto".into()),
            ("grpc-encoding", "gzip".into()),
        ],
        body: vec![echo_wire::framing::envelope(
            0x81,
            &echo_wire::framing::gzip(block.as_bytes()),
        )],
        ..Answer::default()
    };
    let status = echo_from(canned(answer).await, Protocol::GrpcWeb)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "gone");
    let tags: Vec<_> = status
        .metadata()
        .get_all("x-tag")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(tags, ["a", "b"]);
}

/// A Connect unary error: its body in the answer's content encoding, a code
/// it lacks taken from the HTTP status, its `trailer-` headers kept; an
/// answer in another codec is INTERNAL, one that is not Connect is mapped
/// from its HTTP status.
#[tokio::test]
async fn connect_errors_are_read_whole() {
    let answer = Answer {
        status: 401,
        headers: vec![
            ("content-type", "application/json".into()),
            ("content-encoding", "gzip".into()),
            ("trailer-x-why", "no token".into()),
        ],
        body: vec![echo_wire::framing::gzip(br#"{"message":"who are you"}"#)],
        ..Answer::default()
    };
    let status = echo_from(canned(answer).await, Protocol::Connect)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "who are you");
    assert_eq!(status.metadata().get("x-why").unwrap(), "no token");

    let json = Answer {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: vec![Bytes::from_static(b"{}")],
        ..Answer::default()
    };
    let status = echo_from(canned(json).await, Protocol::Connect)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");

    let unavailable = Answer {
        status: 503,
        headers: vec![("content-type", "text/html".into())],
        body: vec![Bytes::from_static(b"<html>down</html>")],
        ..Answer::default()
    };
    let status = echo_from(canned(unavailable).await, Protocol::Connect)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// A call's deadline holds to the stream's last message, not only to its
/// headers, even from a server that ignores it (as the conformance suite's
/// reference server does on purpose).
#[tokio::test]
async fn a_deadline_ends_a_stream_that_outlives_it() {
    let slow = Answer {
        body: (0..20).map(|i| reply(&i.to_string())).collect(),
        pause: Duration::from_millis(100),
        trailers: vec![("grpc-status", "0".into())],
        ..Answer::grpc()
    };
    let client = EchoClient::builder(canned(slow).await.to_string())
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(ticking(20, 100));
    request.set_timeout(Duration::from_millis(350));
    let mut stream = client.server_stream(request).await.unwrap().into_inner();
    let mut received = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the stream outlived its deadline"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // Ended by the deadline, a few messages in: not by the server.
    assert!((1..20).contains(&received), "{received}");
}

/// In JSON, in every protocol and both HTTP versions where the protocol
/// allows: a unary call (Connect's GET for a method without side effects),
/// a server stream and an error, against the real server; what goes over
/// HTTP/1.1 is read off a proxy.
#[tokio::test]
async fn json_and_connect_get_in_every_protocol() {
    let server = TestServer::start().await;
    for (protocol, http1) in [
        (Protocol::Grpc, false),
        (Protocol::GrpcWeb, false),
        (Protocol::GrpcWeb, true),
        (Protocol::Connect, false),
        (Protocol::Connect, true),
    ] {
        let case = format!("{protocol:?}, http1: {http1}");
        let proxy = CountingProxy::start(server.addr).await;
        let client = EchoClient::builder(proxy.addr.to_string())
            .protocol(protocol)
            .http1(http1)
            .codec(Codec::Json)
            .connect_get(true)
            .compression(tonic::codec::CompressionEncoding::Gzip)
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let reply = client
            .echo(EchoRequest {
                message: "in json".into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("{case}: {status:?}"))
            .into_inner();
        assert_eq!(reply.message, "in json", "{case}");
        if http1 {
            let opening = String::from_utf8_lossy(&proxy.first_opening()).to_ascii_lowercase();
            let expected = match protocol {
                Protocol::Connect => "get /echo.v1.echoservice/echo?connect=v1&encoding=json&",
                _ => "post /echo.v1.echoservice/echo http/1.1\r\n",
            };
            assert!(opening.starts_with(expected), "{case}: {opening}");
            if protocol == Protocol::GrpcWeb {
                assert!(
                    opening.contains("content-type: application/grpc-web+json\r\n"),
                    "{case}: {opening}"
                );
            }
        }

        let mut stream = client
            .server_stream(ticking(3, 1))
            .await
            .unwrap_or_else(|status| panic!("{case}: {status:?}"))
            .into_inner();
        let mut sequences = Vec::new();
        while let Some(message) = stream.message().await.unwrap() {
            sequences.push(message.sequence);
        }
        assert_eq!(sequences, [0, 1, 2], "{case}");

        let failed = client
            .echo(EchoRequest {
                error: Some(echo_client::proto::ErrorControl {
                    code: echo_client::proto::StatusCode::NotFound as i32,
                    message: "not in json either".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(failed.code(), Code::NotFound, "{case}");
        assert_eq!(failed.message(), "not in json either", "{case}");
    }
    server.stop().await;
}
