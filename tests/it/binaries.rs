//! The `echo-server` binary, called by the `echo-client` binary and by real `grpcurl`.

use echo_tests::process::{ServerProcess, echo_client, json_lines, stderr, stdout};
use serde_json::Value;

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

    for encoding in ["gzip", "zstd"] {
        let compressed = json_lines(&server.client(&[
            "--json",
            "--compress",
            encoding,
            "--show-metadata",
            "echo",
            "squeezed",
        ]));
        assert_eq!(compressed[0]["metadata"]["grpc-encoding"], encoding);
        assert_eq!(compressed[1]["message"], "squeezed");
    }

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

    let unreachable = echo_client(&[
        "--addr",
        "127.0.0.1:1",
        "--connect-timeout",
        "1s",
        "echo",
        "x",
    ]);
    assert!(!unreachable.status.success());
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(
        stderr.contains("hint: is a server running there?") && stderr.contains("ECHO_ADDR"),
        "{stderr}"
    );

    // A service or method the server lacks names itself, and the admin
    // service's absence comes with what to do.
    let no_admin = server.client(&["health", "set", "", "serving"]);
    assert!(!no_admin.status.success());
    let stderr = String::from_utf8_lossy(&no_admin.stderr);
    assert!(
        stderr.contains("UNIMPLEMENTED (code 12): unknown service echo.v1.AdminService"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint:") && stderr.contains("--admin"),
        "{stderr}"
    );
    let no_method = server.client(&[
        "--json",
        "call",
        "grpc.testing.TestService/UnimplementedCall",
        "-d",
        "{}",
    ]);
    let error: Value = serde_json::from_slice(&no_method.stderr).unwrap();
    assert_eq!(error["error"]["name"], "UNIMPLEMENTED", "{error}");
}

