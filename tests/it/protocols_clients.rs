//! Clients we did not write against the real server. The official Connect
//! clients for Node (`@connectrpc/connect-node`, code from
//! `@bufbuild/protoc-gen-es`): every echo.v1 RPC shape over each of their
//! transports (Connect in protobuf and JSON, GET, gRPC, gRPC-Web), over
//! HTTP/1.1 where the transport allows and HTTP/2. And `curl`, exactly as
//! the protocols guide shows it. Needs Node, the npm packages `scripts/test.sh`
//! installs, and curl.

use std::process::Command;

use echo_tests::pki::temp_dir;
use echo_tests::process::{COMMAND_TIMEOUT, ServerProcess, output_within, stdout};
use serde_json::Value;

#[test]
fn connect_clients_call_every_shape_over_every_transport() {
    let server = ServerProcess::start(&["--metrics-addr", "127.0.0.1:0"]).with_metrics();
    let project = echo_tests::node::project(&temp_dir("connect-clients"));
    let mut node = Command::new("node");
    node.current_dir(&project)
        .arg("connect_clients.mjs")
        .arg(format!("http://{}", server.addr));
    let output = output_within(node, b"", COMMAND_TIMEOUT);
    let printed = stdout(&output);
    let results: Value =
        serde_json::from_str(&printed).unwrap_or_else(|err| panic!("{err}: {printed}"));
    let results = results.as_object().expect("an object of transports");
    assert_eq!(results.len(), 13, "{printed}");
    let mut cells = 0;
    for (transport, cases) in results {
        let cases = cases.as_object().expect("an object of cases");
        assert_eq!(cases.len(), 8, "{transport}: {printed}");
        for (case, outcome) in cases {
            let outcome = outcome.as_str().expect("an outcome");
            if transport.starts_with("connect GET") && case == "large" {
                // 100 KB in the query of a GET: over the header-size limit,
                // refused with 431 (or the connection closed while the
                // client was still writing).
                assert!(
                    outcome.contains("431")
                        || outcome.contains("EPIPE")
                        || outcome.contains("ECONNRESET"),
                    "{transport} {case}: {outcome}"
                );
            } else {
                // Bidi streams over HTTP/1.1 run half-duplex: the requests, then the answers.
                assert_eq!(outcome, "ok", "{transport} {case}");
            }
            cells += 1;
        }
    }
    assert_eq!(cells, 13 * 8);
    // The server itself ended every call of the header-only case (the other
    // deadline case's calls end by the clients' own timers, often first).
    let deadline_exceeded = server
        .metric(
            "grpc_server_handled_total",
            &[("grpc_method", "Echo"), ("grpc_code", "DeadlineExceeded")],
        )
        .unwrap_or(0.0);
    println!("the server ended {deadline_exceeded} Echo calls at their deadline");
    assert!(deadline_exceeded >= 13.0, "{deadline_exceeded}");
}

/// The protocols guide's curl calls of Echo, as they are written there (what
/// they print is checked by the docs test; here, that curl's own
/// `--fail-with-body` sees no error for the two that succeed).
#[test]
fn curl_calls_with_plain_json_as_the_protocols_guide_shows() {
    let server = ServerProcess::start(&[]);
    let guide =
        std::fs::read_to_string(echo_tests::process::workspace_root().join("docs/protocols.md"))
            .unwrap();
    let commands: Vec<&str> = guide
        .lines()
        .filter_map(|line| line.strip_prefix("$ "))
        .filter(|line| {
            line.starts_with("curl ")
                && line.contains("/echo.v1.EchoService/")
                && !line.contains(r#""error""#)
        })
        .collect();
    assert_eq!(commands.len(), 2, "the guide's curl commands: {commands:?}");
    for command in commands {
        let command = command.replace("127.0.0.1:50051", &server.addr.to_string());
        let output = output_within(
            {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("{command} --silent --show-error --fail-with-body"));
                sh
            },
            b"",
            COMMAND_TIMEOUT,
        );
        let printed = stdout(&output);
        let answer: Value = serde_json::from_str(&printed)
            .unwrap_or_else(|err| panic!("{command}: {err}: {printed}"));
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{command}: {answer}"
        );
        assert!(answer["instance"].is_string(), "{command}: {answer}");
    }
}
