//! ORCA load reports (`--load-report`, gRFC A51) on a real server: the
//! `endpoint-load-metrics-bin` trailer of every TestService and echo.v1
//! answer (and of a trailers-only error), a call's `x-echo-load-report`
//! override, `auto` values, a chaos `load` window, the out-of-band
//! `OpenRcaService` stream at the interval asked for (bounded below) and its
//! end at shutdown; and the client library's weighted round robin (gRFC A58)
//! sharing calls among three servers by their reports.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use echo_client::load_report::{self, OrcaLoadReport, WeightedConfig};
use echo_client::proto::EchoRequest;
use echo_client::{BalancePolicy, EchoClient};
use echo_tests::{TestServer, config, eventually};
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use grpc_echo::grpc::testing::{EchoStatus, Empty, SimpleRequest, StreamingOutputCallRequest};
use grpc_echo::xds::service::orca::v3::OrcaLoadReportRequest;
use grpc_echo::xds::service::orca::v3::open_rca_service_client::OpenRcaServiceClient;
use tonic::Code;
use tonic::metadata::MetadataValue;

const REPORT: &str = "cpu=0.5,mem=0.25,qps=100,util.gpu=0.8";

fn configured() -> OrcaLoadReport {
    OrcaLoadReport {
        cpu_utilization: 0.5,
        mem_utilization: 0.25,
        rps_fractional: 100.0,
        utilization: [("gpu".to_owned(), 0.8)].into(),
        ..OrcaLoadReport::default()
    }
}

async fn reporting(spec: &str) -> TestServer {
    let spec = spec.parse().unwrap();
    TestServer::with_config(config(|c| c.load.load_report = Some(spec))).await
}