#[test]
fn every_rpc_is_logged_with_request_id_method_peer_code_and_duration() {
    let server = ServerProcess::start(&[]);
    let failed = server.client(&[
        "--json",
        "--show-metadata",
        "-H",
        "x-request-id:req-123",
        "echo",
        "x",
        "--delay",
        "50ms",
        "--fail-code",
        "ABORTED",
    ]);
    assert!(!failed.status.success());
    let finished = server.wait_for_log("rpc finished");
    assert_eq!(finished["span"]["request_id"], "req-123");
    assert_eq!(finished["span"]["method"], "/echo.v1.EchoService/Echo");
    assert!(
        finished["span"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(finished["fields"]["code"], "Aborted");
    // The call asked for a 50 ms delay: the logged duration covers it.
    let elapsed_ms = finished["fields"]["elapsed_ms"].as_f64().unwrap();
    assert!((50.0..10_000.0).contains(&elapsed_ms), "{elapsed_ms}");

    // Without one, the server makes a request id, returns it, and logs it.
    let answered = json_lines(&server.client(&["--json", "--show-metadata", "echo", "y"]));
    let id = answered[0]["metadata"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 16, "{id}");
    let finished = server.wait_for_log("rpc finished");
    assert_eq!(finished["span"]["request_id"], id.as_str());
}

#[test]
fn bearer_tokens_are_required_and_never_logged() {
    let tokens = echo_tests::pki::write(
        &echo_tests::pki::temp_dir("bin-tokens"),
        "tokens",
        "s3cret-token-value\n",
    );
    let mut server =
        ServerProcess::start_logging(&["--auth-token-file", tokens.to_str().unwrap()], "debug");
    assert!(
        server
            .client(&["--token", "s3cret-token-value", "echo", "in"])
            .status
            .success()
    );
    let refused = server.client(&["--token", "wrong-token-value", "echo", "out"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("UNAUTHENTICATED"));
    assert!(
        server.client(&["health"]).status.success(),
        "health stays open"
    );

    assert!(server.terminate().success());
    let log: Vec<String> = server
        .remaining_log()
        .iter()
        .map(Value::to_string)
        .collect();
    assert!(log.len() > 5, "expected a debug log, got {log:?}");
    for line in &log {
        assert!(
            !line.contains("s3cret-token-value") && !line.contains("wrong-token-value"),
            "{line}"
        );
    }
}

#[test]
fn cli_flips_health_through_the_admin_service() {
    let server = ServerProcess::start(&["--admin"]);
    let set = server.client(&["health", "set", "echo.v1.EchoService", "NOT_SERVING"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let check = server.client(&["health", "echo.v1.EchoService"]);
    assert_eq!(check.status.code(), Some(1), "NOT_SERVING exits 1");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "echo.v1.EchoService: NotServing"
    );
    assert!(
        server
            .client(&["health", "set", "echo.v1.EchoService", "SERVING"])
            .status
            .success()
    );
    assert!(
        server
            .client(&["health", "echo.v1.EchoService"])
            .status
            .success()
    );
}

#[test]
fn rfc862_echo_over_tcp_and_udp() {
    let server = ServerProcess::start(&[
        "--tcp-echo-addr",
        "127.0.0.1:0",
        "--udp-echo-addr",
        "127.0.0.1:0",
    ]);
    let tcp = server.wait_for_log("TCP echo listening")["fields"]["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let udp = server.wait_for_log("UDP echo listening")["fields"]["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    for (command, target) in [("tcp-echo", &tcp), ("udp-echo", &udp)] {
        let echoed =
            json_lines(&server.client(&["--json", command, "--target", target, "plain bytes"]));
        assert_eq!(echoed[0]["message"], "plain bytes", "{command}");
    }
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut server = ServerProcess::start(&["--shutdown-grace", "300ms"]);
    assert!(server.client(&["echo", "x"]).status.success());
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    server.wait_for_log("shutting down: draining calls");
}

/// SIGHUP reloads the certificate of the real binary.
#[test]
fn sighup_reloads_the_certificate() {
    use echo_tests::pki::{self, Ca};
    let dir = pki::temp_dir("bin-sighup");
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let write_leaf = |ca: &Ca| {
        let leaf = ca.server();
        pki::write(&dir, "server.pem", &leaf.cert);
        pki::write(&dir, "server.key", &leaf.key);
    };
    write_leaf(&old_ca);
    let old_pem = pki::write(&dir, "old-ca.pem", old_ca.pem());
    let new_pem = pki::write(&dir, "new-ca.pem", new_ca.pem());
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let server = ServerProcess::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let echo_trusting = |ca: &std::path::Path| {
        server.client(&[
            "--ca",
            ca.to_str().unwrap(),
            "--tls-server-name",
            "localhost",
            "echo",
            "over TLS",
        ])
    };
    assert!(echo_trusting(&old_pem).status.success());

    write_leaf(&new_ca);
    server.signal("HUP");
    server.wait_for_log("SIGHUP: reloading the TLS certificate");
    server.wait_for_log("TLS certificate reloaded");
    let reloaded = echo_trusting(&new_pem);
    assert!(reloaded.status.success(), "{}", stderr(&reloaded));
    assert!(
        !echo_trusting(&old_pem).status.success(),
        "the old certificate is still served"
    );
}

/// Under mTLS, the RPC log line names the client certificate's subject.
#[test]
fn the_rpc_log_line_names_the_client_certificate() {
    use echo_tests::pki::{self, Ca};
    let dir = pki::temp_dir("bin-mtls-log");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server_leaf = server_ca.server();
    let client_leaf = client_ca.client("log-client");
    let path = |name: &str, contents: &str| pki::write(&dir, name, contents).display().to_string();
    let server = ServerProcess::start(&[
        "--tls-cert",
        &path("server.pem", &server_leaf.cert),
        "--tls-key",
        &path("server.key", &server_leaf.key),
        "--tls-client-ca",
        &path("clients.pem", &client_ca.pem()),
    ]);
    let output = server.client(&[
        "--ca",
        &path("ca.pem", &server_ca.pem()),
        "--tls-server-name",
        "localhost",
        "--tls-cert",
        &path("client.pem", &client_leaf.cert),
        "--tls-key",
        &path("client.key", &client_leaf.key),
        "echo",
        "who am I",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let finished = server.wait_for_log("rpc finished");
    let client = finished["span"]["client"].as_str().unwrap_or_default();
    assert!(client.contains("CN=log-client"), "{finished}");
}

/// `--worker-threads 1` runs a single-threaded runtime; more, that many workers.
#[test]
fn worker_threads_set_the_runtime() {
    let threads = |workers: &str| {
        let server = ServerProcess::start(&["--worker-threads", workers]);
        assert!(server.client(&["echo", "x"]).status.success());
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    let single = threads("1");
    let four = threads("4");
    println!("threads: {single} with --worker-threads 1, {four} with 4");
    assert_eq!(
        single, 1,
        "a single-threaded runtime runs on the main thread"
    );
    assert!(four >= 5, "the main thread and four workers: {four}");
}

/// Every flag is an `ECHO_*` variable too: one from each group.
#[test]
fn echo_variables_configure_every_group() {
    let dir = echo_tests::pki::temp_dir("bin-env");
    let tokens = echo_tests::pki::write(&dir, "tokens", "env-token\n");
    // Only the listen address is a flag: the rest comes from the environment.
    let mut command = std::process::Command::new(echo_tests::process::binary("echo-server"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("ECHO_INSTANCE_ID", "from-env") // listen and identity
        .env("ECHO_INTEROP", "false") // services
        .env("ECHO_MAX_DELAY", "1s") // request controls
        .env("ECHO_MAX_MESSAGE_SIZE", "1000") // limits
        .env("ECHO_HANDSHAKE_TIMEOUT", "300ms") // HTTP/2
        .env("ECHO_AUTH_TOKEN_FILE", &tokens) // auth
        .env("ECHO_LOG_FORMAT", "json") // observability (the test reads JSON)
        .env("ECHO_METRICS_ADDR", "127.0.0.1:0");
    let server = ServerProcess::spawn(command).with_metrics();
    let call = |args: &[&str]| {
        let args: Vec<&str> = ["--token", "env-token", "--json"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        server.client(&args)
    };
    let echoed = json_lines(&call(&["echo", "x"]));
    assert_eq!(echoed[0]["instance"], "from-env");
    let too_slow = call(&["echo", "x", "--delay", "2s"]);
    assert!(
        stderr(&too_slow).contains("INVALID_ARGUMENT"),
        "{}",
        stderr(&too_slow)
    );
    let too_big = call(&["echo", "x", "--payload-size", "2000"]);
    assert!(
        stderr(&too_big).contains("RESOURCE_EXHAUSTED"),
        "{}",
        stderr(&too_big)
    );
    let no_token = server.client(&["echo", "x"]);
    assert!(
        stderr(&no_token).contains("UNAUTHENTICATED"),
        "{}",
        stderr(&no_token)
    );
    assert!(server.metric("grpc_server_open_connections", &[]).is_some());
    let mut silent = std::net::TcpStream::connect(server.addr).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut silent, &mut buf)
        .expect("a silent connection is closed after ECHO_HANDSHAKE_TIMEOUT");
    let interop = server.client(&["interop", "--test-case", "empty_unary"]);
    assert!(
        !interop.status.success(),
        "ECHO_INTEROP=false left TestService on"
    );
    drop(server);

    // TLS: the variables point at the files.
    let ca = echo_tests::pki::Ca::new("env CA");
    let leaf = ca.server();
    let mut command = ServerProcess::command("127.0.0.1:0", "tls-env", &[], "info");
    command
        .env(
            "ECHO_TLS_CERT",
            echo_tests::pki::write(&dir, "server.pem", &leaf.cert),
        )
        .env(
            "ECHO_TLS_KEY",
            echo_tests::pki::write(&dir, "server.key", &leaf.key),
        );
    let server = ServerProcess::spawn(command);
    let ca_path = echo_tests::pki::write(&dir, "ca.pem", ca.pem());
    let over_tls = server.client(&[
        "--ca",
        ca_path.to_str().unwrap(),
        "--tls-server-name",
        "localhost",
        "echo",
        "x",
    ]);
    assert!(over_tls.status.success(), "{}", stderr(&over_tls));
}

/// The RPC span and its closing line are at debug: at info there are none.
#[test]
fn rpcs_are_not_logged_at_info() {
    let mut server = ServerProcess::start_logging(&[], "info");
    for _ in 0..3 {
        assert!(server.client(&["echo", "x"]).status.success());
    }
    assert!(server.terminate().success());
    let log = server.remaining_log();
    assert!(
        log.iter()
            .any(|event| event["fields"]["message"] == "stopped"),
        "the log was read to its end: {log:?}"
    );
    assert!(
        !log.iter()
            .any(|event| event["fields"]["message"] == "rpc finished"),
        "{log:?}"
    );
}
