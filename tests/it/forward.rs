//! Forward on real server processes: a chain of three (A -> B -> C) with the
//! request id, trace context, hop chain and deadline carried along; a
//! downstream that is down, one that never answers (the call ends at the
//! deadline, not later), a loop stopped by the hop limit, targets refused,
//! and a cancelled Forward cancelling its downstream call at once.

use std::time::{Duration, Instant};

use echo_client::EchoClient;
use echo_client::proto::{EchoRequest, ForwardRequest, ForwardResponse, StatusCode};
use echo_tests::eventually;
use echo_tests::process::ServerProcess;
use tonic::Code;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn server(listen: &str, instance: &str) -> ServerProcess {
    ServerProcess::spawn(ServerProcess::command(
        listen,
        instance,
        &[
            "--forward-allow",
            "127.0.0.0/8",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        "info",
    ))
    .with_metrics()
}

async fn client(server: &ServerProcess) -> EchoClient {
    EchoClient::builder(server.addr.to_string())
        .connect()
        .await
        .unwrap()
}

fn to(target: &ServerProcess) -> ForwardRequest {
    ForwardRequest {
        target: target.addr.to_string(),
        ..Default::default()
    }
}

fn with_metadata(request: ForwardRequest, timeout: Duration) -> tonic::Request<ForwardRequest> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(timeout);
    let metadata = request.metadata_mut();
    metadata.insert("x-request-id", "req-42".parse().unwrap());
    metadata.insert("traceparent", TRACEPARENT.parse().unwrap());
    metadata.insert("baggage", "team=a".parse().unwrap());
    request
}

fn code(code: i32) -> StatusCode {
    StatusCode::try_from(code).unwrap()
}

#[tokio::test]
async fn a_chain_of_three_carries_ids_trace_context_hops_and_the_deadline() {
    let [a, b, c] = [
        ("127.0.0.1:0", "a"),
        ("127.0.0.2:0", "b"),
        ("127.0.0.3:0", "c"),
    ]
    .map(|(listen, instance)| server(listen, instance));
    let request = ForwardRequest {
        count: Some(3),
        rate: Some(20.0),
        forward: Some(Box::new(ForwardRequest {
            request: Some(EchoRequest {
                message: "from a".into(),
                reflect_wire: true,
                ..Default::default()
            }),
            ..to(&c)
        })),
        ..to(&b)
    };
    let started = Instant::now();
    let response: ForwardResponse = client(&a)
        .await
        .forward(with_metadata(request, Duration::from_secs(5)))
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    println!("a -> b -> c, three calls at 20/s: {response:#?} in {took:?}");
    assert_eq!(response.instance, "a");
    assert_eq!(response.results.len(), 3);
    // Three calls at 20 per second: the last starts 100 ms after the first.
    assert!(took >= Duration::from_millis(100), "{took:?}");
    for result in &response.results {
        assert_eq!(code(result.code), StatusCode::Ok, "{result:?}");
        assert_eq!(result.instance, "b");
        assert_eq!(result.hops, ["a", "b"]);
        let nested = result.forwarded.as_ref().unwrap();
        assert_eq!(nested.instance, "b");
        let last = &nested.results[0];
        assert_eq!(
            (code(last.code), last.hops.clone()),
            (StatusCode::Ok, vec!["a".into(), "b".into(), "c".into()])
        );
        let echo = last.echo.as_ref().unwrap();
        assert_eq!(
            (echo.message.as_str(), echo.instance.as_str()),
            ("from a", "c")
        );
        // What reached c: the caller's ids and trace context, the hop chain,
        // and a deadline shorter than the 5 s a was given.
        let wire = echo.wire.as_ref().unwrap();
        let header = |name: &str| {
            wire.headers
                .iter()
                .find(|header| header.name == name)
                .map(|header| header.value.clone())
                .unwrap_or_else(|| panic!("c got no {name}: {wire:?}"))
        };
        assert_eq!(header("x-request-id"), "req-42");
        assert_eq!(header("traceparent"), TRACEPARENT);
        assert_eq!(header("baggage"), "team=a");
        assert_eq!(header("x-echo-hops"), "a,b");
        let timeout = echo_wire::grpc_timeout::parse(
            &http::HeaderValue::from_str(&header("grpc-timeout")).unwrap(),
        )
        .unwrap();
        assert!(
            timeout < Duration::from_secs(5) && timeout > Duration::from_secs(3),
            "c's deadline: {timeout:?}"
        );
    }
    // The client side of each hop, in the grpc-ecosystem dialect.
    for (server, method) in [(&a, "Forward"), (&b, "Echo")] {
        let labels = [
            ("grpc_type", "unary"),
            ("grpc_method", method),
            ("grpc_code", "OK"),
        ];
        assert_eq!(
            server.metric("grpc_client_handled_total", &labels),
            Some(3.0)
        );
        let labels = &labels[..2];
        assert_eq!(
            server.metric("grpc_client_started_total", labels),
            Some(3.0)
        );
        assert_eq!(
            server.metric("grpc_client_msg_received_total", labels),
            Some(3.0)
        );
        assert_eq!(
            server.metric("grpc_client_handling_seconds_count", labels),
            Some(3.0)
        );
    }
}

