//! `echo-server`: parses the config, sets up logging (and tracing over OTLP
//! when an endpoint is given), binds, runs until SIGINT/SIGTERM.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use echo_client::telemetry::Telemetry;
use echo_server::Config;
use echo_server::config::{LogFormat, ObservabilityConfig};
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

// mimalloc: fewer instructions per call than the system allocator (BENCHMARKS.md).
// Heap profilers see only malloc's calls: `system-allocator` leaves it out.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    echo_wire::runtime::build(config.listen.worker_threads.map(usize::from))
        .context("cannot start the runtime")?
        .block_on(async {
            // In the runtime: the OTLP exporter's channel needs one.
            let telemetry = init_tracing(&config.observability)?;
            let served = serve(config).await;
            if let Some(telemetry) = telemetry {
                telemetry.shutdown().await;
            }
            served
        })
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

/// Logs to stderr at `RUST_LOG`'s level; with an OTLP endpoint, also every
/// RPC's span, whatever the level.
fn init_tracing(config: &ObservabilityConfig) -> anyhow::Result<Option<Telemetry>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let telemetry = Telemetry::start(config.otlp_endpoint.as_deref(), "echo-server")?;
    let Some(telemetry) = telemetry else {
        // Without spans to export, one global filter: a disabled span costs
        // a call nothing (checked with bench/instructions.py).
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        match config.log_format {
            LogFormat::Human => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
        return Ok(None);
    };
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match config.log_format {
        LogFormat::Human => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(telemetry.layer())
        .init();
    tracing::info!("exporting traces over OTLP");
    Ok(Some(telemetry))
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
