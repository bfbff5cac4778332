//! Assembles the services and layers and runs them until shutdown, then drains.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use grpc_echo::echo::v1::admin_service_server::AdminServiceServer;
use grpc_echo::echo::v1::echo_service_server::EchoServiceServer;
use grpc_echo::grpc::examples::echo::echo_server::EchoServer as ExampleEchoServer;
use grpc_echo::grpc::testing::test_service_server::TestServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;
use tonic::service::RecoverErrorLayer;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;

use crate::admin::AdminService;
use crate::config::Config;
use crate::config::MAX_LOCAL_ERROR_RESET_STREAMS;
use crate::connections::{self, ConnectionLimits};
use crate::examples::ExampleEchoService;
use crate::interop::TestService;
use crate::layers::{
    AuthLayer, DeadlineLayer, MessageCompressionLayer, MessageSizeStatusLayer, Tokens, TraceLayer,
    TrailersLayer,
};
use crate::metrics::Metrics;
use crate::raw_echo;
use crate::router::Router;
use crate::serve::{self, Http2Settings};
use crate::service::EchoService;
use crate::stats::Stats;
use crate::tls::{Tls, TlsReload};

/// After the grace period ends open streams, how long their final statuses get
/// to reach the callers before every remaining connection is dropped. This also
/// bounds shutdown when a peer never closes its connection.
pub const STREAM_END_FLUSH: Duration = Duration::from_secs(1);

/// Descriptors of every service the server can serve: for reflection, and
/// for the method names metrics know.
const DESCRIPTOR_SETS: [&[u8]; 4] = [
    grpc_echo::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Limits messages to `max_message_size` both ways, accepts gzip and zstd
/// requests, and answers compressed in whichever of the two the client accepts
/// (tonic's generated servers share no trait for this).
macro_rules! compressed {
    ($service:expr, $max_message_size:expr) => {
        $service
            .max_decoding_message_size($max_message_size)
            .max_encoding_message_size($max_message_size)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
    };
}

/// Why the server could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The descriptor sets given to reflection do not decode.
    #[error("reflection descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The token file cannot be read or holds no token.
    #[error("auth token file {path}: {reason}")]
    TokenFile {
        /// The file named by `--auth-token-file`.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS material is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The echo server: `echo.v1.EchoService`, `grpc.examples.echo.Echo`, the
/// interop `grpc.testing.TestService` (unless switched off), health, and
/// reflection (v1 and v1alpha).
#[derive(Debug)]
pub struct Server {
    config: Config,
    stats: Arc<Stats>,
    tls_reload: TlsReload,
    metrics_listener: Option<TcpListener>,
    tcp_echo_listener: Option<TcpListener>,
    udp_echo_socket: Option<tokio::net::UdpSocket>,
}

impl Server {
    /// A server that will run with `config` (its `listen` is for the caller to bind).
    pub fn new(config: Config) -> Self {
        Self {
            config,
            stats: Arc::default(),
            tls_reload: TlsReload::default(),
            metrics_listener: None,
            tcp_echo_listener: None,
            udp_echo_socket: None,
        }
    }

    /// Also serves the RFC 862 Echo Protocol on `listener` (TCP) while running.
    pub fn with_tcp_echo_listener(mut self, listener: TcpListener) -> Self {
        self.tcp_echo_listener = Some(listener);
        self
    }

    /// Also serves the RFC 862 Echo Protocol on `socket` (UDP) while running.
    pub fn with_udp_echo_socket(mut self, socket: tokio::net::UdpSocket) -> Self {
        self.udp_echo_socket = Some(socket);
        self
    }

    /// Serves Prometheus metrics on `listener` (at `/metrics`) while running.
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// A handle that makes the running server reload its TLS certificate
    /// (the binary calls it on SIGHUP).
    pub fn tls_reload(&self) -> TlsReload {
        self.tls_reload.clone()
    }

    /// Live counters of this server, for observing it while it runs.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down gracefully:
    /// health turns NOT_SERVING, the listener closes, connections get GOAWAY,
    /// unary calls finish, and streams still open after `shutdown_grace` end with
    /// UNAVAILABLE. Returns once every connection is closed, or
    /// [`STREAM_END_FLUSH`] after the grace period.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let config = &self.config;
        let streams_end = CancellationToken::new();
        let stop_accepting = CancellationToken::new();

        let echo = EchoServiceServer::new(EchoService::new(
            &self.config,
            Arc::clone(&self.stats),
            streams_end.clone(),
        ));
        let example_echo = ExampleEchoServer::new(ExampleEchoService::new(streams_end.clone()));
        // TestService compresses per message itself (MessageCompressionLayer).
        let interop = self.config.interop.then(|| {
            TestServiceServer::new(TestService::new(
                &self.config,
                Arc::clone(&self.stats),
                streams_end.clone(),
            ))
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(config.max_message_size)
            .max_encoding_message_size(config.max_message_size)
        });
        let served = served_services(config);
        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, &served, ServingStatus::Serving).await;
        let admin = config
            .admin
            .then(|| AdminServiceServer::new(AdminService::new(health.clone(), served.clone())));

        let auth = match &config.auth_token_file {
            Some(path) => Some(AuthLayer::new(
                read_tokens(path)?,
                config.auth_open_services.clone(),
            )),
            None => None,
        };
        let tls = config.tls_files().as_ref().map(Tls::new).transpose()?;
        // Ends with this function, so the reloads stop with the server.
        let _reloading = tls
            .clone()
            .map(|tls| AbortOnDrop(tokio::spawn(tls.keep_reloading(self.tls_reload.clone()))));
        let metrics = Arc::new(Metrics::new(&self.stats, &served, &DESCRIPTOR_SETS));
        let _metrics_endpoint = self.metrics_listener.map(|listener| {
            let metrics = Arc::clone(&metrics);
            AbortOnDrop(tokio::spawn(async move {
                if let Err(err) =
                    crate::metrics::serve(listener, metrics, std::future::pending()).await
                {
                    tracing::error!(cause = %err, "metrics endpoint failed");
                }
            }))
        });
        let _tcp_echo = self.tcp_echo_listener.map(|listener| {
            AbortOnDrop(tokio::spawn(raw_echo::serve_tcp(
                listener,
                config.max_connections,
            )))
        });
        let _udp_echo = self
            .udp_echo_socket
            .map(|socket| AbortOnDrop(tokio::spawn(raw_echo::serve_udp(socket))));
        let max_message_size = config.max_message_size;
        let mut router = Router::default()
            .add(compressed!(health_service, max_message_size))
            .add(compressed!(
                reflection(&served).build_v1()?,
                max_message_size
            ))
            .add(compressed!(
                reflection(&served).build_v1alpha()?,
                max_message_size
            ))
            .add(compressed!(echo, max_message_size))
            .add(compressed!(example_echo, max_message_size));
        if let Some(interop) = interop {
            router = router.add(interop);
        }
        if let Some(admin) = admin {
            router = router.add(admin);
        }
        let service = ServiceBuilder::new()
            .layer(RecoverErrorLayer::new())
            .layer(TraceLayer::new(Arc::clone(&metrics)))
            .layer(MessageSizeStatusLayer)
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(
                config.max_concurrent_calls,
            ))
            .layer(TrailersLayer)
            .option_layer(auth)
            .layer(DeadlineLayer::new(*config.max_call_time))
            .layer(MessageCompressionLayer)
            .service(router);
        let serve = serve::serve(
            connections::accept(
                listener,
                ConnectionLimits {
                    max_connections: config.max_connections,
                    handshake_timeout: *config.handshake_timeout,
                },
                tls,
                Arc::clone(&self.stats),
            ),
            service,
            Http2Settings {
                max_concurrent_streams: config.max_concurrent_streams,
                max_local_error_reset_streams: MAX_LOCAL_ERROR_RESET_STREAMS,
                keepalive_interval: *config.keepalive_interval,
                keepalive_timeout: *config.keepalive_timeout,
                max_header_list_size: config.max_header_list_size,
                max_age: config.max_connection_age.map(Into::into),
                max_age_grace: config.max_connection_age_grace.map(Into::into),
            },
            stop_accepting.clone(),
        );
        tokio::pin!(serve);

        tokio::select! {
            () = &mut serve => return Ok(()),
            () = shutdown => {}
        }

        let grace = *self.config.shutdown_grace;
        tracing::info!(grace = %humantime::format_duration(grace), "shutting down: draining calls");
        set_health(&health, &served, ServingStatus::NotServing).await;
        stop_accepting.cancel();

        tokio::select! {
            () = &mut serve => {
                tracing::info!("all connections closed");
                return Ok(());
            }
            () = tokio::time::sleep(grace) => {}
        }

        tracing::warn!(
            open_streams = self.stats.open_streams(),
            "grace period over: ending open streams with UNAVAILABLE"
        );
        streams_end.cancel();
        match tokio::time::timeout(STREAM_END_FLUSH, serve).await {
            Ok(()) => Ok(()),
            Err(_) => {
                tracing::warn!("connections still open after the grace period: dropping them");
                Ok(())
            }
        }
    }
}