#[tokio::test]
async fn downstreams_down_black_holed_or_looping_end_as_they_should() {
    let a = server("127.0.0.1:0", "a");
    let client = client(&a).await;

    // Down: a closed port fails each call at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = closed.local_addr().unwrap().to_string();
    drop(closed);
    let started = Instant::now();
    let response = client
        .forward(ForwardRequest {
            target: down,
            count: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    println!(
        "two calls to a closed port failed in {:?}",
        started.elapsed()
    );
    assert_eq!(response.results.len(), 2, "{response:?}");
    for result in &response.results {
        assert_eq!(code(result.code), StatusCode::Unavailable, "{result:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Black-holed: it accepts connections and never answers. Each call ends
    // at its own timeout...
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let response = client
        .forward(ForwardRequest {
            target: hole_addr.clone(),
            count: Some(2),
            timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 300_000_000,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    println!("two calls into a black hole, 300 ms each: {took:?}");
    for result in &response.results {
        assert_eq!(
            code(result.code),
            StatusCode::DeadlineExceeded,
            "{result:?}"
        );
    }
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let timed_out = [("grpc_method", "Echo"), ("grpc_code", "DeadlineExceeded")];
    assert_eq!(a.metric("grpc_client_handled_total", &timed_out), Some(2.0));
    // ...and without one, the Forward ends at the caller's deadline, not later.
    let started = Instant::now();
    let mut request = tonic::Request::new(ForwardRequest {
        target: hole_addr,
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(800));
    let status = client.forward(request).await.unwrap_err();
    let took = started.elapsed();
    println!("a Forward into a black hole under an 800 ms deadline: {status:?} after {took:?}");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(took < Duration::from_millis(1300), "{took:?}");

    // A loop: a forwarding to itself, nested deeper than the hop limit (8).
    let mut nested = ForwardRequest {
        request: Some(EchoRequest::default()),
        ..to(&a)
    };
    for _ in 0..9 {
        nested = ForwardRequest {
            forward: Some(Box::new(nested)),
            ..to(&a)
        };
    }
    let mut level = client.forward(nested).await.unwrap().into_inner();
    let mut depth = 1;
    loop {
        let result = &level.results[0];
        if code(result.code) != StatusCode::Ok {
            assert_eq!(
                code(result.code),
                StatusCode::FailedPrecondition,
                "{result:?}"
            );
            assert!(result.message.contains("hop limit of 8"), "{result:?}");
            break;
        }
        level = result.forwarded.clone().unwrap();
        depth += 1;
    }
    println!("a loop of a -> a -> ... stopped at depth {depth}");
    assert_eq!(depth, 8);

    // Refused: a target not allowed, and forwarding off altogether.
    let status = client
        .forward(ForwardRequest {
            target: "169.254.169.254:80".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let off = ServerProcess::start(&[]);
    let status = self::client(&off).await.forward(to(&a)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("forwarding is off"), "{status:?}");
}

/// A Forward whose caller goes away drops its downstream call at once. The
/// call carries no deadline, so nothing but the cancellation can end B's
/// call before its 10 s delay.
#[tokio::test]
async fn a_cancelled_forward_cancels_its_downstream_call_at_once() {
    let [a, b] = [("127.0.0.1:0", "a"), ("127.0.0.2:0", "b")].map(|(l, i)| server(l, i));
    let slow = ForwardRequest {
        request: Some(EchoRequest {
            delay: Some(echo_tests::ms(10_000)),
            ..Default::default()
        }),
        ..to(&b)
    };
    let client = client(&a).await;
    let call = tokio::spawn(async move { client.forward(slow).await });
    eventually("b's downstream call to start", || async {
        b.metric("grpc_server_in_flight_calls", &[]) == Some(1.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.abort();
    let dropped = Instant::now();
    eventually("b to count its call as canceled", || async {
        b.metric(
            "grpc_server_handled_total",
            &[("grpc_method", "Echo"), ("grpc_code", "Canceled")],
        ) == Some(1.0)
    })
    .await;
    println!(
        "b's call ended as Canceled {:?} after a's caller left",
        dropped.elapsed()
    );
    assert!(
        dropped.elapsed() < Duration::from_secs(1),
        "{:?}",
        dropped.elapsed()
    );
    assert_eq!(b.metric("grpc_server_in_flight_calls", &[]), Some(0.0));
}

#[tokio::test]
async fn a_forward_calls_over_mutual_tls_and_to_an_interop_server() {
    use echo_client::proto::ForwardMethod;
    use echo_tests::pki::{self, Ca};

    let ca = Ca::new("forward-ca");
    let dir = pki::temp_dir("forward-tls");
    let server_leaf = ca.server();
    let a_leaf = ca.client("forwarder-a");
    let ca_file = pki::write(&dir, "ca.pem", ca.pem());
    let server_cert = pki::write(&dir, "b.pem", &server_leaf.cert);
    let server_key = pki::write(&dir, "b.key", &server_leaf.key);
    let a_cert = pki::write(&dir, "a.pem", &a_leaf.cert);
    let a_key = pki::write(&dir, "a.key", &a_leaf.key);
    let path = |p: &std::path::PathBuf| p.display().to_string();
    // B asks every client for a certificate from the CA.
    let b = ServerProcess::spawn(ServerProcess::command(
        "127.0.0.1:0",
        "b",
        &[
            "--tls-cert",
            &path(&server_cert),
            "--tls-key",
            &path(&server_key),
            "--tls-client-ca",
            &path(&ca_file),
        ],
        "info",
    ));
    let a = ServerProcess::spawn(ServerProcess::command(
        "127.0.0.1:0",
        "a",
        &[
            "--forward-allow",
            "127.0.0.0/8",
            "--forward-ca-file",
            &path(&ca_file),
            "--forward-cert-file",
            &path(&a_cert),
            "--forward-key-file",
            &path(&a_key),
        ],
        "info",
    ));
    let client = client(&a).await;
    for (server_name, method) in [
        ("", ForwardMethod::Echo),
        ("localhost", ForwardMethod::InteropUnaryCall),
    ] {
        let response = client
            .forward(ForwardRequest {
                tls: true,
                server_name: server_name.into(),
                method: method as i32,
                ..to(&b)
            })
            .await
            .unwrap()
            .into_inner();
        let result = &response.results[0];
        println!("over mutual TLS, {method:?}: {result:?}");
        assert_eq!(code(result.code), StatusCode::Ok, "{result:?}");
        assert_eq!(result.instance, "b");
        if method == ForwardMethod::Echo {
            // B verified A's client certificate.
            let echo = result.echo.as_ref().unwrap();
            assert!(echo.peer_identity.contains("forwarder-a"), "{echo:?}");
        }
    }
    // Plaintext to a TLS server fails the call, not the server.
    let response = client.forward(to(&b)).await.unwrap().into_inner();
    assert_ne!(code(response.results[0].code), StatusCode::Ok);
    // A server with no CA for downstreams refuses TLS.
    let plain = server("127.0.0.2:0", "plain");
    let status = self::client(&plain)
        .await
        .forward(ForwardRequest {
            tls: true,
            ..to(&b)
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
}

/// One Forward makes at most `--forward-max-count` calls: that many are
/// made, one more is refused before any is.
#[tokio::test]
async fn a_forward_makes_at_most_the_maximum_count_of_calls() {
    let b = server("127.0.0.1:0", "b");
    let a = ServerProcess::spawn(ServerProcess::command(
        "127.0.0.1:0",
        "a",
        &["--forward-allow", "127.0.0.0/8", "--forward-max-count", "3"],
        "info",
    ));
    let client = client(&a).await;
    let at_most = ForwardRequest {
        count: Some(3),
        ..to(&b)
    };
    let response = client.forward(at_most).await.unwrap().into_inner();
    assert_eq!(response.results.len(), 3, "{response:?}");
    let over = ForwardRequest {
        count: Some(4),
        ..to(&b)
    };
    let status = client.forward(over).await.unwrap_err();
    println!("count 4 of at most 3: {status:?}");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("count 4 exceeds the server maximum of 3"),
        "{status:?}"
    );
    assert_eq!(
        b.metric(
            "grpc_server_handled_total",
            &[("grpc_method", "Echo"), ("grpc_code", "OK")]
        ),
        Some(3.0),
        "the refused Forward made no call"
    );
}
