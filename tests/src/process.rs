//! The project's binaries and outside tools as child processes. Every child
//! and every read from one is bounded in time, so a hang fails its test with a
//! message instead of stalling the run.
//!
//! The binaries are the ones beside the test binary (`target/<profile>/`),
//! built on first use (`cargo build --workspace --bins`; a link and no more
//! when the tests are built, as this package's dependencies resolve every
//! shared crate's features as the binaries' build does), so plain `cargo
//! test` needs nothing else. `scripts/test.sh` builds them first, and installs
//! grpcurl and Python grpcio, pointing `GRPCURL` and `ECHO_TEST_PYTHON` at
//! them; `ECHO_BIN_DIR` points elsewhere. A missing tool fails the test that
//! needs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a command run to completion may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a log line or a process exit is waited for.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The deadline given to CLI calls that set none themselves.
pub const CLI_CALL_TIMEOUT: &str = "10s";

/// The workspace's root directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package is in the workspace root")
}

/// Where the binaries are: `ECHO_BIN_DIR`, or the profile directory of the
/// target directory these tests were built in, after building them there.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("ECHO_BIN_DIR") {
            return dir.into();
        }
        // target/<profile>/deps/<this test> -> target, <profile>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps");
        let release = profile_dir.ends_with("release");
        let target_dir = profile_dir.parent().expect("target/<profile>");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--workspace", "--bins", "--quiet", "--target-dir"])
            .arg(target_dir)
            .current_dir(workspace_root());
        if release {
            build.arg("--release");
        }
        let output = output_within(build, b"", Duration::from_secs(900));
        assert!(
            output.status.success(),
            "building the binaries failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        profile_dir.to_owned()
    })
}

/// The path of one of the project's binaries.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// grpcurl, as installed by `scripts/test.sh`.
pub fn grpcurl() -> PathBuf {
    tool("GRPCURL", "grpcurl")
}

/// The Python with grpcio installed (by `scripts/test.sh`).
pub fn python() -> PathBuf {
    tool("ECHO_TEST_PYTHON", "Python grpcio")
}

fn tool(variable: &str, what: &str) -> PathBuf {
    let path: PathBuf = std::env::var_os(variable)
        .unwrap_or_else(|| {
            panic!(
                "{variable} is not set: run the suite with scripts/test.sh, which installs {what}"
            )
        })
        .into();
    assert!(
        path.is_file(),
        "{variable}={} does not exist",
        path.display()
    );
    path
}

/// A script under `scripts/`.
pub fn script(path: &str) -> PathBuf {
    workspace_root().join("scripts").join(path)
}

/// Runs `command` to completion with `stdin`, killing it after `limit`.
/// Panics when it does not finish in time, with what it printed so far.
pub fn output_within(mut command: Command, stdin: &[u8], limit: Duration) -> Output {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {what}: {err}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = output_of(child, &what, limit);
    let _ = writer.join();
    output
}

/// Starts `command` with its output piped, for [`output_of`] to collect.
pub fn spawn_piped(mut command: Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"))
}

/// What `child` (`what`, for messages) printed, once it exits, killing it
/// after `limit`. Panics when it does not finish in time.
pub fn output_of(mut child: Child, what: &str, limit: Duration) -> Output {
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let Some(status) = wait_within(&mut child, limit) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what} did not finish within {limit:?}; it printed:\n{}{}",
            String::from_utf8_lossy(&stdout.join().unwrap()),
            String::from_utf8_lossy(&stderr.join().unwrap())
        );
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// The exit status of `child` once it exits, or `None` after `limit`.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A server of another implementation started from a script that prints
/// `listening PORT` once it serves; killed when dropped.
pub struct ScriptServer {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl ScriptServer {
    /// Starts `command` and waits (within [`EVENT_TIMEOUT`]) for its first line.
    pub fn start(mut command: Command) -> Self {
        let what = format!("{command:?}");
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {what}: {err}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(EVENT_TIMEOUT).unwrap_or_default();
        let port = line
            .strip_prefix("listening ")
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what} did not start: {line:?}"));
        Self { child, port }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `echo-client` with `args` (given a deadline per call unless `args`
/// set `--timeout`).
pub fn echo_client(args: &[&str]) -> Output {
    echo_client_with_stdin(args, "")
}

/// [`echo_client()`], with `stdin`.
pub fn echo_client_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(binary("echo-client"));
    if !args.contains(&"--timeout") {
        command.args(["--timeout", CLI_CALL_TIMEOUT]);
    }
    command.args(args);
    output_within(command, stdin.as_bytes(), COMMAND_TIMEOUT)
}

/// An `echo-server` process on a free loopback port, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its metrics are served, after [`ServerProcess::with_metrics`].
    pub metrics_addr: Option<SocketAddr>,
    /// Its resident memory once listening, in KiB.
    pub rss_at_start: u64,
    /// Each log event, with when it was read.
    log: mpsc::Receiver<(Instant, Value)>,
}

impl ServerProcess {
    /// Starts with `extra_args` and a debug log of every RPC.
    pub fn start(extra_args: &[&str]) -> Self {
        Self::start_logging(extra_args, "info,echo_server=debug")
    }

