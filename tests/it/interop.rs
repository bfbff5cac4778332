//! Conformance: our interop client against our interop server (the Python
//! implementation is in `interop_python.rs`).

use echo_tests::interop::{self, ALL_CASES};
use echo_tests::process::ServerProcess;

#[test]
fn our_client_passes_every_case_against_our_server() {
    let server = ServerProcess::start(&[]);
    let output = interop::run_client(&server.addr.to_string(), "all");
    interop::assert_all_passed(&output, &ALL_CASES);
}

#[test]
fn interop_client_fails_loudly_on_a_server_without_the_service() {
    let server = ServerProcess::start(&["--interop", "false"]);
    let output = interop::run_client(&server.addr.to_string(), "empty_unary,large_unary");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("FAIL empty_unary"), "{text}");
    assert_eq!(text.lines().last(), Some("0 passed, 2 failed"), "{text}");
}
