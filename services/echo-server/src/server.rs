//! [`Server::run`]: the server assembled in named stages (services, layers,
//! side tasks, serving), then drained on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use http_body::Body as HttpBody;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
#[cfg(feature = "fuzzing")]
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::StdError;
use tonic_health::ServingStatus;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_layer::Layer as _;
use tower_service::Service;

use crate::accept::{self, Connection, ConnectionLimits};
use crate::budget::Budgets;
use crate::chaos::{Chaos, Schedule};
use crate::config::{Config, ForwardConfig};
use crate::conn::{self, HttpSettings};
use crate::forward::{Allowlist, ClientMetrics, Forwarder};
use crate::layers::{self, AuthLayer, BehaviorLayer, Behaviors, StackSettings, Tokens};
use crate::metrics::Metrics;
use crate::protocol::{ProtocolLayer, Schemas};
use crate::raw_echo;
use crate::services::{DESCRIPTOR_SETS, Services};
use crate::stats::Stats;
use crate::tls::{Tls, TlsReload};
use crate::web::Page;
use echo_client::TlsOptions;

/// After the grace period ends open streams, how long their final statuses get
/// to reach the callers before every remaining connection is dropped. This also
/// bounds shutdown when a peer never closes its connection.
pub const STREAM_END_FLUSH: Duration = Duration::from_secs(1);

