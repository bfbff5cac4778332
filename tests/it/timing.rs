//! Where a call's time goes (`ClientBuilder::timing`, `echo-client
//! --timing`): each phase of a new connection over HTTP/2, HTTP/1.1 and
//! HTTP/3 with TLS and over plaintext, none on a reused one, and each call's
//! own phases in order; the CLI's table and JSON, and bench's histograms.

use echo_client::proto::EchoRequest;
use echo_client::timing::{CallTiming, Phase, Timeline};
use echo_client::{ClientBuilder, EchoClient, Protocol};
use echo_tests::process::echo_client;
use echo_tests::{TestServer, read_to_end, ticking};
use serde_json::Value;

use crate::http3::Http3Server;

fn names(phases: &[Phase]) -> Vec<&'static str> {
    phases.iter().map(|phase| phase.name).collect()
}

fn hello() -> EchoRequest {
    EchoRequest {
        message: "hello".into(),
        ..Default::default()
    }
}

/// The call's phases are in the order they ended, each ending no earlier
/// than it began.
fn assert_unary_phases(call: &CallTiming) {
    assert_eq!(
        names(&call.phases),
        [
            "request sent",
            "response headers",
            "first message",
            "trailers"
        ],
        "{call:?}"
    );
    assert!(call.phases.iter().all(|phase| phase.end >= phase.start));
}

/// One Echo call on a new client of `builder`, timed: the timeline, the
/// client and the call, whose phases are a unary call's on a new connection.
async fn one_echo(builder: ClientBuilder) -> (Timeline, EchoClient, CallTiming) {
    let timeline = Timeline::new();
    let client = builder.timing(timeline.clone()).connect().await.unwrap();
    client.echo(hello()).await.unwrap();
    let call = timeline.take_calls().remove(0);
    assert!(call.connection.is_some(), "a new connection: {call:?}");
    assert_unary_phases(&call);
    (timeline, client, call)
}

#[tokio::test]
async fn each_phase_of_a_new_connection_and_of_its_calls() {
    let server = Http3Server::start(true, |_| {}).await;
    let uri = format!("https://{}", server.server.addr);

    // HTTP/2 over TLS: the first call opened the connection, the second reused it.
    let timeline = Timeline::new();
    let client = ClientBuilder::new(&uri)
        .tls(server.tls())
        .timing(timeline.clone())
        .connect()
        .await
        .unwrap();
    client.echo(hello()).await.unwrap();
    client.echo(hello()).await.unwrap();
    let calls = timeline.take_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let connection = calls[0].connection.as_ref().expect("a new connection");
    assert_eq!(
        names(connection),
        ["resolve", "TCP connect", "TLS handshake", "HTTP/2 setup"]
    );
    assert_eq!(
        connection[0].detail,
        format!("localhost -> {}", server.server.addr).replace("localhost", "127.0.0.1")
    );
    assert_eq!(connection[2].detail, "TLS 1.3, ALPN h2, full handshake");
    assert!(calls[1].connection.is_none(), "the second call reused it");
    for call in &calls {
        assert_eq!(call.path, "/echo.v1.EchoService/Echo");
        assert_unary_phases(call);
    }
    assert_eq!(timeline.connections().len(), 1);

    // A stream: its last message came two intervals after its first.
    let mut stream = client
        .server_stream(ticking(3, 100))
        .await
        .unwrap()
        .into_inner();
    let (messages, ended) = read_to_end(&mut stream).await;
    assert_eq!(messages, 3);
    ended.unwrap();
    drop(stream);
    let calls = timeline.take_calls();
    let phases = &calls[0].phases;
    assert_eq!(
        names(phases),
        [
            "request sent",
            "response headers",
            "first message",
            "last message",
            "trailers"
        ]
    );
    let between = phases[3].end - phases[2].end;
    assert!(between.as_millis() >= 190, "{between:?}");

    // A failed call is timed too: its answer is trailers-only.
    let failing = EchoRequest {
        error: Some(echo_client::proto::ErrorControl {
            code: echo_client::proto::StatusCode::Unavailable as i32,
            ..Default::default()
        }),
        ..hello()
    };
    client.echo(failing).await.unwrap_err();
    let calls = timeline.take_calls();
    assert_eq!(
        names(&calls[0].phases),
        ["request sent", "response headers"],
        "{calls:?}"
    );

    // An https address without TLS options is refused, timed or not (never
    // called in plaintext).
    for timed in [false, true] {
        let mut builder = ClientBuilder::new(&uri);
        if timed {
            builder = builder.timing(Timeline::new());
        }
        let error = builder.connect().await.unwrap_err();
        let mut refused = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            refused = format!("{refused}: {cause}");
            source = cause.source();
        }
        assert!(
            refused.contains("HTTPS without TLS"),
            "timed {timed}: {refused}"
        );
    }

    // HTTP/1.1 (Connect): no HTTP setup phase; ALPN http/1.1.
    let http1 = ClientBuilder::new(&uri)
        .tls(server.tls())
        .http1(true)
        .protocol(Protocol::Connect);
    let (_, _, call) = one_echo(http1).await;
    let connection = call.connection.unwrap();
    assert_eq!(
        names(&connection),
        ["resolve", "TCP connect", "TLS handshake"]
    );
    assert_eq!(
        connection[2].detail,
        "TLS 1.3, ALPN http/1.1, full handshake"
    );

    // HTTP/3: QUIC's handshake (TLS inside it), then HTTP/3's setup.
    let http3 = ClientBuilder::new(&uri).tls(server.tls()).http3(true);
    let (timeline, client, call) = one_echo(http3).await;
    let connection = call.connection.unwrap();
    assert_eq!(
        names(&connection),
        ["resolve", "QUIC handshake", "HTTP/3 setup"]
    );
    assert!(
        connection[1].detail.ends_with("TLS 1.3, ALPN h3"),
        "{connection:?}"
    );
    // QUIC's bytes, read from the open connection and again once it is let go.
    let (sent, received) = timeline.wire_bytes();
    assert!(sent > 1000 && received > 1000, "{sent} {received}");
    drop(client);
    assert!(timeline.wire_bytes().0 >= sent);

    // Plaintext HTTP/2: no TLS.
    let plain = TestServer::start().await;
    let (timeline, _, call) = one_echo(ClientBuilder::new(plain.uri())).await;
    assert_eq!(
        names(&call.connection.unwrap()),
        ["resolve", "TCP connect", "HTTP/2 setup"]
    );
    // Plaintext: the preface, SETTINGS and the call, a few hundred bytes.
    let (sent, received) = timeline.wire_bytes();
    assert!(
        (100..2000).contains(&sent) && (50..2000).contains(&received),
        "{sent} {received}"
    );
    plain.stop().await;

    // No server: the call's one phase says why it got no answer (each
    // attempt's: the library sends an unprocessed call again once).
    let timeline = Timeline::new();
    let client = ClientBuilder::new("http://127.0.0.1:1")
        .timing(timeline.clone())
        .connect_lazy()
        .unwrap();
    client.echo(hello()).await.unwrap_err();
    let calls = timeline.take_calls();
    let failed = calls[0].phases.last().unwrap();
    assert_eq!(failed.name, "failed", "{calls:?}");
    assert!(failed.detail.contains("Connection refused"), "{calls:?}");
    assert!(calls[0].connection.is_none());
}

