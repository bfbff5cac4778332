//! The client across servers' drains, with real processes and `echo-client
//! bench`: calls a draining server refused are sent again transparently, so
//! a rolling restart costs no call while any server is up, with or without a
//! retry policy, and nothing is ever INTERNAL.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use echo_tests::process::{
    COMMAND_TIMEOUT, EVENT_TIMEOUT, ServerProcess, binary, output_of, spawn_piped,
};
use serde_json::Value;

/// Starts `echo-client bench` (closed loop, no warmup) with `args` before `bench`.
fn start_bench(global: &[&str], bench: &[&str]) -> std::process::Child {
    let mut command = Command::new(binary("echo-client"));
    command
        .args(global)
        .args(["--timeout", "10s", "--json", "bench", "--warmup", "0s"])
        .args(bench);
    spawn_piped(command)
}

fn report(bench: std::process::Child) -> Value {
    let output = output_of(bench, "echo-client bench", COMMAND_TIMEOUT);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A server with its metrics endpoint, on `listen`, reporting `instance`.
fn server(listen: &str, instance: &str) -> ServerProcess {
    ServerProcess::spawn(ServerProcess::command(
        listen,
        instance,
        &["--shutdown-grace", "1s", "--metrics-addr", "127.0.0.1:0"],
        "info",
    ))
    .with_metrics()
}

/// Waits until `server` has answered `calls` Echo calls since it started.
fn wait_for_calls(server: &ServerProcess, calls: f64) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while server
        .metric(
            "grpc_server_handled_total",
            &[("grpc_method", "Echo"), ("grpc_code", "OK")],
        )
        .unwrap_or(0.0)
        < calls
    {
        assert!(
            Instant::now() < deadline,
            "{} answered fewer than {calls} calls",
            server.addr
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The run of issue #16: 4 connections x 16 calls, SIGTERM mid-run, twenty
/// times. Calls the draining server refused are sent again (and, the server
/// gone, fail with UNAVAILABLE); none is INTERNAL.
#[test]
fn a_single_server_drain_is_never_internal() {
    let mut errors = BTreeMap::<String, u64>::new();
    let (mut calls, mut transparent) = (0, 0);
    for _ in 0..20 {
        let mut server = server("127.0.0.1:0", "drained");
        let addr = server.addr.to_string();
        let bench = start_bench(
            &["--addr", &addr],
            &[
                "--connections",
                "4",
                "--concurrency",
                "16",
                "--duration",
                "1500ms",
            ],
        );
        wait_for_calls(&server, 300.0);
        assert!(server.terminate().success(), "unclean exit");
        let report = report(bench);
        calls += report["calls"].as_u64().unwrap();
        transparent += report["transparent_retries"].as_u64().unwrap();
        for (code, count) in report["errors"].as_object().unwrap() {
            *errors.entry(code.clone()).or_default() += count.as_u64().unwrap();
        }
    }
    println!("20 drains: {calls} calls, errors {errors:?}, {transparent} sent again transparently");
    assert!(
        errors.keys().all(|code| code == "Unavailable"),
        "errors other than UNAVAILABLE: {errors:?}"
    );
    // GOAWAY refuses the calls that reach the server after it: they were
    // sent again, not lost as errors.
    assert!(transparent >= 1, "no call was sent again in 20 drains");
}

/// Three servers behind the balanced client, each restarted in turn (SIGTERM,
/// wait for its exit, start again on its address) while `echo-client bench`
/// runs: no call fails, with or without a retry policy.
#[test]
fn a_rolling_restart_loses_no_call() {
    for retries in ["0", "3"] {
        let mut servers: Vec<ServerProcess> = (1..=3)
            .map(|i| server(&format!("127.0.0.{i}:0"), &format!("rolling-{i}")))
            .collect();
        let list = servers
            .iter()
            .map(|server| server.addr.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let bench = start_bench(
            &["--addr", &list, "--retries", retries],
            &[
                "--connections",
                "2",
                "--concurrency",
                "4",
                "--duration",
                "10s",
            ],
        );
        wait_for_calls(&servers[0], 200.0);
        for server in &mut servers {
            let addr = server.addr.to_string();
            let instance = format!("rolling-{}", &addr[8..9]);
            assert!(server.terminate().success(), "unclean exit of {addr}");
            *server = self::server(&addr, &instance);
            // Back in the rotation before the next one goes.
            wait_for_calls(server, 100.0);
        }
        let report = report(bench);
        println!(
            "rolling restart, --retries {retries}: {} calls, errors {}, {} sent again transparently, {} by the retry policy, answered by {}",
            report["calls"],
            report["errors"],
            report["transparent_retries"],
            report["retries"],
            report["instances"]
        );
        assert_eq!(
            report["errors"],
            serde_json::json!({}),
            "--retries {retries}: {report}"
        );
        // Three drains under load: the calls each refused went elsewhere.
        assert!(
            report["transparent_retries"].as_u64().unwrap() >= 1,
            "--retries {retries}: no call was sent again: {report}"
        );
    }
}
