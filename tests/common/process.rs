//! Runs the project's binaries and the external tools the tests call.
//!
//! `scripts/test.sh` builds the binaries and installs grpcurl and Python grpcio,
//! then points `ECHO_BIN_DIR`, `GRPCURL` and `ECHO_TEST_PYTHON` at them. A
//! missing tool fails the test that needs it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub fn bin_dir() -> PathBuf {
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

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn grpcurl() -> PathBuf {
    let path: PathBuf = std::env::var_os("GRPCURL")
        .expect("GRPCURL is not set: run the suite with scripts/test.sh, which installs grpcurl")
        .into();
    assert!(path.is_file(), "GRPCURL={} does not exist", path.display());
    path
}

/// An `echo-server` process on a free loopback port, killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    log: mpsc::Receiver<Value>,
}

impl ServerProcess {
    pub fn start(extra_args: &[&str]) -> Self {
        Self::start_logging(extra_args, "info,echo_server=debug")
    }

    /// Starts with `RUST_LOG=rust_log`.
    pub fn start_logging(extra_args: &[&str], rust_log: &str) -> Self {
        Self::spawn("127.0.0.1:0", "bin-test", extra_args, rust_log)
    }

    /// Starts listening on `listen` (e.g. again on the port of a stopped one).
    pub fn start_at(listen: &str, extra_args: &[&str]) -> Self {
        Self::spawn(listen, "bin-test", extra_args, "info")
    }

    /// Starts listening on `listen`, reporting `instance` as its instance id.
    pub fn start_named(listen: &str, instance: &str) -> Self {
        Self::spawn(listen, instance, &[], "info")
    }

    fn spawn(listen: &str, instance: &str, extra_args: &[&str], rust_log: &str) -> Self {
        let mut child = Command::new(binary("echo-server"))
            .args([
                "--listen",
                listen,
                "--log-format",
                "json",
                "--instance-id",
                instance,
            ])
            .args(extra_args)
            .env("RUST_LOG", rust_log)
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

    pub fn wait_for_log(&self, message: &str) -> Value {
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

    /// Every log event not read yet, up to the end of the process's output.
    pub fn remaining_log(&self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Ok(event) = self.log.recv_timeout(Duration::from_secs(10)) {
            events.push(event);
        }
        events
    }

    pub fn client(&self, args: &[&str]) -> Output {
        self.client_with_stdin(args, "")
    }

    pub fn client_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
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

    pub fn grpcurl(&self, args: &[&str]) -> Output {
        let addr = self.addr.to_string();
        Command::new(grpcurl())
            .arg("-plaintext")
            .args(args.iter().map(|a| a.replace("ADDR", &addr)))
            .output()
            .unwrap()
    }

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

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid} failed");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// The exit status, once the process has exited (within 10 s).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        for _ in 0..1000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("echo-server did not exit within 10 s");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

pub fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The Python with grpcio installed (by scripts/test.sh).
pub fn python() -> PathBuf {
    let path: PathBuf = std::env::var_os("ECHO_TEST_PYTHON")
        .expect("ECHO_TEST_PYTHON is not set: run the suite with scripts/test.sh, which installs grpcio")
        .into();
    assert!(
        path.is_file(),
        "ECHO_TEST_PYTHON={} does not exist",
        path.display()
    );
    path
}

/// A script under `scripts/interop/`.
pub fn interop_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/interop")
        .join(name)
}