#[tokio::test]
async fn the_cli_prints_each_calls_phases_and_bench_their_histograms() {
    let server = Http3Server::start(false, |_| {}).await;
    let addr = format!("https://{}", server.server.addr);
    let ca = server.ca_file.to_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let tls = [
            "--addr",
            &addr,
            "--ca",
            &ca,
            "--tls-server-name",
            "localhost",
            "--timing",
        ];
        let text = echo_client(&[&tls[..], &["echo", "hi"]].concat());
        let json = echo_client(&[&tls[..], &["--json", "echo", "hi"]].concat());
        let failed = echo_client(
            &[
                &tls[..],
                &["-H", "x-echo-behavior: error=UNAVAILABLE", "echo", "hi"],
            ]
            .concat(),
        );
        let bench = echo_client(
            &[
                &tls[..],
                &[
                    "--json",
                    "bench",
                    "--connections",
                    "2",
                    "--total",
                    "50",
                    "--warmup",
                    "0s",
                ],
            ]
            .concat(),
        );
        (text, json, failed, bench)
    })
    .await
    .unwrap();
    let (text, json, failed, bench) = output;

    assert!(text.status.success(), "{text:?}");
    let table = String::from_utf8_lossy(&text.stderr);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0], "timing /echo.v1.EchoService/Echo (new connection)",
        "{table}"
    );
    let phases: Vec<&str> = lines[2..]
        .iter()
        .map(|line| line.split("ms").nth(2).unwrap_or_default().trim())
        .collect();
    assert!(
        phases[2].starts_with("TLS handshake     TLS 1.3, ALPN h2, full handshake"),
        "{table}"
    );
    for phase in [
        "resolve",
        "TCP connect",
        "HTTP/2 setup",
        "request sent",
        "response headers",
        "first message",
        "trailers",
    ] {
        assert!(
            phases.iter().any(|line| line.starts_with(phase)),
            "{phase}: {table}"
        );
    }

    assert!(json.status.success(), "{json:?}");
    let timing: Value = serde_json::from_slice(&json.stderr).unwrap();
    let timing = &timing["timing"];
    assert_eq!(timing["connection"], "new");
    let offsets: Vec<f64> = timing["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["offset_ms"].as_f64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0.0, "{timing}");
    assert!(
        offsets.windows(2).all(|pair| pair[0] <= pair[1]),
        "{timing}"
    );

    // A failing call still shows where its time went.
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("UNAVAILABLE") || stderr.contains("Unavailable"),
        "{stderr}"
    );
    assert!(
        stderr.contains("timing /echo.v1.EchoService/Echo (new connection)"),
        "{stderr}"
    );

    assert!(bench.status.success(), "{bench:?}");
    let report: Value = serde_json::from_slice(&bench.stdout).unwrap();
    let phases = &report["phases_ms"];
    assert_eq!(
        phases["connection"]["TLS handshake"]["count"], 2,
        "{phases}"
    );
    assert_eq!(phases["connection"]["resolve"]["count"], 2, "{phases}");
    assert_eq!(phases["call"]["response headers"]["count"], 50, "{phases}");
    assert_eq!(phases["call"]["first message"]["count"], 50, "{phases}");
    let sent = report["wire_bytes"]["sent"].as_u64().unwrap();
    assert!(sent > 50 * 40, "{report}");
    assert!(
        phases["call"]["first message"]["p50"].as_f64().unwrap()
            <= report["latency_ms"]["max"].as_f64().unwrap()
    );
}