/// How long a browser may keep a CORS preflight's answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The token file cannot be read or holds no token.
    #[error("auth token file {path}: {reason}")]
    TokenFile {
        /// The file named by `--auth-token-file`.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS material is unusable.
    #[error("TLS")]
    Tls(#[from] crate::tls::TlsError),
    /// The memory budgets cannot hold what the limits allow.
    #[error("memory budgets")]
    Budget(#[from] crate::budget::BudgetTooSmall),
    /// `--fault` does not parse.
    #[error("--fault: {0}")]
    Fault(String),
    /// A `--forward-ca-file`, `--forward-cert-file` or `--forward-key-file` cannot be read.
    #[error("forward TLS file {path}: {reason}")]
    ForwardTls {
        /// The file.
        path: std::path::PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
    /// A `--forward-allow` entry does not parse.
    #[error("--forward-allow: {0}")]
    ForwardAllow(String),
    /// A `--chaos` schedule does not parse.
    #[error("--chaos: {0}")]
    Chaos(String),
    /// The `--chaos-file` cannot be read or does not parse.
    #[error("chaos file {path}: {reason}")]
    ChaosFile {
        /// The file named by `--chaos-file`.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The echo server: `echo.v1.EchoService`, `grpc.examples.echo.Echo`, the
/// interop `grpc.testing.TestService` (unless switched off), health, and
/// reflection (v1 and v1alpha).
#[derive(Debug)]
pub struct Server {
    config: Config,
    stats: Arc<Stats>,
    tls_reload: TlsReload,
    side_listeners: SideListeners,
}

/// Listeners of the side tasks, bound by the caller.
#[derive(Debug, Default)]
struct SideListeners {
    metrics: Option<TcpListener>,
    tcp_echo: Option<TcpListener>,
    udp_echo: Option<UdpSocket>,
}

impl Server {
    /// A server that will run with `config` (its `listen` is for the caller to bind).
    pub fn new(config: Config) -> Self {
        Self {
            config,
            stats: Arc::default(),
            tls_reload: TlsReload::default(),
            side_listeners: SideListeners::default(),
        }
    }

    /// Also serves the RFC 862 Echo Protocol on `listener` (TCP) while running.
    pub fn with_tcp_echo_listener(mut self, listener: TcpListener) -> Self {
        self.side_listeners.tcp_echo = Some(listener);
        self
    }

    /// Also serves the RFC 862 Echo Protocol on `socket` (UDP) while running.
    pub fn with_udp_echo_socket(mut self, socket: UdpSocket) -> Self {
        self.side_listeners.udp_echo = Some(socket);
        self
    }

    /// Serves Prometheus metrics on `listener` (at `/metrics`) while running.
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.side_listeners.metrics = Some(listener);
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
        self.serve(Incoming::Tcp(listener), shutdown).await
    }

    /// [`Server::run`] on connections from `incoming`.
    pub(crate) async fn serve(
        self,
        incoming: Incoming,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let config = &self.config;
        // Cancelled when the shutdown grace period ends: open streams then stop.
        let streams_end = CancellationToken::new();
        // Cancelled when shutdown begins: no new connections, GOAWAY on the rest.
        let stop_accepting = CancellationToken::new();

        // 1. The services, routed by name, and what every call is counted in.
        let forwarder = Forwarder {
            allow: Allowlist::parse(&config.forward.forward_allow)
                .map_err(ServeError::ForwardAllow)?,
            max_hops: config.forward.forward_max_hops,
            max_count: config.forward.forward_max_count,
            tls: forward_tls(&config.forward)?,
            metrics: ClientMetrics::default(),
        };
        let client_metrics = forwarder.metrics.clone();
        let services = Services::build(config, &self.stats, &streams_end, forwarder).await;
        let budgets = Arc::new(Budgets::new(&config.limits)?);
        let chaos = Chaos::new(chaos_schedules(config)?, config.faults.chaos_seed).map(Arc::new);
        let metrics = Arc::new(Metrics::new(
            &self.stats,
            &budgets,
            chaos.as_ref().map(|chaos| &chaos.metrics),
            &client_metrics,
            &services.served,
            &DESCRIPTOR_SETS,
        ));

        // 2. The layers around them.
        let auth = match &config.auth.auth_token_file {
            Some(path) => Some(AuthLayer::new(
                read_tokens(path)?,
                config.auth.auth_open_services.clone(),
            )),
            None => None,
        };
        let service = layers::stack(
            services.router.clone(),
            StackSettings {
                metrics: Arc::clone(&metrics),
                max_concurrent_calls: config.limits.max_concurrent_calls,
                max_call_time: *config.limits.max_call_time,
                auth,
                behavior: BehaviorLayer::new(
                    &config.listen.instance(),
                    config.controls.max_payload_size,
                    config
                        .faults
                        .fault
                        .as_deref()
                        .map(Behaviors::parse)
                        .transpose()
                        .map_err(ServeError::Fault)?,
                    config.faults.fault_seed,
                    chaos.as_ref().map(|chaos| Arc::clone(&chaos.windows)),
                ),
            },
        );
        // Outside every layer above: each call becomes gRPC first, so
        // controls, limits, auth, metrics and logs meet one protocol.
        let service = ProtocolLayer::new(
            Schemas::new(&DESCRIPTOR_SETS),
            config.limits.max_message_size,
            config
                .browsers
                .web
                .then(|| Page::new(Arc::clone(&self.stats))),
        )
        .layer(service);

        // 3. The side tasks, which end with this function.
        let tls = config.tls.files().as_ref().map(Tls::new).transpose()?;
        let _side_tasks = start_side_tasks(
            self.side_listeners,
            config,
            &metrics,
            &budgets,
            tls.clone(),
            &self.tls_reload,
        );
        // Until shutdown begins: dropping them closes their windows.
        let chaos_schedules = chaos
            .as_ref()
            .map(|chaos| chaos.start(services.health.clone(), services.served.clone()));

        // 4. Serving, until shutdown.
        let incoming = match incoming {
            Incoming::Tcp(listener) => accept::accept(
                listener,
                ConnectionLimits::from((&config.limits, &config.http2)),
                tls,
                Arc::clone(&self.stats),
            ),
            #[cfg(feature = "fuzzing")]
            Incoming::InMemory(connections) => ReceiverStream::new(connections),
        };
        let settings = HttpSettings::from((&config.http2, &config.limits));
        let stop = stop_accepting.clone();
        // CORS outermost, so a browser's preflight is answered before any
        // protocol is looked for and every answer carries CORS headers; served
        // as its own type rather than an `Either`, which would make every
        // call's futures as large as CORS's (measured: 190 instructions a call).
        let serving: BoxFuture<'static, ()> = match cors(&config.browsers.cors_allow_origin) {
            Some(cors) => Box::pin(serve(
                incoming,
                cors.layer(service),
                settings,
                budgets,
                chaos,
                stop,
            )),
            None => Box::pin(serve(incoming, service, settings, budgets, chaos, stop)),
        };
        tokio::pin!(serving);
        tokio::select! {
            () = &mut serving => return Ok(()),
            () = shutdown => {}
        }

        // 5. The drain.
        let grace = *config.listen.shutdown_grace;
        tracing::info!(grace = %humantime::format_duration(grace), "shutting down: draining calls");
        drop(chaos_schedules);
        services.set_health(ServingStatus::NotServing).await;
        stop_accepting.cancel();
        tokio::select! {
            () = &mut serving => {
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
        if tokio::time::timeout(STREAM_END_FLUSH, serving)
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the grace period: dropping them");
        }
        Ok(())
    }
}

/// Where a server's connections come from.
pub(crate) enum Incoming {
    /// Accepted from a TCP listener (see `accept`).
    Tcp(TcpListener),
    /// Handed over in memory, by the fuzz targets.
    #[cfg(feature = "fuzzing")]
    InMemory(tokio::sync::mpsc::Receiver<Connection>),
}

/// Runs an echo server with `config` on `listener` until `shutdown`; see [`Server::run`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    Server::new(config).run(listener, shutdown).await
}

/// Serves every connection from `incoming` with `service` until `stop`, then
/// sends each GOAWAY and returns once all are closed. Dropping the returned
/// future drops every connection.
async fn serve<S, B>(
    incoming: impl Stream<Item = Connection>,
    service: S,
    settings: HttpSettings,
    budgets: Arc<Budgets>,
    chaos: Option<Arc<Chaos>>,
    stop: CancellationToken,
) where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<StdError>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError>,
{
    let mut connections = JoinSet::new();
    {
        // Dropped on leaving this block, which closes the listener.
        let mut incoming = std::pin::pin!(incoming);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                connection = incoming.next() => match connection {
                    Some(connection) => {
                        connections.spawn(conn::serve_connection(
                            connection,
                            service.clone(),
                            settings,
                            Arc::clone(&budgets),
                            chaos.as_deref().map(Chaos::subscribe),
                            stop.clone(),
                        ));
                    }
                    None => break,
                },
                Some(_) = connections.join_next() => {}
            }
        }
    }
    while connections.join_next().await.is_some() {}
}

/// The tasks beside serving gRPC (the budgets' stall watchdog, metrics
/// endpoint, TLS reloads, RFC 862 echo); each is aborted when this is dropped.
struct SideTasks(JoinSet<()>);

impl Drop for SideTasks {
    fn drop(&mut self) {
        self.0.abort_all();
    }
}

fn start_side_tasks(
    listeners: SideListeners,
    config: &Config,
    metrics: &Arc<Metrics>,
    budgets: &Arc<Budgets>,
    tls: Option<Tls>,
    tls_reload: &TlsReload,
) -> SideTasks {
    let mut tasks = JoinSet::new();
    tasks.spawn(Arc::clone(budgets).close_stalled_connections());
    if let Some(tls) = tls {
        tasks.spawn(tls.keep_reloading(tls_reload.clone()));
    }
    if let Some(listener) = listeners.metrics {
        let metrics = Arc::clone(metrics);
        tasks.spawn(async move {
            if let Err(err) = crate::metrics::serve(listener, metrics).await {
                tracing::error!(cause = %err, "metrics endpoint failed");
            }
        });
    }
    if let Some(listener) = listeners.tcp_echo {
        tasks.spawn(raw_echo::serve_tcp(listener, config.limits.max_connections));
    }
    if let Some(socket) = listeners.udp_echo {
        tasks.spawn(raw_echo::serve_udp(socket));
    }
    SideTasks(tasks)
}

/// CORS for `origins` (`*`: any), or none when none are listed.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| http::HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([http::Method::GET, http::Method::POST])
            // Any metadata a page sends; echoed metadata comes back under any name too.
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(ExposeHeaders::any())
            .max_age(CORS_MAX_AGE),
    )
}

/// The TLS material of `--forward-ca-file` and `--forward-cert-file`.
fn forward_tls(config: &ForwardConfig) -> Result<Option<TlsOptions>, ServeError> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|err| ServeError::ForwardTls {
            path: path.clone(),
            reason: err.to_string(),
        })
    };
    let Some(ca) = &config.forward_ca_file else {
        return Ok(None);
    };
    let identity = match (&config.forward_cert_file, &config.forward_key_file) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(Some(TlsOptions {
        ca_pem: read(ca)?,
        server_name: None,
        identity,
    }))
}

/// The schedules of `--chaos` and `--chaos-file`.
fn chaos_schedules(config: &Config) -> Result<Vec<Schedule>, ServeError> {
    let mut schedules = config
        .faults
        .chaos
        .iter()
        .map(|text| Schedule::parse(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ServeError::Chaos)?;
    if let Some(path) = &config.faults.chaos_file {
        let error = |reason: String| ServeError::ChaosFile {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|err| error(err.to_string()))?;
        schedules.extend(Schedule::parse_file(&text).map_err(error)?);
    }
    Ok(schedules)
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
