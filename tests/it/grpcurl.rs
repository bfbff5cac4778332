//! Real grpcurl (1.8.6, from PyPI) against the real server: no proto files,
//! reflection only. Needs grpcurl (`scripts/test.sh` installs it).

use echo_tests::process::{ServerProcess, stdout};
use serde_json::Value;

#[test]
fn grpcurl_lists_describes_and_calls_without_proto_files() {
    let server = ServerProcess::start(&[]);

    let services = stdout(&server.grpcurl(&["ADDR", "list"]));
    for service in [
        "echo.v1.EchoService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} missing from:\n{services}"
        );
    }

    let methods = stdout(&server.grpcurl(&["ADDR", "list", "echo.v1.EchoService"]));
    for method in ["Echo", "ServerStream", "ClientStream", "BidiStream"] {
        assert!(
            methods.contains(&format!("echo.v1.EchoService.{method}")),
            "{methods}"
        );
    }

    let described = stdout(&server.grpcurl(&["ADDR", "describe", "echo.v1.EchoRequest"]));
    assert!(
        described.contains("google.protobuf.Duration delay = 3;"),
        "{described}"
    );
    assert!(
        described.contains(".echo.v1.StreamControl stream = 7;"),
        "{described}"
    );

    let unary = stdout(&server.grpcurl(&[
        "-d",
        r#"{"message": "from grpcurl", "payload": "AAEC"}"#,
        "ADDR",
        "echo.v1.EchoService/Echo",
    ]));
    let unary: Value = serde_json::from_str(&unary).unwrap();
    assert_eq!(unary["message"], "from grpcurl");
    assert_eq!(unary["payload"], "AAEC");
    assert_eq!(unary["instance"], "bin-test");

    let stream = stdout(&server.grpcurl(&[
        "-d",
        r#"{"message": "s", "stream": {"count": 3, "interval": "0.01s"}}"#,
        "ADDR",
        "echo.v1.EchoService/ServerStream",
    ]));
    let sequences: Vec<u64> = serde_json::Deserializer::from_str(&stream)
        .into_iter::<Value>()
        .map(|v| {
            v.unwrap()["sequence"]
                .as_str()
                .map_or(0, |s| s.parse().unwrap())
        })
        .collect();
    assert_eq!(sequences, [0, 1, 2]);

    let failed = server.grpcurl(&[
        "-d",
        r#"{"error": {"code": "STATUS_CODE_PERMISSION_DENIED", "message": "nope"}}"#,
        "ADDR",
        "echo.v1.EchoService/Echo",
    ]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("PermissionDenied") && stderr.contains("nope"),
        "{stderr}"
    );

    let health = stdout(&server.grpcurl(&["ADDR", "grpc.health.v1.Health/Check"]));
    assert!(health.contains("SERVING"), "{health}");
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

#[test]
fn a_switched_off_interop_service_is_not_listed() {
    let server = ServerProcess::start(&["--interop", "false"]);
    let services = stdout(&server.grpcurl(&["ADDR", "list"]));
    assert!(
        !services.contains("grpc.testing"),
        "switched off yet listed:\n{services}"
    );
    assert!(services.contains("echo.v1.EchoService"), "{services}");
}

/// What people type: grpcurl's `-H` sends the fault header with its
/// reflection requests too, and the fault acts on the call under test only
/// (as gRPC's xDS test servers apply `rpc-behavior` in their handlers).
#[test]
fn fault_headers_sent_with_grpcurl_reach_the_call_and_not_reflection() {
    let server = ServerProcess::start(&[]);
    for header in [
        "rpc-behavior: error-code-14",
        "x-echo-behavior: error=UNAVAILABLE",
    ] {
        let output = server.grpcurl(&[
            "-H",
            header,
            "-d",
            "{}",
            "ADDR",
            "grpc.testing.TestService/UnaryCall",
        ]);
        let said = String::from_utf8_lossy(&output.stderr);
        println!("grpcurl -H '{header}': {said}");
        assert!(
            !said.contains("Failed to query for service descriptor"),
            "{said}"
        );
        assert!(said.contains("Code: Unavailable"), "{header}: {said}");
        // Reflection itself, with the header: a list, not a fault.
        let listed = stdout(&server.grpcurl(&["-H", header, "ADDR", "list"]));
        assert!(listed.contains("grpc.testing.TestService"), "{listed}");
    }
}

/// grpcurl resolves each error detail's type through the server's
/// reflection and prints it as JSON: the server serves the `google.rpc`
/// detail types its errors carry (ErrorInfo, RetryInfo, BadRequest).
#[test]
fn grpcurl_prints_every_error_detail_the_server_sends() {
    let server = ServerProcess::start(&[]);
    let details = |data: &str| -> Value {
        let output = server.grpcurl(&[
            "-format-error",
            "-d",
            data,
            "ADDR",
            "echo.v1.EchoService/Echo",
        ]);
        assert!(!output.status.success());
        // With -format-error, the status is JSON on stderr.
        let text = String::from_utf8_lossy(&output.stderr);
        let status: Value =
            serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"));
        println!("{status}");
        let mut details = status["details"].as_array().cloned().unwrap_or_default();
        details.sort_by_key(|detail| detail["@type"].to_string());
        Value::Array(details)
    };
    let requested = details(
        r#"{"error": {"code": "STATUS_CODE_NOT_FOUND", "message": "gone", "details": {"k": "v"}, "retryDelay": "2.5s"}}"#,
    );
    assert_eq!(
        requested,
        serde_json::json!([
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ECHO_REQUESTED_ERROR",
                "domain": "grpc-echo",
                "metadata": {"k": "v"}
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": "2.500s"
            }
        ])
    );
    let invalid = details(r#"{"delay": "-1s"}"#);
    assert_eq!(
        invalid[0]["@type"], "type.googleapis.com/google.rpc.BadRequest",
        "{invalid}"
    );
    assert_eq!(
        invalid[0]["fieldViolations"][0]["field"], "delay",
        "{invalid}"
    );
}
