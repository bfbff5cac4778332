//! Starts an in-process echo server on a loopback port for a test.
#![allow(dead_code)]

pub mod h2raw;
pub mod pki;
pub mod process;

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

/// A server running `echo_server::Server::run` on `127.0.0.1:0`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    pub tls_reload: TlsReload,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    pub async fn with_config(config: Config) -> Self {
        let config = Config {
            instance_id: Some(INSTANCE.to_owned()),
            ..config
        };
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

    pub async fn join(self) -> Result<(), ServeError> {
        self.handle.await.expect("server task panicked")
    }

    pub async fn stop(mut self) {
        self.begin_shutdown();
        self.join().await.unwrap();
    }
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

/// Polls `condition` every 10 ms for up to 5 s.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}
