//! The `echo-server` binary, called by the `echo-client` binary and by real `grpcurl`.
//!
//! `scripts/test.sh` builds the binaries and installs grpcurl, then points
//! `ECHO_BIN_DIR` and `GRPCURL` at them. A missing tool fails the test.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ECHO_BIN_DIR") {
        return dir.into();
    }
    // target/<profile>/deps/<this test> -> target/<profile>
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

fn grpcurl() -> PathBuf {
    let path: PathBuf = std::env::var_os("GRPCURL")
        .expect("GRPCURL is not set: run the suite with scripts/test.sh, which installs grpcurl")
        .into();
    assert!(path.is_file(), "GRPCURL={} does not exist", path.display());
    path
}

/// An `echo-server` process on a free loopback port, killed when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: mpsc::Receiver<Value>,
}

impl ServerProcess {
    fn start(extra_args: &[&str]) -> Self {
        let mut child = Command::new(binary("echo-server"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--instance-id",
                "bin-test",
            ])
            .args(extra_args)
            .env("RUST_LOG", "info,echo_server=debug")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("log line is not JSON: {line}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let listening = server.wait_for_log("listening");
        server.addr = listening["fields"]["addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        server
    }

    fn wait_for_log(&self, message: &str) -> Value {
        loop {
            let event = self
                .log
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no {message:?} log line within 10 s"));
            if event["fields"]["message"] == message {
                return event;
            }
        }
    }

    fn client(&self, args: &[&str]) -> Output {
        self.client_with_stdin(args, "")
    }

    fn client_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(binary("echo-client"))
            .arg("--addr")
            .arg(self.addr.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn grpcurl(&self, args: &[&str]) -> Output {
        let addr = self.addr.to_string();
        Command::new(grpcurl())
            .arg("-plaintext")
            .args(args.iter().map(|a| a.replace("ADDR", &addr)))
            .output()
            .unwrap()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        for _ in 0..1000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("echo-server did not exit within 10 s of SIGTERM");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn cli_calls_every_rpc() {
    let server = ServerProcess::start(&[]);

    let echo = json_lines(&server.client(&["--json", "echo", "hello", "--payload-size", "16"]));
    assert_eq!(echo[0]["message"], "hello");
    assert_eq!(echo[0]["payload_bytes"], 16);
    assert_eq!(echo[0]["instance"], "bin-test");

    let text = stdout(&server.client(&["echo", "plain"]));
    assert!(text.starts_with("plain  [seq 0"), "{text}");

    let stream = json_lines(&server.client(&[
        "--json",
        "server-stream",
        "tick",
        "--count",
        "3",
        "--interval",
        "10ms",
        "--response-size",
        "8",
    ]));
    assert_eq!(stream.len(), 3);
    assert_eq!(stream[2]["sequence"], 2);
    assert_eq!(stream[2]["payload_bytes"], 8);

    let summary = json_lines(&server.client(&["--json", "client-stream", "a", "b", "c"]));
    assert_eq!(summary[0]["count"], 3);
    assert_eq!(summary[0]["messages"], serde_json::json!(["a", "b", "c"]));

    let from_stdin = json_lines(&server.client_with_stdin(&["--json", "client-stream"], "x\ny\n"));
    assert_eq!(from_stdin[0]["count"], 2);

    let bidi = json_lines(&server.client_with_stdin(&["--json", "bidi"], "one\ntwo\nthree\n"));
    let messages: Vec<_> = bidi
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["one", "two", "three"]);

    let echoed = json_lines(&server.client(&[
        "--json",
        "-H",
        "x-team:payments",
        "--show-metadata",
        "echo",
        "m",
        "--echo-metadata",
        "both",
    ]));
    assert_eq!(echoed[0]["metadata"]["x-team"], "payments");

    let health = stdout(&server.client(&["health"]));
    assert_eq!(health.trim(), "(server): Serving");
    let health = json_lines(&server.client(&["--json", "health", "echo.v1.EchoService"]));
    assert_eq!(health[0]["status"], "Serving");
}

#[test]
fn cli_reports_errors_on_stderr_with_a_non_zero_exit() {
    let server = ServerProcess::start(&[]);

    let failed = server.client(&[
        "echo",
        "x",
        "--fail-code",
        "NOT_FOUND",
        "--fail-message",
        "gone",
        "--fail-detail",
        "k=v",
    ]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("NOT_FOUND (code 5): gone"), "{stderr}");
    assert!(stderr.contains("ECHO_REQUESTED_ERROR"), "{stderr}");

    let invalid = server.client(&["--json", "server-stream", "x", "--count", "999999"]);
    assert!(!invalid.status.success());
    let error: Value = serde_json::from_slice(&invalid.stderr).unwrap();
    assert_eq!(error["error"]["name"], "INVALID_ARGUMENT");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stream.count")
    );

    let late = server.client(&["--timeout", "100ms", "echo", "x", "--delay", "5s"]);
    assert!(!late.status.success());
    assert!(String::from_utf8_lossy(&late.stderr).contains("DEADLINE_EXCEEDED"));

    let health = server.client(&["health", "no.such.Service"]);
    assert!(!health.status.success());
    assert!(String::from_utf8_lossy(&health.stderr).contains("NOT_FOUND"));

    let usage = server.client(&["echo", "--fail-code", "NOPE"]);
    assert_eq!(usage.status.code(), Some(2), "clap usage errors exit 2");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("unknown status code"));

    let unreachable = Command::new(binary("echo-client"))
        .args([
            "--addr",
            "127.0.0.1:1",
            "--connect-timeout",
            "1s",
            "echo",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot connect"));
}

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
fn every_rpc_is_logged_with_method_peer_code_and_duration() {
    let server = ServerProcess::start(&[]);
    assert!(
        !server
            .client(&["echo", "x", "--fail-code", "ABORTED"])
            .status
            .success()
    );
    let finished = server.wait_for_log("rpc finished");
    assert_eq!(finished["span"]["method"], "/echo.v1.EchoService/Echo");
    assert!(
        finished["span"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(finished["fields"]["code"], "Aborted");
    assert!(finished["fields"]["elapsed_ms"].as_f64().unwrap() >= 0.0);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut server = ServerProcess::start(&["--shutdown-grace", "300ms"]);
    assert!(server.client(&["echo", "x"]).status.success());
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    server.wait_for_log("shutting down: draining calls");
}