    /// Starts with `RUST_LOG=rust_log`.
    pub fn start_logging(extra_args: &[&str], rust_log: &str) -> Self {
        Self::spawn(Self::command(
            "127.0.0.1:0",
            "bin-test",
            extra_args,
            rust_log,
        ))
    }

    /// Starts listening on `listen` (e.g. again on the port of a stopped one).
    pub fn start_at(listen: &str, extra_args: &[&str]) -> Self {
        Self::spawn(Self::command(listen, "bin-test", extra_args, "info"))
    }

    /// Starts listening on `listen`, reporting `instance` as its instance id.
    pub fn start_named(listen: &str, instance: &str) -> Self {
        Self::spawn(Self::command(listen, instance, &[], "info"))
    }

    /// The command that starts a server; for tests that need to change more.
    pub fn command(listen: &str, instance: &str, extra_args: &[&str], rust_log: &str) -> Command {
        let mut command = Command::new(binary("echo-server"));
        command
            .args([
                "--listen",
                listen,
                "--log-format",
                "json",
                "--instance-id",
                instance,
            ])
            .args(extra_args)
            .env("RUST_LOG", rust_log);
        command
    }

    /// Starts `command` (an `echo-server` logging JSON), and waits until it listens.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("log line is not JSON: {line}"));
                if tx.send((Instant::now(), event)).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics_addr: None,
            rss_at_start: 0,
            log,
        };
        let listening = server.wait_for_log("listening");
        server.addr = listening["fields"]["addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        server.rss_at_start = server.rss_kib().0;
        server
    }

    /// Learns where the metrics are served; for a server started with
    /// `--metrics-addr 127.0.0.1:0`, right after it starts.
    pub fn with_metrics(mut self) -> Self {
        let listening = self.wait_for_log("metrics listening");
        self.metrics_addr = Some(
            listening["fields"]["addr"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        );
        self
    }

    /// The value of the one series `name` whose labels include `labels`, from
    /// the metrics endpoint (`None` when there is no such series yet).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let addr = self
            .metrics_addr
            .expect("start with --metrics-addr and call with_metrics");
        let text = http_get(addr, "/metrics");
        let matching: Vec<f64> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
                (series_name == name
                    && labels
                        .iter()
                        .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse().unwrap())
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches several series"
        );
        matching.first().copied()
    }

    /// The next log event whose message is `message` (earlier ones are consumed).
    pub fn wait_for_log(&self, message: &str) -> Value {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, event) = self
                .log
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {message:?} log line within {EVENT_TIMEOUT:?}"));
            if event["fields"]["message"] == message {
                return event;
            }
        }
    }

    /// Every log event written so far and not read yet, each with when it
    /// was read (within a millisecond of its writing: the log is a pipe).
    pub fn log_so_far(&self) -> Vec<(Instant, Value)> {
        self.log.try_iter().collect()
    }

    /// Every log event not read yet, up to the end of the process's output.
    pub fn remaining_log(&self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Ok((_, event)) = self.log.recv_timeout(EVENT_TIMEOUT) {
            events.push(event);
        }
        events
    }

    /// Runs `echo-client --addr <this server>` with `args`.
    pub fn client(&self, args: &[&str]) -> Output {
        self.client_with_stdin(args, "")
    }

    /// [`ServerProcess::client`], with `stdin`.
    pub fn client_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let addr = self.addr.to_string();
        let args: Vec<&str> = ["--addr", addr.as_str()]
            .iter()
            .chain(args)
            .copied()
            .collect();
        echo_client_with_stdin(&args, stdin)
    }

    /// Runs grpcurl (plaintext) with `args`, `ADDR` in them replaced by this server's address.
    pub fn grpcurl(&self, args: &[&str]) -> Output {
        let addr = self.addr.to_string();
        let mut command = Command::new(grpcurl());
        command
            .args(["-plaintext", "-max-time", "30"])
            .args(args.iter().map(|a| a.replace("ADDR", &addr)));
        output_within(command, b"", COMMAND_TIMEOUT)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// `(current, peak)` resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // Linux reports in USER_HZ, 100 per second on every architecture it runs on.
        Duration::from_millis(ticks * 10)
    }

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let mut kill = Command::new("kill");
        kill.arg(format!("-{signal}")).arg(&pid);
        let sent = output_within(kill, b"", EVENT_TIMEOUT);
        assert!(sent.status.success(), "kill -{signal} {pid} failed");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// The exit status, once the process has exited (within [`EVENT_TIMEOUT`]).
    pub fn wait(&mut self) -> ExitStatus {
        wait_within(&mut self.child, EVENT_TIMEOUT)
            .unwrap_or_else(|| panic!("echo-server did not exit within {EVENT_TIMEOUT:?}"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET path` on `addr` (plain HTTP/1.1), within [`EVENT_TIMEOUT`].
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut socket = std::net::TcpStream::connect_timeout(&addr, EVENT_TIMEOUT).unwrap();
    socket.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The stdout of a command that must have succeeded.
pub fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The stdout of a command that must have succeeded, one JSON value per line.
pub fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The stderr of a command, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
