//! Conformance with an independent implementation: our interop client against
//! a Python grpcio interop server, and a Python grpcio client against ours.
//! Needs Python grpcio (`scripts/test.sh` installs it).

use std::process::Command;

use echo_tests::interop;
use echo_tests::process::{
    COMMAND_TIMEOUT, ScriptServer, ServerProcess, output_within, python, script,
};

#[test]
fn our_client_passes_against_the_python_server() {
    let mut command = Command::new(python());
    command.arg(script("interop/server.py"));
    let server = ScriptServer::start(command);
    let cases: Vec<&str> = interop::ALL_CASES
        .into_iter()
        .filter(|case| !interop::NEEDS_COMPRESSED_REQUESTS.contains(case))
        .collect();
    let output = interop::run_client(&server.addr(), &cases.join(","));
    interop::assert_all_passed(&output, &cases);
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
    let mut client = Command::new(python());
    client
        .arg(script("interop/client.py"))
        .arg(server.addr.to_string())
        .arg(cases.join(","));
    let output = output_within(client, b"", COMMAND_TIMEOUT);
    interop::assert_all_passed(&output, &cases);
}
