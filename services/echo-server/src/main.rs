//! `echo-server`: parses the config, sets up logging, binds, runs until SIGINT/SIGTERM.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use echo_server::{Config, LogFormat};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

// mimalloc: fewer instructions per call than the system allocator (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(config.observability.log_format);
    echo_wire::runtime::build(config.listen.worker_threads.map(usize::from))
        .context("cannot start the runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = bind_tcp(config.listen.listen, "gRPC").await?;
    tracing::info!(addr = %listener.local_addr()?, instance = %config.listen.instance(), "listening");
    let mut server = echo_server::Server::new(config.clone());
    if let Some(addr) = config.observability.metrics_addr {
        let listener = bind_tcp(addr, "metrics").await?;
        tracing::info!(addr = %listener.local_addr()?, "metrics listening");
        server = server.with_metrics_listener(listener);
    }
    if let Some(addr) = config.services.tcp_echo_addr {
        let listener = bind_tcp(addr, "TCP echo").await?;
        tracing::info!(addr = %listener.local_addr()?, "TCP echo listening");
        server = server.with_tcp_echo_listener(listener);
    }
    if let Some(addr) = config.services.udp_echo_addr {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot bind UDP echo on {addr}"))?;
        tracing::info!(addr = %socket.local_addr()?, "UDP echo listening");
        server = server.with_udp_echo_socket(socket);
    }
    #[cfg(unix)]
    reload_tls_on_sighup(server.tls_reload())?;
    server.run(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn bind_tcp(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Reloads the TLS certificate on every SIGHUP.
#[cfg(unix)]
fn reload_tls_on_sighup(reload: echo_server::TlsReload) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the TLS certificate");
            reload.reload();
        }
    });
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(cause = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        result = interrupt => {
            if let Err(err) = result {
                tracing::error!(cause = %err, "cannot listen for SIGINT");
            }
        }
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