/// Runs an echo server with `config` on `listener` until `shutdown`; see [`Server::run`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    Server::new(config).run(listener, shutdown).await
}

/// Both reflection versions list exactly the services served (each other
/// included), and describe them from every descriptor set compiled in.
/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn read_tokens(path: &std::path::Path) -> Result<Tokens, ServeError> {
    let error = |reason: String| ServeError::TokenFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|err| error(err.to_string()))?;
    let tokens = Tokens::parse(&text);
    if tokens.is_empty() {
        return Err(error("no token in it".to_owned()));
    }
    tracing::info!(tokens = tokens.len(), "bearer-token authentication on");
    Ok(tokens)
}

/// Sets the health the server as a whole (`""`) and each served service report.
async fn set_health(health: &HealthReporter, served: &[&'static str], status: ServingStatus) {
    for service in std::iter::once("").chain(served.iter().copied()) {
        health.set_service_status(service, status).await;
    }
}

/// The full names of the services served.
fn served_services(config: &Config) -> Vec<&'static str> {
    let mut served = vec![
        <EchoServiceServer<EchoService> as NamedService>::NAME,
        <ExampleEchoServer<ExampleEchoService> as NamedService>::NAME,
        tonic_health::pb::health_server::SERVICE_NAME,
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    if config.interop {
        served.push(<TestServiceServer<TestService> as NamedService>::NAME);
    }
    if config.admin {
        served.push(<AdminServiceServer<AdminService> as NamedService>::NAME);
    }
    served
}

/// Both reflection versions list exactly the services served (each other
/// included), and describe them from every descriptor set compiled in.
fn reflection(served: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let builder = DESCRIPTOR_SETS.iter().fold(
        tonic_reflection::server::Builder::configure().include_reflection_service(false),
        |builder, set| builder.register_encoded_file_descriptor_set(set),
    );
    served
        .iter()
        .fold(builder, |builder, name| builder.with_service_name(*name))
}
