//! Distributed tracing end to end: `echo-client forward` -> server A ->
//! Forward -> server B, all exporting over OTLP/gRPC to a receiver built from
//! the official opentelemetry-proto definitions with Python grpcio. One
//! trace id, each span the child of the one before, the RPC conventions'
//! attributes, and the error status on a failed hop.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use echo_tests::process::{
    COMMAND_TIMEOUT, ScriptServer, ServerProcess, binary, output_within, python, workspace_root,
};
use serde_json::Value;

fn traced_server(listen: &str, name: &str, endpoint: &str, extra: &[&str]) -> ServerProcess {
    let mut command = ServerProcess::command(listen, name, extra, "info");
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_SERVICE_NAME", name)
        // Spans leave within 100 ms, not the default 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    ServerProcess::spawn(command)
}

/// `echo-client --addr ADDR forward ARGS...`, traced; whether it succeeded.
fn traced_forward(addr: &str, endpoint: &str, args: &[&str]) -> bool {
    let mut command = Command::new(binary("echo-client"));
    command
        .args(["--addr", addr, "--timeout", "10s", "forward"])
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_SERVICE_NAME", "echo-client");
    output_within(command, b"", COMMAND_TIMEOUT)
        .status
        .success()
}

fn spans(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The one span of `trace` whose parent is `parent`.
fn child<'a>(trace: &[&'a Value], parent: &Value) -> &'a Value {
    let children: Vec<&&Value> = trace
        .iter()
        .filter(|span| span["parent_span_id"] == parent["span_id"])
        .collect();
    assert_eq!(children.len(), 1, "children of {parent}: {children:?}");
    children[0]
}

#[test]
fn a_forward_is_one_trace_from_the_client_through_both_servers() {
    let spans_file =
        std::env::temp_dir().join(format!("grpc-echo-spans-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&spans_file);
    let mut receiver = Command::new(python());
    receiver
        .arg(workspace_root().join("tests/servers/otlp_receiver.py"))
        .arg(&spans_file);
    let receiver = ScriptServer::start(receiver);
    let endpoint = format!("http://{}", receiver.addr());
    let a = traced_server(
        "127.0.0.1:0",
        "a",
        &endpoint,
        &["--forward-allow", "127.0.0.0/8"],
    );
    let b = traced_server("127.0.0.2:0", "b", &endpoint, &[]);
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());

    assert!(traced_forward(&a_addr, &endpoint, &[&b_addr]));
    // The downstream call fails: B answers INTERNAL, as the header asks.
    assert!(!traced_forward(
        &a_addr,
        &endpoint,
        &[
            &b_addr,
            "--downstream-header",
            "x-echo-behavior=error=INTERNAL"
        ],
    ));

    // Two traces of four spans: the client's, A's server and client spans, B's.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = spans(&spans_file);
        if spans.len() >= 8 || Instant::now() > deadline {
            break spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut traces: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for span in &spans {
        traces
            .entry(span["trace_id"].as_str().unwrap())
            .or_default()
            .push(span);
    }
    assert_eq!(traces.len(), 2, "{spans:#?}");
    let mut outcomes = Vec::new();
    for trace in traces.values() {
        assert_eq!(trace.len(), 4, "{trace:#?}");
        let root = trace
            .iter()
            .find(|span| span["parent_span_id"] == "")
            .unwrap();
        assert_eq!(
            (&root["service"], &root["kind"]),
            (&Value::from("echo-client"), &Value::from("client"))
        );
        let a_server = child(trace, root);
        let a_client = child(trace, a_server);
        let b_server = child(trace, a_client);
        for (span, service, kind, method) in [
            (a_server, "a", "server", "Forward"),
            (a_client, "a", "client", "Echo"),
            (b_server, "b", "server", "Echo"),
        ] {
            assert_eq!(span["service"], service, "{span}");
            assert_eq!(span["kind"], kind, "{span}");
            assert_eq!(
                span["name"],
                format!("echo.v1.EchoService/{method}"),
                "{span}"
            );
            let attributes = &span["attributes"];
            assert_eq!(attributes["rpc.system"], "grpc", "{span}");
            assert_eq!(attributes["rpc.service"], "echo.v1.EchoService", "{span}");
            assert_eq!(attributes["rpc.method"], method, "{span}");
            assert!(attributes["server.address"].is_string(), "{span}");
        }
        for server in [a_server, b_server] {
            let attributes = &server["attributes"];
            assert_eq!(attributes["network.peer.address"], "127.0.0.1", "{server}");
            assert!(attributes["request_id"].is_string(), "{server}");
        }
        // Forward answered OK either way; its downstream call is what failed.
        assert_eq!(a_server["attributes"]["rpc.grpc.status_code"], 0);
        outcomes.push((
            root["status"].as_str().unwrap().to_owned(),
            a_client["status"].as_str().unwrap().to_owned(),
            b_server["attributes"]["rpc.grpc.status_code"]
                .as_i64()
                .unwrap(),
            b_server["status"].as_str().unwrap().to_owned(),
        ));
    }
    outcomes.sort();
    println!("two traces (client, A's client span, B's code and status): {outcomes:?}");
    assert_eq!(
        outcomes,
        [
            (
                "error".to_owned(),
                "error".to_owned(),
                13,
                "error".to_owned()
            ),
            (
                "unset".to_owned(),
                "unset".to_owned(),
                0,
                "unset".to_owned()
            ),
        ]
    );
    let _ = std::fs::remove_file(&spans_file);
}
