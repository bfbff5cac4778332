//! Faults by header and by chance: `x-echo-behavior` and the xDS test
//! servers' `rpc-behavior` on every service and protocol, the server's
//! `--fault` default, seeded draws, and a retry policy riding over a flaky
//! instance.

use std::time::{Duration, Instant};

use echo_client::proto::EchoRequest;
use echo_client::{EchoClient, Protocol, RetryPolicy};
use echo_tests::{INSTANCE, TestServer, config};
use grpc_echo::echo::v1::admin_service_client::AdminServiceClient;
use grpc_echo::echo::v1::{HealthStatus, SetHealthRequest};
use grpc_echo::grpc::examples::echo::EchoRequest as ExampleRequest;
use grpc_echo::grpc::examples::echo::echo_client::EchoClient as ExampleClient;
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use grpc_echo::grpc::testing::{EchoStatus, Empty, SimpleRequest};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

fn with_headers<M>(message: M, headers: &[(&'static str, &str)]) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    for (key, value) in headers {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request
}

async fn echo(client: &EchoClient, headers: &[(&'static str, &str)]) -> Result<(), tonic::Status> {
    client
        .echo(with_headers(EchoRequest::default(), headers))
        .await
        .map(drop)
}

#[tokio::test]
async fn x_echo_behavior_applies_to_every_service_and_protocol() {
    let server = TestServer::start().await;
    let gone = [("x-echo-behavior", "error=NOT_FOUND; message=gone")];

    let status = echo(&server.client().await, &gone).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "gone"));
    assert_eq!(status.metadata().get("hostname").unwrap(), INSTANCE);

    let channel = server.channel().await;
    let status = TestServiceClient::new(channel.clone())
        .unary_call(with_headers(
            SimpleRequest::default(),
            &[("x-echo-behavior", "error=UNAVAILABLE")],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    let started = Instant::now();
    ExampleClient::new(channel)
        .unary_echo(with_headers(
            ExampleRequest {
                message: "x".into(),
            },
            &[("x-echo-behavior", "delay=300ms")],
        ))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));

    for protocol in [Protocol::Connect, Protocol::GrpcWeb] {
        let client = EchoClient::builder(server.uri())
            .protocol(protocol)
            .connect()
            .await
            .unwrap();
        let status = echo(&client, &gone).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{protocol:?}");
    }

    let status = echo(
        &server.client().await,
        &[("x-echo-behavior", "error=SOMETIMES")],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("x-echo-behavior: "),
        "{status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn rpc_behavior_is_read_as_the_xds_test_servers_read_it() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let code = |result: Result<(), tonic::Status>| result.err().map(|status| status.code());

    assert_eq!(
        code(echo(&client, &[("rpc-behavior", "error-code-14")]).await),
        Some(Code::Unavailable)
    );
    // On another instance's name, nothing; on this one's, the error.
    let elsewhere = [("rpc-behavior", "hostname=other-pod error-code-14")];
    assert_eq!(code(echo(&client, &elsewhere).await), None);
    let here = format!("hostname={INSTANCE} error-code-7");
    assert_eq!(
        code(echo(&client, &[("rpc-behavior", &here)]).await),
        Some(Code::PermissionDenied)
    );
    // The attempt named succeeds: the client's retry says which it is.
    let retry = [("rpc-behavior", "error-code-14,succeed-on-retry-attempt-1")];
    assert_eq!(code(echo(&client, &retry).await), Some(Code::Unavailable));
    let retrying = retrying_client(&server, 3).await;
    assert_eq!(code(echo(&retrying, &retry).await), None);
    assert_eq!(retrying.call_stats().retries(), 1);

    // Sleep and keep-open end at the caller's deadline, not later.
    for behavior in ["sleep-5", "keep-open"] {
        let started = Instant::now();
        let mut request = with_headers(EchoRequest::default(), &[("rpc-behavior", behavior)]);
        request.set_timeout(Duration::from_millis(200));
        let status = client.echo(request).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{behavior}");
        assert!(started.elapsed() < Duration::from_secs(3), "{behavior}");
    }
    assert_eq!(
        code(echo(&client, &[("rpc-behavior", "explode")]).await),
        Some(Code::InvalidArgument)
    );
    server.stop().await;
}

/// Faults act on the services under test, never on health, reflection or
/// the admin service: a deliberately flaky instance still looks healthy to
/// its probes and load balancers, and tools can still read its descriptors.
#[tokio::test]
async fn faults_leave_health_reflection_and_admin_alone() {
    let server = TestServer::with_config(config(|config| {
        config.faults.fault = Some("error=UNAVAILABLE".parse().unwrap());
        config.services.admin = true;
    }))
    .await;
    let channel = server.channel().await;
    let status = echo(&server.client().await, &[]).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "--fault applies to echo.v1"
    );
    let healthy = |service: &str| {
        let mut health = HealthClient::new(channel.clone());
        let request = with_headers(
            HealthCheckRequest {
                service: service.to_owned(),
            },
            &[
                ("x-echo-behavior", "error=UNAVAILABLE"),
                ("rpc-behavior", "error-code-14"),
            ],
        );
        async move { health.check(request).await }
    };
    for service in ["", "echo.v1.EchoService"] {
        let answer = healthy(service)
            .await
            .expect("health answers as health says");
        assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
    }
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let list = ServerReflectionRequest {
        message_request: Some(MessageRequest::ListServices(String::new())),
        ..Default::default()
    };
    let mut answers = reflection
        .server_reflection_info(with_headers(
            tokio_stream::iter([list]),
            &[("x-echo-behavior", "error=UNAVAILABLE")],
        ))
        .await
        .expect("reflection answers")
        .into_inner();
    assert!(answers.message().await.unwrap().is_some());
    let mut admin = AdminServiceClient::new(channel);
    admin
        .set_health(with_headers(
            SetHealthRequest {
                service: String::new(),
                status: HealthStatus::Serving as i32,
            },
            &[("x-echo-behavior", "error=UNAVAILABLE")],
        ))
        .await
        .expect("the admin service answers");
    server.stop().await;
}

/// Clients written for gRPC's xDS interop tests count which backend
/// answered by the `hostname` header, which that test server sends on every
/// UnaryCall and EmptyCall, behaviour header or not.
#[tokio::test]
async fn every_interop_unary_answer_names_its_instance() {
    let server = TestServer::start().await;
    let mut client = TestServiceClient::new(server.channel().await);
    let unary = client.unary_call(SimpleRequest::default()).await.unwrap();
    assert_eq!(unary.metadata().get("hostname").unwrap(), INSTANCE);
    let empty = client.empty_call(Empty {}).await.unwrap();
    assert_eq!(empty.metadata().get("hostname").unwrap(), INSTANCE);
    let failed = client
        .unary_call(SimpleRequest {
            response_status: Some(EchoStatus {
                code: 9,
                message: "no".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(failed.metadata().get("hostname").unwrap(), INSTANCE);
    server.stop().await;
}

/// A client of `server` that makes up to `attempts` attempts of a call
/// failing as UNAVAILABLE.
async fn retrying_client(server: &TestServer, attempts: u32) -> EchoClient {
    EchoClient::builder(server.uri())
        .retry(RetryPolicy {
            max_attempts: attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
            budget_tokens: 100,
        })
        .connect()
        .await
        .unwrap()
}

/// Outcomes of `calls` calls in a row: whether each failed as UNAVAILABLE.
async fn flaky_outcomes(seed: u64, calls: usize) -> Vec<bool> {
    let server = TestServer::with_config(config(|config| {
        config.faults.fault = Some("error=UNAVAILABLE:30%".parse().unwrap());
        config.faults.fault_seed = Some(seed);
    }))
    .await;
    let client = server.client().await;
    let mut outcomes = Vec::with_capacity(calls);
    for _ in 0..calls {
        match echo(&client, &[]).await {
            Ok(()) => outcomes.push(false),
            Err(status) if status.code() == Code::Unavailable => outcomes.push(true),
            Err(status) => panic!("{status:?}"),
        }
    }
    // A call's own header replaces the default.
    echo(&client, &[("x-echo-behavior", "delay=0s")])
        .await
        .unwrap();
    server.stop().await;
    outcomes
}

#[tokio::test]
async fn a_flaky_instance_fails_by_chance_as_seeded() {
    const CALLS: usize = 2000;
    let first = flaky_outcomes(42, CALLS).await;
    let failed = first.iter().filter(|&&failed| failed).count();
    // 30% of 2,000 is 600, one standard deviation about 20: this bound is
    // six of them either side, which a correct server does not miss.
    println!("{failed} of {CALLS} calls failed");
    assert!((480..=720).contains(&failed), "{failed} of {CALLS} failed");
    // The same seed and order of requests: the same outcomes.
    assert_eq!(flaky_outcomes(42, CALLS).await, first);
    assert_ne!(flaky_outcomes(43, CALLS).await, first);
}

#[tokio::test]
async fn a_retry_policy_brings_a_flaky_instance_to_full_success() {
    let server = TestServer::with_config(config(|config| {
        config.faults.fault = Some("error=UNAVAILABLE:30%".parse().unwrap());
        config.faults.fault_seed = Some(7);
    }))
    .await;
    let client = EchoClient::builder(server.uri())
        // Ten attempts: all ten fail once in 170,000 calls at 30%.
        .retry(RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            budget_tokens: 1000,
        })
        .connect()
        .await
        .unwrap();
    for call in 0..500 {
        echo(&client, &[])
            .await
            .unwrap_or_else(|status| panic!("call {call}: {status:?}"));
    }
    let retries = client.call_stats().retries();
    println!("500 calls succeeded after {retries} retries");
    // About 0.3 / 0.7 retries per call.
    assert!(
        (120..=320).contains(&retries),
        "{retries} retries for 500 calls"
    );
    server.stop().await;
}

#[tokio::test]
async fn faults_by_attempt_and_by_instance() {
    let server = TestServer::start().await;
    let client = server.client().await;

    // The first two attempts fail; a retry policy's third succeeds, and the
    // answer says two came before it.
    let retrying = retrying_client(&server, 3).await;
    let response = retrying
        .echo(with_headers(
            EchoRequest::default(),
            &[("x-echo-behavior", "fail-attempts=2")],
        ))
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-echo-attempt").unwrap(), "2");
    assert_eq!(retrying.call_stats().retries(), 2);

    // A client that retries without grpc-previous-rpc-attempts: counted by
    // its request id.
    let attempt = [
        ("x-echo-behavior", "fail-attempts=1; error=ABORTED"),
        ("x-request-id", "call-7f3a"),
    ];
    let status = echo(&client, &attempt).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.metadata().get("x-echo-attempt").unwrap(), "0");
    echo(&client, &attempt).await.unwrap();

    // On some instances only.
    let cases = [
        ("error=NOT_FOUND; on=other-pod", None),
        ("error=NOT_FOUND; not-on=other-pod", Some(Code::NotFound)),
        (
            "error=NOT_FOUND; on=other-pod,test-instance",
            Some(Code::NotFound),
        ),
        ("error=NOT_FOUND; not-on=test-instance", None),
    ];
    for (behavior, expected) in cases {
        let result = echo(&client, &[("x-echo-behavior", behavior)]).await;
        assert_eq!(result.err().map(|s| s.code()), expected, "{behavior}");
    }
    server.stop().await;
}

/// `connection=` in the header, on the wire: GOAWAY after a whole answer,
/// RST_STREAM with the code asked for in place of the trailers, and a close
/// that leaves the call unanswered; on an interop method, which has no
/// connection control of its own.
#[tokio::test]
async fn connection_actions_by_header_on_the_wire() {
    use echo_tests::h2raw::{self, DATA, END_STREAM, GOAWAY, HEADERS, RST_STREAM};
    const UNARY: &str = "/grpc.testing.TestService/UnaryCall";
    let server = TestServer::start().await;
    let frames_for = |behavior: &'static str| {
        let addr = server.addr;
        async move {
            let mut socket = h2raw::connect(addr).await;
            h2raw::send_call(&mut socket, 1, UNARY, &[("x-echo-behavior", behavior)], &[]).await;
            h2raw::frames_until_close(&mut socket, Duration::from_secs(5)).await
        }
    };

    let frames = frames_for("connection=goaway").await;
    let on_stream_1: Vec<(u8, u8)> = frames
        .iter()
        .filter(|frame| frame.stream == 1)
        .map(|frame| (frame.kind, frame.flags & END_STREAM))
        .collect();
    assert_eq!(
        on_stream_1,
        [(HEADERS, 0), (DATA, 0), (HEADERS, END_STREAM)]
    );
    assert!(
        frames.iter().any(|frame| frame.kind == GOAWAY),
        "{frames:?}"
    );

    let mut socket = h2raw::connect(server.addr).await;
    let reset = [("x-echo-behavior", "connection=reset-7")];
    h2raw::send_call(&mut socket, 1, UNARY, &reset, &[]).await;
    let reset = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let frame = h2raw::read_frame(&mut socket).await.expect("RST_STREAM");
            if frame.stream == 1 && frame.kind != HEADERS && frame.kind != DATA {
                return frame;
            }
        }
    })
    .await
    .expect("no RST_STREAM");
    assert_eq!(reset.kind, RST_STREAM, "{reset:?}");
    assert_eq!(
        u32::from_be_bytes(reset.payload[..4].try_into().unwrap()),
        7
    );

    // Closed here, or the server's drain would wait out its grace for it.
    drop(socket);

    // The connection was up (the server's SETTINGS came) and the call closed
    // it unanswered, at once (frames_until_close fails on a connection left open).
    let started = Instant::now();
    let frames = frames_for("connection=close").await;
    assert!(
        frames.iter().any(|frame| frame.kind == h2raw::SETTINGS),
        "no SETTINGS: the connection never came up: {frames:?}"
    );
    assert!(
        frames.iter().all(|frame| frame.stream != 1),
        "a closed call got an answer: {frames:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_behaviour_size_sets_every_answer_payload_where_the_method_has_one() {
    use grpc_echo::grpc::testing::{ResponseParameters, StreamingOutputCallRequest};
    let server = TestServer::start().await;
    let client = server.client().await;

    // It replaces the message's own response_size, on Echo and on each
    // message of a stream.
    let request = EchoRequest {
        payload: vec![1; 10].into(),
        response_size: Some(5),
        ..Default::default()
    };
    let response = client
        .echo(with_headers(
            request.clone(),
            &[("x-echo-behavior", "size=4KiB")],
        ))
        .await
        .unwrap();
    assert_eq!(response.get_ref().payload.len(), 4096);
    let response = client.echo(request).await.unwrap();
    assert_eq!(response.get_ref().payload.len(), 5, "without the header");
    let mut stream = client
        .server_stream(with_headers(
            EchoRequest {
                stream: Some(echo_client::proto::StreamControl {
                    count: Some(3),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &[("x-echo-behavior", "size=100")],
        ))
        .await
        .unwrap()
        .into_inner();
    let mut sizes = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        sizes.push(message.payload.len());
    }
    assert_eq!(sizes, [100, 100, 100]);

    // TestService: UnaryCall's payload and each output stream response.
    let mut test_service = TestServiceClient::new(server.channel().await);
    let response = test_service
        .unary_call(with_headers(
            SimpleRequest {
                response_size: 1,
                ..Default::default()
            },
            &[("x-echo-behavior", "size=2048")],
        ))
        .await
        .unwrap();
    assert_eq!(
        response.get_ref().payload.as_ref().unwrap().body.len(),
        2048
    );
    let mut stream = test_service
        .streaming_output_call(with_headers(
            StreamingOutputCallRequest {
                response_parameters: vec![ResponseParameters::default(); 2],
                ..Default::default()
            },
            &[("x-echo-behavior", "size=64")],
        ))
        .await
        .unwrap()
        .into_inner();
    let mut sizes = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        sizes.push(message.payload.unwrap().body.len());
    }
    assert_eq!(sizes, [64, 64]);

    // Weighted like any behaviour; over the server's maximum, refused.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let response = client
            .echo(with_headers(
                EchoRequest::default(),
                &[("x-echo-behavior", "size=10:50%,20:50%")],
            ))
            .await
            .unwrap();
        seen.insert(response.get_ref().payload.len());
    }
    assert_eq!(seen, [10, 20].into(), "60 draws of two even chances");
    let status = echo(&client, &[("x-echo-behavior", "size=2MiB")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("exceeds the server maximum"),
        "{status:?}"
    );
    let status = echo(&client, &[("x-echo-behavior", "size=big")])
        .await
        .unwrap_err();
    assert!(status.message().contains("not a size"), "{status:?}");
}

/// `echo-client bench` under a retry policy reports how many attempts each
/// call made: against a 30%-UNAVAILABLE instance, every call succeeds and
/// the attempts follow the geometric law (1 / 0.7 ≈ 1.43 per call).
#[test]
fn bench_reports_the_attempts_each_call_made() {
    let server = echo_tests::process::ServerProcess::start(&[
        "--fault",
        "error=UNAVAILABLE:30%",
        "--fault-seed",
        "11",
    ]);
    // A deadline longer than nine backoffs (100 ms doubling to 2 s: 9.1 s),
    // so that only the retries' end can end a call that keeps failing (one
    // in 170,000 calls fails ten times running).
    let output = server.client(&[
        "--retries",
        "9",
        "--timeout",
        "30s",
        "--json",
        "bench",
        "--total",
        "600",
        "--warmup",
        "0s",
        "--concurrency",
        "4",
    ]);
    let report: serde_json::Value = serde_json::from_str(&echo_tests::process::stdout(&output))
        .unwrap_or_else(|err| panic!("{err}: {}", echo_tests::process::stderr(&output)));
    println!(
        "600 calls at 30% UNAVAILABLE: attempts {}, {} per call, {} retries, errors {}",
        report["attempts"], report["attempts_per_call"], report["retries"], report["errors"]
    );
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    let attempts = report["attempts"].as_object().unwrap();
    let calls: u64 = attempts.values().map(|calls| calls.as_u64().unwrap()).sum();
    assert_eq!(calls, 600, "{report}");
    let made: u64 = attempts
        .iter()
        .map(|(n, calls)| n.parse::<u64>().unwrap() * calls.as_u64().unwrap())
        .sum();
    assert_eq!(
        made - calls,
        report["retries"].as_u64().unwrap(),
        "{report}"
    );
    // Seeded draws; ±0.15 is over four standard deviations of the mean of 600.
    let per_call = report["attempts_per_call"].as_f64().unwrap();
    assert!((1.28..=1.58).contains(&per_call), "{report}");
    assert!(attempts["1"].as_u64().unwrap() > attempts["2"].as_u64().unwrap());
}

/// A failed call says what asked for its failure, in its status message and
/// in the server's log line: `--fault`, either header, or a chaos window.
#[tokio::test]
async fn a_fault_names_its_source_in_the_message_and_the_log() {
    use echo_tests::process::ServerProcess;
    let server =
        ServerProcess::start_logging(&["--fault", "error=UNAVAILABLE"], "echo_server=debug");
    let client = EchoClient::builder(server.addr.to_string())
        .connect()
        .await
        .unwrap();
    for (headers, source) in [
        (&[][..], "--fault"),
        (
            &[("x-echo-behavior", "error=ABORTED")][..],
            "x-echo-behavior",
        ),
        (&[("rpc-behavior", "error-code-9")][..], "rpc-behavior"),
    ] {
        let status = echo(&client, headers).await.unwrap_err();
        assert_eq!(status.message(), format!("{source} asked for it"));
        let logged = server.wait_for_log(&format!("failing the call as {source} asks"));
        assert_eq!(logged["fields"]["source"], source, "{logged}");
        assert_eq!(
            logged["fields"]["path"], "/echo.v1.EchoService/Echo",
            "{logged}"
        );
    }
    let chaotic = ServerProcess::start_logging(
        &[
            "--chaos",
            "errors code=UNAVAILABLE for=1h every=2h after=0s",
        ],
        "echo_server=debug",
    );
    chaotic.wait_for_log("chaos window opened");
    let client = EchoClient::builder(chaotic.addr.to_string())
        .connect()
        .await
        .unwrap();
    let status = echo(&client, &[]).await.unwrap_err();
    assert_eq!(status.message(), "chaos: an error window on bin-test");
    chaotic.wait_for_log("failing the call as a chaos error window asks");
}
