//! `echo-client call` against our own server process, for what needs its
//! controls: a server that closes mid-stream, and calls over the other
//! protocols. (The universal client against servers we did not write is in
//! `universal_client.rs`.)

use echo_tests::process::ServerProcess;
use serde_json::Value;

fn lines(stdout: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_server_that_closes_mid_stream_ends_the_call_with_what_came_before_it() {
    let server = ServerProcess::start(&[]);
    let output = server.client(&[
        "--json",
        "call",
        "echo.v1.EchoService/ServerStream",
        "-d",
        r#"{"message":"x","stream":{"count":3,"interval":"0.1s"},"connection":{"action":"CONNECTION_ACTION_CLOSE"}}"#,
    ]);
    // The messages that arrived before the close are printed, then the
    // status. (The last may be lost with the connection: a reset drops
    // what the client had not read yet.)
    let printed = lines(&output.stdout).len();
    assert!((2..=3).contains(&printed), "{output:?}");
    assert_eq!(output.status.code(), Some(64 + 14));
    let error: Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(error["error"]["name"], "UNAVAILABLE", "{error}");
}

#[test]
fn calls_go_over_every_protocol_with_metadata_shown() {
    let server = ServerProcess::start(&[]);
    for protocol in [
        &["--protocol", "grpc"][..],
        &["--protocol", "grpc-web"],
        &["--protocol", "connect"],
        &["--protocol", "connect", "--http1"],
    ] {
        let mut args = protocol.to_vec();
        args.extend([
            "--json",
            "--show-metadata",
            "-H",
            "x-trace: abc",
            "call",
            "echo.v1.EchoService/Echo",
            "-d",
            r#"{"message":"hi","echoMetadata":"METADATA_ECHO_HEADERS"}"#,
        ]);
        let output = server.client(&args);
        assert!(output.status.success(), "{protocol:?}: {output:?}");
        let printed = lines(&output.stdout);
        let answer = printed
            .iter()
            .find(|line| line.get("message").is_some())
            .unwrap_or_else(|| panic!("{protocol:?}: {printed:?}"));
        assert_eq!(answer["message"], "hi");
        // The request's header came back, as echo_metadata asked.
        let headers = printed
            .iter()
            .find_map(|line| line.get("headers"))
            .unwrap_or_else(|| panic!("{protocol:?}: no headers in {printed:?}"));
        assert_eq!(headers["x-trace"], "abc", "{protocol:?}: {headers}");
    }
}
