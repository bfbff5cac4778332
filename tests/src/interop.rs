//! Running `echo-client interop` and reading its verdicts.

use std::process::Output;

use crate::process::{echo_client, stdout};

/// Every interop case `echo-client interop --test-case all` runs: what the
/// tests expect it to pass.
pub const ALL_CASES: [&str; 20] = [
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

/// Cases a server needs the CompressedRequest feature for; grpcio cannot offer
/// it (a handler sees neither the message flag nor grpc-encoding).
pub const NEEDS_COMPRESSED_REQUESTS: [&str; 2] =
    ["client_compressed_unary", "client_compressed_streaming"];

/// Runs `echo-client interop` with `cases` against the server at `addr`.
pub fn run_client(addr: &str, cases: &str) -> Output {
    echo_client(&[
        "--addr",
        addr,
        "interop",
        "--test-case",
        cases,
        "--soak-iterations",
        "5",
    ])
}

/// Every case of `cases` printed `PASS <case>` (then anything) and the tally says so.
pub fn assert_all_passed(output: &Output, cases: &[&str]) {
    let text = stdout(output);
    for case in cases {
        assert!(
            text.lines()
                .any(|line| line == format!("PASS {case}")
                    || line.starts_with(&format!("PASS {case} "))),
            "{case} did not pass:\n{text}"
        );
    }
    let tally = format!("{} passed, 0 failed", cases.len());
    assert_eq!(text.lines().last(), Some(tally.as_str()), "{text}");
}
