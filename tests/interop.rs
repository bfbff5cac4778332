//! Conformance: our interop client and server against each other and against an
//! independent Python grpcio implementation, and grpc-go's example echo service
//! called by grpcurl.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use common::process::{ServerProcess, binary, interop_script, python, stdout};
use serde_json::Value;

/// Cases a server needs the CompressedRequest feature for; grpcio cannot offer
/// it (a handler sees neither the message flag nor grpc-encoding).
const NEEDS_COMPRESSED_REQUESTS: [&str; 2] =
    ["client_compressed_unary", "client_compressed_streaming"];

const ALL_CASES: [&str; 20] = [
    "empty_unary",
    "large_unary",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_streaming",
    "client_compressed_streaming",
    "server_streaming",
    "server_compressed_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "cancel_after_begin",
    "cancel_after_first_response",
    "status_code_and_message",
    "special_status_message",
    "custom_metadata",
    "unimplemented_method",
    "unimplemented_service",
    "rpc_soak",
    "channel_soak",
];

fn interop_client(addr: &str, cases: &str) -> Output {
    Command::new(binary("echo-client"))
        .args([
            "--addr",
            addr,
            "interop",
            "--test-case",
            cases,
            "--soak-iterations",
            "5",
        ])
        .output()
        .unwrap()
}

/// Every case printed PASS and the tally says so.
fn assert_all_passed(output: &Output, cases: &[&str]) {
    let text = stdout(output);
    for case in cases {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("PASS {case} "))),
            "{case} did not pass:\n{text}"
        );
    }
    let tally = format!("{} passed, 0 failed", cases.len());
    assert_eq!(text.lines().last(), Some(tally.as_str()), "{text}");
}

#[test]
fn our_client_passes_every_case_against_our_server() {
    let server = ServerProcess::start(&[]);
    let output = interop_client(&server.addr.to_string(), "all");
    assert_all_passed(&output, &ALL_CASES);
}

#[test]
fn interop_client_fails_loudly_on_a_server_without_the_service() {
    let server = ServerProcess::start(&["--interop", "false"]);
    let output = interop_client(&server.addr.to_string(), "empty_unary,large_unary");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("FAIL empty_unary"), "{text}");
    assert_eq!(text.lines().last(), Some("0 passed, 2 failed"), "{text}");
    let services = stdout(&server.grpcurl(&["ADDR", "list"]));
    assert!(
        !services.contains("grpc.testing"),
        "switched off yet listed:\n{services}"
    );
}

/// The Python interop server on a free loopback port, stopped when dropped.
struct PythonServer {
    child: Child,
    port: u16,
}

impl PythonServer {
    fn start() -> Self {
        let mut child = Command::new(python())
            .arg(interop_script("server.py"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("listening ")
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("the Python server did not start: {line:?}"));
        Self { child, port }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn our_client_passes_against_the_python_server() {
    let server = PythonServer::start();
    let cases: Vec<&str> = ALL_CASES
        .into_iter()
        .filter(|case| !NEEDS_COMPRESSED_REQUESTS.contains(case))
        .collect();
    let output = interop_client(&format!("127.0.0.1:{}", server.port), &cases.join(","));
    assert_all_passed(&output, &cases);
}

#[test]
fn python_client_passes_against_our_server() {
    let server = ServerProcess::start(&[]);
    let cases = [
        "large_unary",
        "server_streaming",
        "ping_pong",
        "custom_metadata",
    ];
    let output = Command::new(python())
        .arg(interop_script("client.py"))
        .arg(server.addr.to_string())
        .arg(cases.join(","))
        .output()
        .unwrap();
    assert_all_lines_pass(&output, &cases);
}

fn assert_all_lines_pass(output: &Output, cases: &[&str]) {
    let text = stdout(output);
    for case in cases {
        assert!(
            text.lines().any(|line| line == format!("PASS {case}")),
            "{case}:\n{text}"
        );
    }
    assert_eq!(
        text.lines().last(),
        Some(format!("{} passed, 0 failed", cases.len()).as_str())
    );
}

#[test]
fn grpcurl_calls_the_example_echo_service() {
    let server = ServerProcess::start(&[]);
    let call = |method: &str, data: &str| -> Vec<Value> {
        let text = stdout(&server.grpcurl(&[
            "-d",
            data,
            "ADDR",
            &format!("grpc.examples.echo.Echo/{method}"),
        ]));
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map(Result::unwrap)
            .collect()
    };
    let messages = |responses: Vec<Value>| -> Vec<String> {
        responses
            .into_iter()
            .map(|r| r["message"].as_str().unwrap().to_owned())
            .collect()
    };

    assert_eq!(messages(call("UnaryEcho", r#"{"message": "hi"}"#)), ["hi"]);
    assert_eq!(
        messages(call("ServerStreamingEcho", r#"{"message": "s"}"#)),
        vec!["s"; 10]
    );
    let two = r#"{"message": "a"} {"message": "b"}"#;
    assert_eq!(messages(call("ClientStreamingEcho", two)), ["b"]);
    assert_eq!(
        messages(call("BidirectionalStreamingEcho", two)),
        ["a", "b"]
    );

    let services = stdout(&server.grpcurl(&["ADDR", "list"]));
    assert!(
        services.lines().any(|l| l == "grpc.examples.echo.Echo"),
        "{services}"
    );
    assert!(
        services.lines().any(|l| l == "grpc.testing.TestService"),
        "{services}"
    );
}
