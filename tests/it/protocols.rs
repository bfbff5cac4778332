//! Every protocol on one port, seen on the wire: Connect unary (POST and GET)
//! and gRPC-Web over HTTP/1.1 written by hand, CORS, and the bad input each
//! protocol must answer clearly (wrong content types, JSON that does not fit,
//! oversized bodies, request smuggling shapes, a late HTTP/2 preface, silent
//! HTTP/1.1 clients), with the server serving everyone else throughout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use echo_client::proto::EchoRequest;
use echo_tests::process::EVENT_TIMEOUT;
use echo_tests::{TestServer, assert_still_serving, config, ticking};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back on one HTTP/1.1 connection.
struct Exchange {
    /// Everything read, as text.
    text: String,
    /// Whether the server closed the connection (rather than leaving it open).
    closed: bool,
}

impl Exchange {
    fn status(&self) -> u16 {
        self.text
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {:?}", self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.body())
            .unwrap_or_else(|err| panic!("{err}: not JSON: {:?}", self.text))
    }
}

/// Writes `request` on a new connection, then reads until the server closes
/// it or `quiet` passes with nothing more to read.
async fn exchange(addr: SocketAddr, request: &[u8], quiet: Duration) -> Exchange {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut read = Vec::new();
    let mut buf = [0; 16384];
    let closed = loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => read.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Exchange {
        text: String::from_utf8_lossy(&read).into_owned(),
        closed,
    }
}