#[tokio::test]
async fn every_testservice_answer_carries_the_configured_report() {
    let server = reporting(REPORT).await;
    let mut client = TestServiceClient::new(server.channel().await);

    let empty = client.empty_call(Empty {}).await.unwrap();
    assert_eq!(
        load_report::from_metadata(empty.metadata()),
        Some(configured())
    );
    let unary = client.unary_call(SimpleRequest::default()).await.unwrap();
    assert_eq!(
        load_report::from_metadata(unary.metadata()),
        Some(configured())
    );

    let mut stream = client
        .streaming_output_call(StreamingOutputCallRequest::default())
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    let trailers = stream.trailers().await.unwrap().unwrap();
    assert_eq!(load_report::from_metadata(&trailers), Some(configured()));

    // An error answered trailers-only carries it where its trailers are.
    let error = client
        .unary_call(SimpleRequest {
            response_status: Some(EchoStatus {
                code: Code::Unavailable as i32,
                message: "asked for".to_owned(),
            }),
            ..SimpleRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(
        load_report::from_metadata(error.metadata()),
        Some(configured())
    );

    // echo.v1 is a service under test too; health is not.
    let echo = server.client().await;
    let answer = echo.echo(EchoRequest::default()).await.unwrap();
    assert_eq!(
        load_report::from_metadata(answer.metadata()),
        Some(configured())
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let checked = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(load_report::from_metadata(checked.metadata()), None);
    server.stop().await;
}

#[tokio::test]
async fn a_calls_header_reports_in_place_of_the_server() {
    for server in [reporting(REPORT).await, TestServer::start().await] {
        let mut client = TestServiceClient::new(server.channel().await);
        let mut request = tonic::Request::new(Empty {});
        request.metadata_mut().insert(
            "x-echo-load-report",
            MetadataValue::from_static("cpu=0.9,named.queue=7,req.db=2.5"),
        );
        let answer = client.empty_call(request).await.unwrap();
        assert_eq!(
            load_report::from_metadata(answer.metadata()),
            Some(OrcaLoadReport {
                cpu_utilization: 0.9,
                named_metrics: [("queue".to_owned(), 7.0)].into(),
                request_cost: [("db".to_owned(), 2.5)].into(),
                ..OrcaLoadReport::default()
            })
        );

        let mut request = tonic::Request::new(Empty {});
        request
            .metadata_mut()
            .insert("x-echo-load-report", MetadataValue::from_static("mem=2"));
        let status = client.empty_call(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "x-echo-load-report: mem: 2 is outside 0 to 1"
        );
        server.stop().await;
    }
    // Without the flag or the header, nothing is reported.
    let server = TestServer::start().await;
    let answer = server
        .client()
        .await
        .echo(EchoRequest::default())
        .await
        .unwrap();
    assert_eq!(load_report::from_metadata(answer.metadata()), None);
    server.stop().await;
}

#[tokio::test]
async fn auto_values_follow_the_calls_and_the_cpu() {
    let server = reporting("cpu=auto,qps=auto,mem=0.5").await;
    let client = server.client().await;
    let started = Instant::now();
    // Calls for over a sample period, so the next report measures them.
    let mut calls = 0u32;
    while started.elapsed() < Duration::from_millis(1200) {
        client.echo(EchoRequest::default()).await.unwrap();
        calls += 1;
    }
    let answer = client.echo(EchoRequest::default()).await.unwrap();
    let report = load_report::from_metadata(answer.metadata()).unwrap();
    let rate = f64::from(calls) / started.elapsed().as_secs_f64();
    assert!(
        report.rps_fractional > rate / 3.0 && report.rps_fractional < rate * 3.0,
        "qps=auto reported {} for about {rate:.0} calls/s",
        report.rps_fractional
    );
    assert!(
        report.cpu_utilization > 0.0 && report.cpu_utilization <= 1.0,
        "cpu=auto reported {} while serving",
        report.cpu_utilization
    );
    assert_eq!(report.mem_utilization, 0.5);
    server.stop().await;
}

#[tokio::test]
async fn a_chaos_load_window_changes_the_report_and_changes_it_back() {
    let schedule = "load report=cpu=0.95,qps=10 for=600ms every=1200ms after=300ms";
    let server = TestServer::with_config(config(|c| {
        c.load.load_report = Some("cpu=0.1,qps=100".parse().unwrap());
        c.faults.chaos = vec![schedule.parse().unwrap()];
    }))
    .await;
    let client = server.client().await;
    let cpu = || async {
        let answer = client.echo(EchoRequest::default()).await.unwrap();
        load_report::from_metadata(answer.metadata())
            .unwrap()
            .cpu_utilization
    };
    assert_eq!(cpu().await, 0.1);
    eventually("the load window opens", || async { cpu().await == 0.95 }).await;
    eventually("the load window closes", || async { cpu().await == 0.1 }).await;
    server.stop().await;
}

#[tokio::test]
async fn the_out_of_band_stream_reports_at_the_interval_asked_and_ends_at_shutdown() {
    let mut server = TestServer::with_config(config(|c| {
        c.load.load_report = Some(REPORT.parse().unwrap());
        c.load.orca_min_interval = Duration::from_millis(200).into();
    }))
    .await;
    let mut orca = OpenRcaServiceClient::new(server.channel().await);
    let reports = |interval: Duration| OrcaLoadReportRequest {
        report_interval: Some(interval.try_into().unwrap()),
        request_cost_names: Vec::new(),
    };

    // Three reports 300 ms apart: the first at once, the third 600 ms later.
    let started = Instant::now();
    let mut stream = orca
        .stream_core_metrics(reports(Duration::from_millis(300)))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        assert_eq!(stream.message().await.unwrap(), Some(configured()));
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "three reports at 300 ms took {took:?}"
    );
    drop(stream);

    // 10 ms asked, 200 ms the server's least.
    let started = Instant::now();
    let mut stream = orca
        .stream_core_metrics(reports(Duration::from_millis(10)))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        stream.message().await.unwrap().unwrap();
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "three reports asked at 10 ms, bounded to 200 ms, took {took:?}"
    );

    // Shutdown ends the stream cleanly (OK), long before the grace period.
    server.begin_shutdown();
    let ended = Instant::now();
    while stream.message().await.unwrap().is_some() {}
    assert!(ended.elapsed() < Duration::from_secs(2));
    server.join().await.unwrap();
}

#[tokio::test]
async fn the_stream_keeps_the_request_costs_asked_for() {
    let server = reporting("cpu=0.5,req.db=1,req.cache=2").await;
    let mut stream = OpenRcaServiceClient::new(server.channel().await)
        .stream_core_metrics(OrcaLoadReportRequest {
            report_interval: None,
            request_cost_names: vec!["db".to_owned()],
        })
        .await
        .unwrap()
        .into_inner();
    let report = stream.message().await.unwrap().unwrap();
    assert_eq!(report.request_cost, [("db".to_owned(), 1.0)].into());
    assert_eq!(report.cpu_utilization, 0.5);
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn the_stream_is_served_only_by_an_instance_that_reports() {
    let server = TestServer::start().await;
    let status = OpenRcaServiceClient::new(server.channel().await)
        .stream_core_metrics(OrcaLoadReportRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    server.stop().await;
}

#[tokio::test]
async fn weighted_round_robin_shares_calls_by_the_reported_load() {
    // Weights (A58: qps / utilization): 400, 200 and 100.
    let mut servers = Vec::new();
    for cpu in ["0.25", "0.5", "1"] {
        servers.push(reporting(&format!("cpu={cpu},qps=100")).await);
    }
    let client = EchoClient::builder(servers[0].uri())
        .balanced(servers.iter().map(|server| server.addr.to_string()))
        .balance_policy(BalancePolicy::Weighted(WeightedConfig {
            blackout_period: Duration::ZERO,
            ..WeightedConfig::default()
        }))
        .connect()
        .await
        .unwrap();
    // Round robin until every server has reported once.
    for _ in 0..6 {
        client.echo(EchoRequest::default()).await.unwrap();
    }
    // Each server told apart by the load it reports.
    let mut answered: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..700 {
        let answer = client.echo(EchoRequest::default()).await.unwrap();
        let report = load_report::from_metadata(answer.metadata()).unwrap();
        *answered
            .entry(format!("cpu={}", report.cpu_utilization))
            .or_default() += 1;
    }
    // Within two of the weights' shares: the credits the first, unweighted
    // picks left behind are paid off in the first rounds.
    for (server, share) in [("cpu=0.25", 400), ("cpu=0.5", 200), ("cpu=1", 100)] {
        let answers = answered.get(server).copied().unwrap_or_default();
        assert!(answers.abs_diff(share) <= 2, "{answered:?}");
    }
    let weights: Vec<Option<f64>> = client.loads().iter().map(|load| load.weight).collect();
    assert_eq!(weights.len(), 3);
    for weight in [400.0, 200.0, 100.0] {
        assert!(weights.contains(&Some(weight)), "{weights:?}");
    }
    for server in servers {
        server.stop().await;
    }
}

/// Envoy's own protos (PyPI `xds-protos`) decode what grpcurl receives in the
/// trailer, and what Python grpcio receives on the out-of-band stream, to
/// exactly the configured values.
#[cfg(feature = "external-tools")]
#[test]
fn envoys_protos_decode_the_trailer_and_the_stream() {
    use echo_tests::process::{
        COMMAND_TIMEOUT, ServerProcess, grpcurl, output_within, python, script,
    };
    use std::process::Command;

    let server = ServerProcess::start(&["--load-report", REPORT]);
    let expected = r#"{"cpu_utilization": 0.5, "mem_utilization": 0.25, "rps_fractional": 100.0, "utilization": {"gpu": 0.8}}"#;
    let decode = |value: &str| {
        let mut command = Command::new(python());
        command.arg(script("read_load.py")).args(["trailer", value]);
        let output = output_within(command, b"", COMMAND_TIMEOUT);
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    for method in [
        "grpc.testing.TestService/EmptyCall",
        "echo.v1.EchoService/Echo",
    ] {
        let mut command = Command::new(grpcurl());
        command
            .args(["-plaintext", "-v", "-d", "{}"])
            .arg(server.addr.to_string())
            .arg(method);
        let output = output_within(command, b"", COMMAND_TIMEOUT);
        let printed = String::from_utf8_lossy(&output.stdout);
        let value = printed
            .lines()
            .find_map(|line| line.strip_prefix("endpoint-load-metrics-bin: "))
            .unwrap_or_else(|| panic!("no load report in grpcurl's trailers:\n{printed}"));
        assert_eq!(decode(value).trim(), expected, "{method}");
    }

    let mut command = Command::new(python());
    command
        .arg(script("read_load.py"))
        .args(["stream", &server.addr.to_string(), "100", "3"]);
    let output = output_within(command, b"", COMMAND_TIMEOUT);
    assert!(output.status.success(), "{output:?}");
    let reports = String::from_utf8(output.stdout).unwrap();
    assert_eq!(reports.lines().collect::<Vec<_>>(), [expected; 3]);
}

#[tokio::test]
async fn weighted_round_robin_can_take_its_reports_out_of_band() {
    // Each server streams its configured load (weights 400, 200 and 100),
    // while every call asks its answer to report the same load: out of
    // band, the weights follow the streams, not the trailers.
    let mut servers = Vec::new();
    for cpu in ["0.25", "0.5", "1"] {
        let spec = format!("cpu={cpu},qps=100").parse().unwrap();
        servers.push(
            TestServer::with_config(config(|c| {
                c.load.load_report = Some(spec);
                c.load.orca_min_interval = Duration::from_millis(100).into();
            }))
            .await,
        );
    }
    let client = EchoClient::builder(servers[0].uri())
        .balanced(servers.iter().map(|server| server.addr.to_string()))
        .metadata("x-echo-load-report", "cpu=1,qps=100")
        .unwrap()
        .balance_policy(BalancePolicy::Weighted(WeightedConfig {
            blackout_period: Duration::ZERO,
            out_of_band: Some(Duration::from_millis(100)),
            ..WeightedConfig::default()
        }))
        .connect()
        .await
        .unwrap();
    eventually("every server's stream has reported", || async {
        client.loads().iter().all(|load| load.weight.is_some())
    })
    .await;
    // The weights are the streams' (their latest reports say so).
    for load in client.loads() {
        let report = load.report.unwrap();
        assert_eq!(
            load.weight,
            Some(report.rps_fractional / report.cpu_utilization),
            "{}",
            load.addr
        );
    }
    // Each server's share of the calls, by the HTTP/2 requests it counted
    // (a few health checks and report streams aside).
    let requests = |server: &TestServer| server.stats.http_requests(http::Version::HTTP_2);
    let before: Vec<u64> = servers.iter().map(requests).collect();
    for _ in 0..700 {
        let answer = client.echo(EchoRequest::default()).await.unwrap();
        let report = load_report::from_metadata(answer.metadata()).unwrap();
        assert_eq!(
            report.cpu_utilization, 1.0,
            "the trailer says what the call asked"
        );
    }
    for ((server, before), share) in servers.iter().zip(before).zip([400, 200, 100]) {
        let calls = requests(server) - before;
        assert!(
            calls >= share - 2 && calls <= share + 30,
            "{calls} requests where the weights give {share} calls"
        );
    }
    for server in servers {
        server.stop().await;
    }
}
