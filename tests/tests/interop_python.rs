//! Conformance with an independent implementation: our interop client against
//! a Python grpcio interop server, and a Python grpcio client against ours.
//! Needs Python grpcio (`scripts/test.sh` installs it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use echo_tests::interop;
use echo_tests::process::{
    COMMAND_TIMEOUT, EVENT_TIMEOUT, ServerProcess, output_within, python, script,
};

/// The Python interop server on a free loopback port, stopped when dropped.
struct PythonServer {
    child: Child,
    port: u16,
}

impl PythonServer {
    fn start() -> Self {
        let mut child = Command::new(python())
            .arg(script("interop/server.py"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // The first line, within a bound: a server that never starts fails here.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(EVENT_TIMEOUT).unwrap_or_default();
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
    let cases: Vec<&str> = interop::ALL_CASES
        .into_iter()
        .filter(|case| !interop::NEEDS_COMPRESSED_REQUESTS.contains(case))
        .collect();
    let output = interop::run_client(&format!("127.0.0.1:{}", server.port), &cases.join(","));
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
