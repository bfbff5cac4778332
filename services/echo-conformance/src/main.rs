//! `echo-conformance`: the program the Connect conformance suite's runner
//! (`connectconformance`, v1.0.5) drives.
//!
//! `echo-conformance server` reads one length-prefixed `ServerCompatRequest`
//! from stdin, starts the real echo-server (its library `run`: every layer,
//! limit and budget, with `ConformanceService` among its services) on
//! 127.0.0.1 with an ephemeral port, the TLS credentials, client-certificate
//! requirement and message limit asked for, writes the length-prefixed
//! `ServerCompatResponse` to stdout and serves until SIGTERM.
//!
//! `echo-conformance client` reads `ClientCompatRequest`s from stdin until it
//! ends, makes each call with the echo-client library (its protocols, HTTP
//! versions, compressions, TLS, deadlines, metadata) against the runner's
//! reference server, and writes a `ClientCompatResponse` for each.
//!
//! # Layout
//!
//! - `main.rs`: the subcommands and the server mode.
//! - `client.rs`: the client mode.
//! - `framing.rs`: the runner's length-prefixed messages on stdin and stdout.
//! - `server.config.yaml`, `client.config.yaml`: the features each mode
//!   claims, for the runner.
#![forbid(unsafe_code)]

mod client;
mod framing;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use grpc_echo::connectrpc::conformance::v1::{
    HttpVersion, ServerCompatRequest, ServerCompatResponse,
};
use tokio::net::TcpListener;

/// The program under test of the Connect conformance suite.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Start echo-server as the runner's ServerCompatRequest (on stdin) asks.
    Server,
    /// Make the calls the runner's ClientCompatRequests (on stdin) ask for.
    Client,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Warnings only: stderr is the runner's to show, and each case's calls
    // would otherwise log a line each.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = echo_wire::runtime::build(None).context("cannot start the runtime")?;
    match cli.mode {
        Mode::Server => runtime.block_on(server()),
        Mode::Client => runtime.block_on(client::run()),
    }
}

async fn server() -> anyhow::Result<()> {
    let mut stdin = tokio::io::stdin();
    let request: ServerCompatRequest = framing::read(&mut stdin)
        .await?
        .context("stdin ended before a ServerCompatRequest")?;
    let files = Files::new()?;
    let config = server_config(&request, &files).await?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on 127.0.0.1")?;
    let response = ServerCompatResponse {
        host: "127.0.0.1".to_owned(),
        port: u32::from(listener.local_addr()?.port()),
        pem_cert: if request.use_tls {
            request
                .server_creds
                .as_ref()
                .map(|creds| creds.cert.clone())
                .unwrap_or_default()
        } else {
            Default::default()
        },
    };
    let served = echo_server::run(listener, config, async {
        // Written once the listener is bound: the runner connects as soon as it reads this.
        if let Err(error) = framing::write(&mut tokio::io::stdout(), &response).await {
            eprintln!("echo-conformance: cannot write the ServerCompatResponse: {error}");
            return;
        }
        shutdown_signal().await;
    })
    .await;
    drop(files);
    served.context("echo-server stopped")
}

/// The echo-server configuration `request` asks for: TLS (and client
/// certificates) from its credentials, its message limit; defaults otherwise.
async fn server_config(
    request: &ServerCompatRequest,
    files: &Files,
) -> anyhow::Result<echo_server::Config> {
    let mut config = echo_server::Config::default();
    // An idle HTTP/1.1 connection is closed when its next request's headers
    // take this long; the runner's Go client keeps idle connections 90 s and
    // a request sent as the server closes one fails. Longer than that, the
    // server never closes a connection the client may still pick.
    config.http2.handshake_timeout = std::time::Duration::from_secs(120).into();
    if request.message_receive_limit > 0 {
        // A limit on what the server receives; its answers (which echo the
        // requests) keep the default limit.
        config.limits.max_send_message_size = Some(config.limits.max_message_size);
        config.limits.max_message_size = usize::try_from(request.message_receive_limit)?;
    }
    if request.use_tls {
        let creds = request
            .server_creds
            .as_ref()
            .context("use_tls is set but server_creds is not")?;
        config.tls.tls_cert = Some(files.write("server.crt", &creds.cert).await?);
        config.tls.tls_key = Some(files.write("server.key", &creds.key).await?);
        // The runner asks for HTTP/3 only over TLS, on the same port (UDP).
        config.tls.http3 = request.http_version() == HttpVersion::HttpVersion3;
        if !request.client_tls_cert.is_empty() {
            config.tls.tls_client_ca = Some(
                files
                    .write("client-ca.crt", &request.client_tls_cert)
                    .await?,
            );
        }
    }
    Ok(config)
}

/// A private folder for the TLS files echo-server reads, removed on drop.
struct Files(PathBuf);

impl Files {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("echo-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }

    async fn write(&self, name: &str, contents: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.0.join(name);
        tokio::fs::write(&path, contents)
            .await
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.path());
    }
}

/// SIGTERM (how the runner stops the server) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
