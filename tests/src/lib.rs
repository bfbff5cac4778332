//! Helpers of grpc-echo's integration tests (the tests are in `tests/`).
//!
//! # Layout
//!
//! - This module: [`TestServer`], an in-process server on `127.0.0.1:0`, and
//!   the helpers every test file shares (requests, waiting, reading streams).
//! - [`process`]: the real binaries as child processes, and outside tools
//!   (grpcurl, Python), every one of them bounded in time.
//! - [`interop`]: running `echo-client interop` and reading its verdicts.
//! - [`h2raw`]: hand-made HTTP/2 frames, for what a client library will not send.
//! - [`browser`]: a real headless Chromium driven over WebDriver.
//! - [`node`]: the official Connect clients for Node, with code generated
//!   from our protos by protoc-gen-es.
//! - [`pki`]: certificate authorities and certificates made at run time, and
//!   temporary files.
//!
//! Tests that call tools from outside the Rust toolchain are built only with
//! the `external-tools` feature, which `scripts/test.sh` turns on after
//! installing the tools; plain `cargo test` runs the rest.

pub mod browser;
pub mod h2raw;
pub mod interop;
pub mod node;
pub mod pki;
pub mod process;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use echo_client::EchoClient;
use echo_client::proto::{EchoRequest, EchoResponse, StreamControl};
use echo_server::{Config, ServeError, Server, Stats, TlsReload};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Instance id the test servers report.
pub const INSTANCE: &str = "test-instance";

/// The default configuration, changed by `edit`.
pub fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    edit(&mut config);
    config
}

/// A server running `echo_server::Server::run` on `127.0.0.1:0`.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its live counters.
    pub stats: Arc<Stats>,
    /// Reloads its TLS certificate.
    pub tls_reload: TlsReload,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// A server with the default configuration.
    pub async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    /// A server with `config` (its instance id set to [`INSTANCE`]).
    pub async fn with_config(mut config: Config) -> Self {
        config.listen.instance_id = Some(INSTANCE.to_owned());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(config);
        let stats = server.stats();
        let tls_reload = server.tls_reload();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            stats,
            tls_reload,
            shutdown: Some(tx),
            handle,
        }
    }

    /// `http://` and its address.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A plain tonic channel, for generated clients and raw calls.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.uri())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A client library connection with no options.
    pub async fn client(&self) -> EchoClient {
        EchoClient::builder(self.uri())
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap()
    }

    /// Starts the graceful shutdown; `join` waits for it to finish.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the server to stop; its result.
    pub async fn join(self) -> Result<(), ServeError> {
        self.handle.await.expect("server task panicked")
    }

    /// Shuts down and waits for the server to stop cleanly.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        self.join().await.unwrap();
    }
}

/// Checks that a server at `addr` still answers a new client's Echo.
pub async fn assert_still_serving(addr: SocketAddr) {
    let client = EchoClient::builder(format!("http://{addr}"))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("the server still accepts connections");
    let response = client
        .echo(EchoRequest {
            message: "still here".into(),
            ..Default::default()
        })
        .await
        .expect("the server keeps serving");
    assert_eq!(response.get_ref().message, "still here");
}

/// `millis` as a protobuf duration, for request controls.
pub fn ms(millis: u64) -> prost_types::Duration {
    prost_types::Duration::try_from(Duration::from_millis(millis)).unwrap()
}

/// A server-stream request for `count` messages `interval_ms` apart.
pub fn ticking(count: u32, interval_ms: u64) -> EchoRequest {
    EchoRequest {
        stream: Some(StreamControl {
            count: Some(count),
            interval: Some(ms(interval_ms)),
        }),
        ..Default::default()
    }
}

/// Reads a server stream to its end: the messages received and how it ended.
pub async fn read_to_end(
    stream: &mut tonic::Streaming<EchoResponse>,
) -> (usize, Result<(), tonic::Status>) {
    let mut received = 0;
    loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => return (received, Ok(())),
            Err(status) => return (received, Err(status)),
        }
    }
}

/// How long [`eventually`] waits before it fails the test.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// Polls `condition` every 10 ms until it holds; fails the test naming
/// `what` if it does not within [`EVENTUALLY`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {EVENTUALLY:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `message` framed as one uncompressed gRPC message.
pub fn grpc_message(message: &[u8]) -> bytes::Bytes {
    echo_wire::framing::encode(&echo_wire::framing::Message {
        compressed: false,
        bytes: bytes::Bytes::copy_from_slice(message),
    })
}

/// A TCP proxy on `127.0.0.1:0` in front of `target` that counts the bytes
/// clients send and keeps the first [`OPENING_LEN`] of each connection, so a
/// test can see what went over the wire.
pub struct CountingProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: Arc<std::sync::atomic::AtomicU64>,
    openings: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    _task: JoinHandle<()>,
}

/// How many of a connection's first bytes [`CountingProxy`] keeps.
pub const OPENING_LEN: usize = 4096;

impl CountingProxy {
    /// Starts forwarding every connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let openings = Arc::new(std::sync::Mutex::new(Vec::new()));
        let counted = Arc::clone(&upstream);
        let kept = Arc::clone(&openings);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                let kept = Arc::clone(&kept);
                let index = {
                    let mut openings = kept.lock().unwrap();
                    openings.push(Vec::new());
                    openings.len() - 1
                };
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.split();
                    let (mut server_read, mut server_write) = server.split();
                    let up = async {
                        let mut buffer = vec![0; 64 * 1024];
                        loop {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            match client_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    counted
                                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                                    {
                                        let mut openings = kept.lock().unwrap();
                                        let opening = &mut openings[index];
                                        let room = OPENING_LEN.saturating_sub(opening.len());
                                        opening.extend_from_slice(&buffer[..n.min(room)]);
                                    }
                                    if server_write.write_all(&buffer[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut server_write).await;
                    };
                    let down = tokio::io::copy(&mut server_read, &mut client_write);
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Self {
            addr,
            upstream,
            openings,
            _task: task,
        }
    }

    /// Bytes sent from clients to the target so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.upstream.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The first bytes of the first connection on which a client sent
    /// anything (a client may open one to check the server is there, unused).
    pub fn first_opening(&self) -> Vec<u8> {
        self.openings
            .lock()
            .unwrap()
            .iter()
            .find(|opening| !opening.is_empty())
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self._task.abort();
    }
}