/// A POST over HTTP/1.1 that asks the server to close the connection after it.
fn post(path: &str, content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: {content_type}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn get(path_and_query: &str) -> Vec<u8> {
    format!("GET {path_and_query} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").into_bytes()
}

const ECHO: &str = "/echo.v1.EchoService/Echo";
const QUIET: Duration = Duration::from_secs(2);

#[tokio::test]
async fn connect_unary_in_json_and_protobuf_post_and_get() {
    let server = TestServer::start().await;
    let json = exchange(
        server.addr,
        &post(
            ECHO,
            "application/json",
            "",
            br#"{"message":"hi","echoMetadata":"METADATA_ECHO_BOTH"}"#,
        ),
        QUIET,
    )
    .await;
    assert_eq!(json.status(), 200, "{}", json.text);
    assert_eq!(json.header("content-type"), Some("application/json"));
    assert_eq!(json.json()["message"], "hi");
    assert!(json.header("x-request-id").is_some(), "{}", json.text);

    // The same call with the message in the query (Echo has no side effects).
    let query = "connect=v1&encoding=json&message=%7B%22message%22%3A%22q%22%7D";
    let got = exchange(server.addr, &get(&format!("{ECHO}?{query}")), QUIET).await;
    assert_eq!(got.status(), 200, "{}", got.text);
    assert_eq!(got.json()["message"], "q");

    // Protobuf: field 1 (message) = "pb".
    let proto = exchange(
        server.addr,
        &post(ECHO, "application/proto", "", b"\x0a\x02pb"),
        QUIET,
    )
    .await;
    assert_eq!(proto.status(), 200, "{}", proto.text);
    assert_eq!(proto.header("content-type"), Some("application/proto"));
    assert!(
        proto.body().as_bytes().starts_with(b"\x0a\x02pb"),
        "{:?}",
        proto.body()
    );

    // A requested error: Connect's JSON with the code's name and the details.
    let failed = exchange(
        server.addr,
        &post(
            ECHO,
            "application/json",
            "",
            br#"{"error":{"code":"STATUS_CODE_NOT_FOUND","message":"gone","details":{"k":"v"}}}"#,
        ),
        QUIET,
    )
    .await;
    assert_eq!(failed.status(), 404, "{}", failed.text);
    let error = failed.json();
    assert_eq!(error["code"], "not_found");
    assert_eq!(error["message"], "gone");
    assert_eq!(
        error["details"][0]["type"], "google.rpc.ErrorInfo",
        "{error}"
    );
    server.stop().await;
}

#[tokio::test]
async fn connect_deadline_is_a_grpc_deadline() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let late = exchange(
        server.addr,
        &post(
            ECHO,
            "application/json",
            "connect-timeout-ms: 100\r\n",
            br#"{"message":"slow","delay":"2s"}"#,
        ),
        QUIET,
    )
    .await;
    assert_eq!(late.status(), 504, "{}", late.text);
    assert_eq!(late.json()["code"], "deadline_exceeded");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    let malformed = exchange(
        server.addr,
        &post(
            ECHO,
            "application/json",
            "connect-timeout-ms: soon\r\n",
            b"{}",
        ),
        QUIET,
    )
    .await;
    assert_eq!(malformed.status(), 400, "{}", malformed.text);
    assert!(
        malformed.json()["message"]
            .as_str()
            .unwrap()
            .contains("connect-timeout-ms")
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_server_serves_on() {
    let server = TestServer::with_config(config(|c| c.limits.max_message_size = 1024)).await;
    let addr = server.addr;

    let unsupported = exchange(addr, &post(ECHO, "text/plain", "", b"hi"), QUIET).await;
    assert_eq!(unsupported.status(), 415, "{}", unsupported.text);
    assert!(
        unsupported.body().contains("text/plain"),
        "{}",
        unsupported.text
    );

    let no_type = exchange(addr, &post(ECHO, "", "", b"hi"), QUIET).await;
    assert_eq!(no_type.status(), 415, "{}", no_type.text);

    // A value of the wrong type is INVALID_ARGUMENT naming its field.
    let wrong = exchange(
        addr,
        &post(
            ECHO,
            "application/json",
            "",
            br#"{"stream":{"count":"many"}}"#,
        ),
        QUIET,
    )
    .await;
    assert_eq!(wrong.status(), 400, "{}", wrong.text);
    assert_eq!(wrong.json()["code"], "invalid_argument");
    assert!(
        wrong.json()["message"]
            .as_str()
            .unwrap()
            .contains("`stream.count`"),
        "{}",
        wrong.text
    );

    let not_json = exchange(
        addr,
        &post(ECHO, "application/json", "", b"{\"message\":"),
        QUIET,
    )
    .await;
    assert_eq!(
        not_json.json()["code"],
        "invalid_argument",
        "{}",
        not_json.text
    );

    // Over --max-message-size, as for gRPC.
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(2000));
    let oversized = exchange(
        addr,
        &post(ECHO, "application/json", "", big.as_bytes()),
        QUIET,
    )
    .await;
    assert_eq!(oversized.status(), 429, "{}", oversized.text);
    assert_eq!(oversized.json()["code"], "resource_exhausted");

    let no_message = exchange(
        addr,
        &get(&format!("{ECHO}?connect=v1&encoding=json")),
        QUIET,
    )
    .await;
    assert_eq!(no_message.status(), 400, "{}", no_message.text);
    assert!(
        no_message.json()["message"]
            .as_str()
            .unwrap()
            .contains("message query parameter")
    );

    // GET is only for methods without side effects.
    let stream_get = exchange(
        addr,
        &get("/echo.v1.EchoService/ServerStream?connect=v1&encoding=json&message=%7B%7D"),
        QUIET,
    )
    .await;
    assert_eq!(
        stream_get.json()["code"],
        "unimplemented",
        "{}",
        stream_get.text
    );

    let version = exchange(
        addr,
        &post(
            ECHO,
            "application/json",
            "connect-protocol-version: 7\r\n",
            b"{}",
        ),
        QUIET,
    )
    .await;
    assert_eq!(version.status(), 400, "{}", version.text);

    // gRPC-Web text that is not base64: a gRPC status in the headers.
    let text = exchange(
        addr,
        &post(ECHO, "application/grpc-web-text", "", b"!!not base64!!"),
        QUIET,
    )
    .await;
    assert_eq!(text.status(), 200, "{}", text.text);
    assert!(
        text.header("grpc-status")
            .is_some_and(|status| status != "0"),
        "{}",
        text.text
    );

    // gRPC itself needs HTTP/2.
    let grpc = exchange(
        addr,
        &post(ECHO, "application/grpc", "", b"\0\0\0\0\0"),
        QUIET,
    )
    .await;
    assert_eq!(grpc.status(), 505, "{}", grpc.text);

    assert_still_serving(addr).await;
    server.stop().await;
}

#[tokio::test]
async fn request_smuggling_shapes_end_the_connection_unsmuggled() {
    let server = TestServer::start().await;
    let smuggled = "GET /echo.v1.EchoService/Echo?connect=v1&encoding=json&message=%7B%22message%22%3A%22smuggled%22%7D HTTP/1.1\r\nhost: test\r\n\r\n";
    let body = r#"{"message":"first"}"#;

    // Content-Length and Transfer-Encoding both: hyper drops the length and
    // reads the chunked body (RFC 9112 section 6.3), so the server cannot
    // tell the shape apart to answer 400; it answers the chunked request and
    // closes the connection, as the RFC requires, so nothing is smuggled.
    let both = format!(
        "POST {ECHO} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{smuggled}",
        body.len(),
        body.len()
    );
    let answer = exchange(server.addr, both.as_bytes(), QUIET).await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "{}",
        answer.text
    );
    assert_eq!(answer.json()["message"], "first");
    assert!(answer.closed, "the connection stayed open: {}", answer.text);
    assert!(!answer.text.contains("smuggled"), "{}", answer.text);

    // Two different Content-Lengths.
    let two = format!(
        "POST {ECHO} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncontent-length: 2\r\n\r\n{body}{smuggled}",
        body.len()
    );
    let answer = exchange(server.addr, two.as_bytes(), QUIET).await;
    assert_eq!(answer.status(), 400, "{}", answer.text);
    assert!(answer.closed, "the connection stayed open: {}", answer.text);
    assert!(!answer.text.contains("smuggled"), "{}", answer.text);

    assert_still_serving(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn an_http2_preface_after_an_http1_request_closes_the_connection() {
    let server = TestServer::start().await;
    let mut request = format!(
        "POST {ECHO} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
    )
    .into_bytes();
    request.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let answer = exchange(server.addr, &request, QUIET).await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
    assert!(answer.closed, "the connection stayed open: {}", answer.text);
    assert_eq!(
        answer.text.matches("HTTP/1.1 ").count(),
        1,
        "{}",
        answer.text
    );
    assert_still_serving(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn silent_and_trickling_http1_clients_are_cut() {
    let timeout = Duration::from_millis(500);
    let server =
        TestServer::with_config(config(|c| c.http2.handshake_timeout = timeout.into())).await;
    // Cut one handshake timeout after the headers began (or after the last
    // answer), give or take a busy machine's scheduling.
    let in_time = timeout * 4 / 5..timeout * 4;
    let started = Instant::now();
    // Headers begun and never finished.
    let trickle = exchange(
        server.addr,
        b"POST /echo.v1.EchoService/Echo HTTP/1.1\r\nhost: te",
        EVENT_TIMEOUT,
    )
    .await;
    let cut_after = started.elapsed();
    println!("a trickling client was cut after {cut_after:?}");
    assert!(trickle.closed, "a trickling client was not cut");
    assert!(in_time.contains(&cut_after), "{cut_after:?}");
    // A kept-alive connection waiting for its next request is cut the same way.
    let idle = format!(
        "GET {ECHO}?connect=v1&encoding=json&message=%7B%7D HTTP/1.1\r\nhost: test\r\n\r\n"
    );
    let started = Instant::now();
    let answer = exchange(server.addr, idle.as_bytes(), EVENT_TIMEOUT).await;
    let cut_after = started.elapsed();
    println!("an idle kept-alive connection was cut after {cut_after:?}");
    assert_eq!(answer.status(), 200, "{}", answer.text);
    assert!(answer.closed, "an idle HTTP/1.1 connection was not cut");
    assert!(in_time.contains(&cut_after), "{cut_after:?}");
    assert_still_serving(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn cors_answers_preflights_and_exposes_grpc_headers_for_listed_origins() {
    let server = TestServer::with_config(config(|c| {
        c.browsers.cors_allow_origin = vec!["http://page.test".to_owned()];
    }))
    .await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS {ECHO} HTTP/1.1\r\nhost: test\r\norigin: {origin}\r\naccess-control-request-method: POST\r\naccess-control-request-headers: content-type,x-user\r\nconnection: close\r\n\r\n"
        )
    };
    let allowed = exchange(server.addr, preflight("http://page.test").as_bytes(), QUIET).await;
    assert_eq!(allowed.status(), 200, "{}", allowed.text);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://page.test")
    );
    assert!(
        allowed
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("x-user")),
        "{}",
        allowed.text
    );

    let other = exchange(server.addr, preflight("http://evil.test").as_bytes(), QUIET).await;
    assert_eq!(
        other.header("access-control-allow-origin"),
        None,
        "{}",
        other.text
    );

    let call = exchange(
        server.addr,
        &post(
            ECHO,
            "application/json",
            "origin: http://page.test\r\n",
            br#"{"message":"from a page"}"#,
        ),
        QUIET,
    )
    .await;
    assert_eq!(call.status(), 200, "{}", call.text);
    assert_eq!(
        call.header("access-control-allow-origin"),
        Some("http://page.test")
    );
    assert_eq!(call.header("access-control-expose-headers"), Some("*"));
    server.stop().await;

    // `*`: any origin, preflights and calls alike.
    let server = TestServer::with_config(config(|c| {
        c.browsers.cors_allow_origin = vec!["*".to_owned()];
    }))
    .await;
    for origin in ["http://page.test", "http://anywhere.example"] {
        let allowed = exchange(server.addr, preflight(origin).as_bytes(), QUIET).await;
        assert_eq!(allowed.status(), 200, "{}", allowed.text);
        assert_eq!(
            allowed.header("access-control-allow-origin"),
            Some("*"),
            "{}",
            allowed.text
        );
    }
    let call = exchange(
        server.addr,
        &post(
            ECHO,
            "application/json",
            "origin: http://anywhere.example\r\n",
            br#"{"message":"from any page"}"#,
        ),
        QUIET,
    )
    .await;
    assert_eq!(call.status(), 200, "{}", call.text);
    assert_eq!(call.header("access-control-allow-origin"), Some("*"));
    server.stop().await;

    // Off unless origins are listed.
    let server = TestServer::start().await;
    let closed = exchange(server.addr, preflight("http://page.test").as_bytes(), QUIET).await;
    assert_eq!(
        closed.header("access-control-allow-origin"),
        None,
        "{}",
        closed.text
    );
    server.stop().await;
}

/// The client library (and so the CLI and `bench`) in gRPC-Web and Connect,
/// over HTTP/2 and HTTP/1.1: every RPC shape, metadata, errors with details,
/// deadlines and compression, against the same server.
#[tokio::test]
async fn the_client_library_speaks_grpc_web_and_connect_over_both_http_versions() {
    use echo_client::proto::{ErrorControl, MetadataEcho, StatusCode};
    use echo_client::{EchoClient, Protocol};
    use tonic::Code;
    use tonic_types::StatusExt as _;

    let server = TestServer::start().await;
    for (protocol, http1) in [
        (Protocol::GrpcWeb, false),
        (Protocol::GrpcWeb, true),
        (Protocol::Connect, false),
        (Protocol::Connect, true),
    ] {
        let case = format!("{protocol:?}, http1: {http1}");
        // What goes over the wire is seen through a proxy.
        let proxy = echo_tests::CountingProxy::start(server.addr).await;
        let client = EchoClient::builder(proxy.addr.to_string())
            .protocol(protocol)
            .http1(http1)
            .compression(tonic::codec::CompressionEncoding::Gzip)
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();

        let mut request = tonic::Request::new(EchoRequest {
            message: "hello".into(),
            payload: vec![7; 100_000].into(),
            echo_metadata: MetadataEcho::Both as i32,
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("x-case", "protocols".parse().unwrap());
        let response = client
            .echo(request)
            .await
            .unwrap_or_else(|status| panic!("{case}: {status}"));
        assert_eq!(response.get_ref().message, "hello", "{case}");
        assert_eq!(response.get_ref().payload.len(), 100_000, "{case}");
        assert_eq!(
            response.metadata().get("x-case").unwrap(),
            "protocols",
            "{case}"
        );
        let opening = proxy.first_opening();
        if http1 {
            let wire = String::from_utf8_lossy(&opening).to_ascii_lowercase();
            let content_type = match protocol {
                Protocol::GrpcWeb => "\r\ncontent-type: application/grpc-web\r\n",
                _ => "\r\ncontent-type: application/proto\r\n",
            };
            assert!(
                wire.starts_with("post /echo.v1.echoservice/echo http/1.1\r\n")
                    && wire.contains(content_type),
                "{case}: {wire}"
            );
        } else {
            assert!(opening.starts_with(echo_tests::h2raw::PREFACE), "{case}");
        }

        let mut stream = client
            .server_stream(ticking(5, 1))
            .await
            .unwrap()
            .into_inner();
        let mut sequences = Vec::new();
        while let Some(message) = stream
            .message()
            .await
            .unwrap_or_else(|status| panic!("{case}: {status}"))
        {
            sequences.push(message.sequence);
        }
        assert_eq!(sequences, [0, 1, 2, 3, 4], "{case}");

        let requests = ["a", "b", "c"].map(|message| EchoRequest {
            message: message.into(),
            ..Default::default()
        });
        let summary = client
            .client_stream(tokio_stream::iter(requests.clone()))
            .await
            .unwrap();
        assert_eq!(summary.get_ref().messages, ["a", "b", "c"], "{case}");

        let mut echoed = client
            .bidi_stream(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        let mut messages = Vec::new();
        while let Some(message) = echoed.message().await.unwrap() {
            messages.push(message.message);
        }
        assert_eq!(messages, ["a", "b", "c"], "{case}");

        let failed = client
            .echo(EchoRequest {
                error: Some(ErrorControl {
                    code: StatusCode::NotFound as i32,
                    message: "no such thing".into(),
                    details: [("key".to_owned(), "value".to_owned())].into(),
                    retry_delay: None,
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(failed.code(), Code::NotFound, "{case}");
        assert_eq!(failed.message(), "no such thing", "{case}");
        let info = failed
            .get_details_error_info()
            .unwrap_or_else(|| panic!("{case}: no ErrorInfo"));
        assert_eq!(
            info.metadata.get("key").map(String::as_str),
            Some("value"),
            "{case}"
        );

        let mut slow = tonic::Request::new(EchoRequest {
            delay: Some(echo_tests::ms(2_000)),
            ..Default::default()
        });
        slow.set_timeout(Duration::from_millis(100));
        let started = Instant::now();
        let late = client.echo(slow).await.unwrap_err();
        assert_eq!(late.code(), Code::DeadlineExceeded, "{case}: {late}");
        assert!(started.elapsed() < Duration::from_millis(1500), "{case}");
    }

    // gRPC itself needs HTTP/2: refused when building, with the reason.
    let refused = EchoClient::builder(server.uri())
        .http1(true)
        .connect()
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("gRPC needs HTTP/2"),
        "{refused}"
    );
    server.stop().await;
}

/// What the Connect conformance suite found, kept: a unary or
/// server-streaming call with no request message or several is
/// UNIMPLEMENTED (a cardinality violation), over gRPC and gRPC-Web; gRPC
/// with another method than POST is 405 and with a codec the server lacks
/// 415; a Connect call to a path nothing serves is 404; a Connect unary
/// content type with DELETE is 405.
#[tokio::test]
async fn cardinality_violations_wrong_methods_and_unknown_paths_are_refused() {
    let server = TestServer::start().await;
    let socket = TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    let call = async |method: &str, content_type: &str, path: &str, body: Vec<u8>| {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", server.uri()))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut client = client.clone().ready().await.unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        send.send_data(body.into(), true).unwrap();
        let response = response.await.unwrap();
        let status = response.status().as_u16();
        let mut headers = response.headers().clone();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        if let Some(trailers) = body.trailers().await.unwrap() {
            headers.extend(trailers);
        }
        // gRPC-Web sends its trailers in the body: `grpc-status:N\r\n`.
        let in_body = String::from_utf8_lossy(&bytes)
            .split("grpc-status:")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .map(str::to_owned);
        let grpc_status = headers
            .get("grpc-status")
            .map(|value| value.to_str().unwrap().to_owned())
            .or(in_body);
        (status, grpc_status)
    };
    let one = echo_tests::grpc_message(b"").to_vec();
    let two = [one.clone(), one.clone()].concat();
    for (path, body, expected) in [
        (ECHO, Vec::new(), "12"),
        (ECHO, two.clone(), "12"),
        ("/echo.v1.EchoService/ServerStream", Vec::new(), "12"),
        ("/echo.v1.EchoService/ServerStream", two.clone(), "12"),
        (ECHO, one.clone(), "0"),
        // Client streams take any number.
        ("/echo.v1.EchoService/ClientStream", two.clone(), "0"),
    ] {
        for content_type in ["application/grpc", "application/grpc-web+proto"] {
            let (status, grpc_status) = call("POST", content_type, path, body.clone()).await;
            assert_eq!(status, 200, "{content_type} {path}");
            assert_eq!(
                grpc_status.as_deref(),
                Some(expected),
                "{content_type} {path} with {} bytes",
                body.len()
            );
        }
    }
    assert_eq!(
        call("DELETE", "application/grpc", ECHO, one.clone())
            .await
            .0,
        405
    );
    assert_eq!(
        call("POST", "application/grpc+foo", ECHO, one.clone())
            .await
            .0,
        415
    );
    assert_eq!(
        call("DELETE", "application/proto", ECHO, Vec::new())
            .await
            .0,
        405
    );
    assert_eq!(
        call(
            "POST",
            "application/proto",
            "/acme.v1.Nothing/Here",
            Vec::new()
        )
        .await
        .0,
        404
    );
    server.stop().await;
}

/// A call answered before its HTTP/1.1 body was read (here: over the size
/// limit) still reads the body, so the client writing it gets the answer
/// and the connection serves the next request.
#[tokio::test]
async fn an_http1_body_answered_early_is_read_and_the_connection_kept() {
    let server = TestServer::with_config(config(|c| c.limits.max_message_size = 1024)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let oversized = echo_tests::grpc_message(&[b'x'; 200_000]);
    let head = format!(
        "POST /echo.v1.EchoService/ClientStream HTTP/1.1\r\nhost: test\r\ncontent-type: application/connect+proto\r\ncontent-length: {}\r\n\r\n",
        oversized.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The whole body goes out even though the answer comes first: a server
    // that stopped reading would leave this write stuck or broken.
    tokio::time::timeout(EVENT_TIMEOUT, stream.write_all(&oversized))
        .await
        .expect("the server stopped reading the body")
        .unwrap();
    stream.write_all(&get("/")).await.unwrap();
    let mut read = Vec::new();
    let mut buf = [0; 16384];
    while let Ok(Ok(n)) = tokio::time::timeout(QUIET, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        read.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&read);
    assert!(text.contains("resource_exhausted"), "{text}");
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        2,
        "the next request on the connection was not answered: {text}"
    );
    server.stop().await;
}

/// The `--web` console's helpers (the page's tests drive them from Chromium):
/// each bad input is a plain-text 4xx naming its cause, and without `--web`
/// none of them is served.
#[tokio::test]
async fn the_console_helpers_answer_bad_input_plainly_and_only_with_web() {
    let server = TestServer::with_config(config(|c| {
        c.browsers.web = true;
        c.limits.max_message_size = 1024;
    }))
    .await;
    let addr = server.addr;
    let ask = |request: Vec<u8>| async move { exchange(addr, &request, QUIET).await };
    let encode =
        |query: &str, body: &[u8]| post(&format!("/console/encode{query}"), "text/plain", "", body);

    let methods = ask(get("/console/methods")).await;
    assert_eq!(methods.status(), 200, "{}", methods.text);
    let listed = methods.json();
    assert!(
        listed["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|service| service["name"] == "grpc.testing.TestService"),
        "{listed}"
    );

    let encoded = ask(encode("?type=echo.v1.EchoRequest", br#"{"message":"hi"}"#)).await;
    assert_eq!(encoded.status(), 200, "{}", encoded.text);
    assert_eq!(
        encoded.header("content-type"),
        Some("application/octet-stream")
    );
    let decoded = ask(post(
        "/console/decode?type=echo.v1.EchoRequest",
        "application/octet-stream",
        "",
        b"\x0a\x02hi",
    ))
    .await;
    assert_eq!(decoded.json(), serde_json::json!({"message": "hi"}));

    let cases: [(Vec<u8>, u16, &str); 5] = [
        (
            encode("", b"{}"),
            400,
            "the query names no message type: give ?type=package.Message",
        ),
        (
            encode("?type=no.Such", b"{}"),
            404,
            "no message type no.Such among the server's descriptors",
        ),
        (
            encode("?type=echo.v1.EchoRequest", br#"{"mesage":"hi"}"#),
            400,
            "echo.v1.EchoRequest in JSON: unrecognized field name 'mesage'",
        ),
        (
            encode("?type=echo.v1.EchoRequest", &[b' '; 2048]),
            413,
            "the message is larger than the server's 1024-byte limit",
        ),
        (
            post(
                "/console/decode?type=echo.v1.EchoRequest",
                "application/octet-stream",
                "",
                b"\x0a\x09hi",
            ),
            400,
            "cannot decode echo.v1.EchoRequest to JSON",
        ),
    ];
    for (request, status, cause) in cases {
        let answer = ask(request).await;
        assert_eq!(answer.status(), status, "{}", answer.text);
        assert!(answer.body().starts_with(cause), "{}", answer.text);
    }
    assert_still_serving(server.addr).await;
    server.stop().await;

    let without_web = TestServer::start().await;
    let answer = exchange(without_web.addr, &get("/console/methods"), QUIET).await;
    assert_eq!(answer.status(), 404, "{}", answer.text);
    without_web.stop().await;
}
