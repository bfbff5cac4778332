//! Prometheus metrics, scraped over HTTP from a real server process and parsed
//! by the official Python parser.

use std::process::Command;

use echo_client::EchoClient;
use echo_client::proto::{EchoRequest, ErrorControl, StatusCode, StreamControl};
use echo_tests::process::{COMMAND_TIMEOUT, ServerProcess, output_within, python, script};
use serde_json::Value;

fn scrape(url: &str) -> Value {
    let mut scraper = Command::new(python());
    scraper.arg(script("scrape_metrics.py")).arg(url);
    let output = output_within(scraper, b"", COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn sample(scraped: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Value> = scraped["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .collect();
    assert_eq!(matching.len(), 1, "{name} {labels:?}: {matching:?}");
    matching[0]["value"].as_f64().unwrap()
}

#[tokio::test]
async fn metrics_count_calls_codes_latency_streams_and_connections() {
    let server = ServerProcess::start(&["--metrics-addr", "127.0.0.1:0"]);
    let metrics_addr = server.wait_for_log("metrics listening")["fields"]["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = EchoClient::builder(server.addr.to_string())
        .connect()
        .await
        .unwrap();
    for _ in 0..3 {
        client.echo(EchoRequest::default()).await.unwrap();
    }
    let failing = EchoRequest {
        error: Some(ErrorControl {
            code: StatusCode::NotFound as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    client.echo(failing).await.unwrap_err();
    let streaming = EchoRequest {
        stream: Some(StreamControl {
            count: Some(5),
            interval: None,
        }),
        ..Default::default()
    };
    let mut stream = client.server_stream(streaming).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    let three = futures_util::stream::iter(vec![EchoRequest::default(); 3]);
    client.client_stream(three).await.unwrap();
    let four = futures_util::stream::iter(vec![EchoRequest::default(); 4]);
    let mut answers = client.bidi_stream(four).await.unwrap().into_inner();
    while answers.message().await.unwrap().is_some() {}
    let output = server.client(&["health"]);
    assert!(output.status.success());

    let scraped = scrape(&format!("http://{metrics_addr}/metrics"));
    assert!(
        scraped["content_type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let echo = [
        ("grpc_service", "echo.v1.EchoService"),
        ("grpc_method", "Echo"),
    ];
    let handled = |code: &str| {
        let mut labels = echo.to_vec();
        labels.push(("grpc_code", code));
        sample(&scraped, "grpc_server_handled_total", &labels)
    };
    assert_eq!(handled("OK"), 3.0);
    assert_eq!(handled("NotFound"), 1.0);
    // The grpc-ecosystem series: started, handled and messages both ways, by
    // the method's type, each message of a stream counted.
    for (method, grpc_type, started, received, sent) in [
        ("Echo", "unary", 4.0, 4.0, 3.0),
        ("ServerStream", "server_stream", 1.0, 1.0, 5.0),
        ("ClientStream", "client_stream", 1.0, 3.0, 1.0),
        ("BidiStream", "bidi_stream", 1.0, 4.0, 4.0),
    ] {
        let labels = [
            ("grpc_type", grpc_type),
            ("grpc_service", "echo.v1.EchoService"),
            ("grpc_method", method),
        ];
        let counted = [
            sample(&scraped, "grpc_server_started_total", &labels),
            sample(&scraped, "grpc_server_msg_received_total", &labels),
            sample(&scraped, "grpc_server_msg_sent_total", &labels),
        ];
        assert_eq!(counted, [started, received, sent], "{method}");
    }
    let mut labels = echo.to_vec();
    labels.extend([("grpc_type", "unary"), ("grpc_code", "OK")]);
    assert_eq!(sample(&scraped, "grpc_server_handled_total", &labels), 3.0);
    assert_eq!(
        sample(&scraped, "grpc_server_handling_seconds_count", &echo),
        4.0
    );
    assert!(sample(&scraped, "grpc_server_handling_seconds_sum", &echo) > 0.0);
    let health = [
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_method", "Check"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(sample(&scraped, "grpc_server_handled_total", &health), 1.0);
    assert_eq!(
        sample(&scraped, "grpc_server_stream_messages_sent_total", &[]),
        9.0
    );
    assert_eq!(sample(&scraped, "grpc_server_open_streams", &[]), 0.0);
    assert_eq!(sample(&scraped, "grpc_server_in_flight_calls", &[]), 0.0);
    assert!(sample(&scraped, "grpc_server_open_connections", &[]) >= 1.0);
    // The connection's task at least, read at the scrape.
    assert!(sample(&scraped, "tokio_alive_tasks", &[]) >= 1.0);

    // While a unary call and a stream are open, the gauges count them.
    let slow = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .echo(EchoRequest {
                    delay: Some(echo_tests::ms(10_000)),
                    ..Default::default()
                })
                .await
        }
    });
    let mut ticking = client
        .server_stream(echo_tests::ticking(1_000, 1_000))
        .await
        .unwrap()
        .into_inner();
    ticking.message().await.unwrap().unwrap();
    let url = format!("http://{metrics_addr}/metrics");
    echo_tests::eventually("the open calls to show in the gauges", || async {
        let scraped = scrape(&url);
        sample(&scraped, "grpc_server_in_flight_calls", &[]) == 2.0
            && sample(&scraped, "grpc_server_open_streams", &[]) == 1.0
    })
    .await;
    slow.abort();
    drop(ticking);
    echo_tests::eventually("the gauges to come back to 0", || async {
        let scraped = scrape(&url);
        sample(&scraped, "grpc_server_in_flight_calls", &[]) == 0.0
            && sample(&scraped, "grpc_server_open_streams", &[]) == 0.0
    })
    .await;
}

/// A path no served service has is counted under `unknown`, so made-up
/// paths cannot grow the label sets.
#[tokio::test]
async fn made_up_paths_are_counted_as_unknown() {
    let server = ServerProcess::start(&["--metrics-addr", "127.0.0.1:0"]);
    let metrics_addr = server.wait_for_log("metrics listening")["fields"]["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    for path in [
        "/no.such.Service/Method",
        "/echo.v1.EchoService/NoSuchMethod",
        "/junk",
    ] {
        let request = http::Request::post(format!("http://{}{path}", server.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut client = client.clone().ready().await.unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        body.send_data(echo_tests::grpc_message(b""), true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "12", "{path}");
    }
    let scraped = scrape(&format!("http://{metrics_addr}/metrics"));
    let unknown = [
        ("grpc_service", "unknown"),
        ("grpc_method", "unknown"),
        ("grpc_code", "Unimplemented"),
    ];
    assert_eq!(sample(&scraped, "grpc_server_handled_total", &unknown), 3.0);
    let services: std::collections::BTreeSet<&str> = scraped["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["labels"]["grpc_service"].as_str())
        .collect();
    assert!(!services.contains("no.such.Service"), "{services:?}");
}
