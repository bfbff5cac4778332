//! [`Server::run`]: the server assembled in named stages (services, layers,
//! side tasks, serving), then drained on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
#[cfg(feature = "fuzzing")]
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_layer::Layer as _;

use crate::config::Config;
use crate::config::chaos::Event;
use crate::error::ServeError;
use crate::layers::{self, AuthLayer, BehaviorLayer, StackSettings, Tokens};
use crate::ops::channelz::Channelz;
use crate::ops::chaos::Chaos;
use crate::ops::load_report::LoadReports;
use crate::ops::metrics::{self, Metrics};
use crate::ops::stats::Stats;
use crate::protocol::ProtocolLayer;
use crate::protocol::json::Schemas;
use crate::protocol::page::{Console, Page};
use crate::services::forward::Forwarder;
use crate::services::{DESCRIPTOR_SETS, Observed, Services, raw_echo};
use crate::transport::accept::{self, Admission, Connection, ConnectionLimits};
use crate::transport::budget::Budgets;
use crate::transport::conn::{self, AnswerBody, HttpSettings, Served, Shared, Stack};
use crate::transport::h3;
use crate::transport::tls::{Tls, TlsFiles, TlsReload};

/// After the grace period ends open streams, how long their final statuses get
/// to reach the callers before every remaining connection is dropped. This also
/// bounds shutdown when a peer never closes its connection.
pub const STREAM_END_FLUSH: Duration = Duration::from_secs(1);

/// How long a browser may keep a CORS preflight's answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

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

        // 1. The services, routed by name, and the budgets, chaos
        //    schedules, load reports and channelz registry every connection
        //    shares.
        let chaos = Chaos::new(
            config.faults.schedules().cloned().collect(),
            config.faults.chaos_seed,
        )
        .map(Arc::new);
        let load_windows = config
            .faults
            .schedules()
            .any(|schedule| matches!(schedule.event, Event::Load { .. }));
        let load_reports = Arc::new(LoadReports::new(
            config.load.load_report.clone(),
            chaos
                .as_ref()
                .filter(|_| load_windows)
                .map(|chaos| Arc::clone(&chaos.windows)),
        ));
        let channelz = config
            .services
            .channelz
            .then(|| Arc::new(Channelz::default()));
        let forwarder = Forwarder::new(&config.forward)?.with_channelz(channelz.clone());
        let observed = Observed {
            load_reports: Arc::clone(&load_reports),
            channelz: channelz.clone(),
        };
        let services = Services::build(
            config,
            &self.stats,
            &stop_accepting,
            &streams_end,
            forwarder.clone(),
            observed,
        )
        .await;
        let budgets = Arc::new(Budgets::new(&config.limits)?);

        // 2. The metrics: every call's series, and each component's own.
        let mut metrics = Metrics::new(&self.stats, services.health.served(), &DESCRIPTOR_SETS);
        budgets.register(metrics.registry());
        forwarder.register(metrics.registry());
        if let Some(chaos) = &chaos {
            chaos.register(metrics.registry());
        }
        let metrics = Arc::new(metrics);

        // 3. The layers around the services.
        let settings = stack_settings(config, &metrics, chaos.as_deref(), load_reports)?;
        let service = layers::stack(services.router.clone(), settings);

        // 4. The protocols, outside every layer: each call becomes gRPC
        //    first, so controls, limits, auth, metrics and logs meet one
        //    protocol.
        let page = (config.browsers.web).then(|| {
            let console = Console::new(services.health.served(), &DESCRIPTOR_SETS);
            Page::new(
                Arc::clone(&self.stats),
                console,
                config.limits.max_message_size,
            )
        });
        let service = ProtocolLayer::new(
            Schemas::new(&DESCRIPTOR_SETS),
            config.limits.max_message_size,
            config.limits.max_send_message_size(),
            page,
        )
        .layer(service);

        // 5. The side tasks, which end with this function.
        let tls = TlsFiles::of(&config.tls)
            .as_ref()
            .map(Tls::new)
            .transpose()?;
        let _side_tasks = start_side_tasks(
            self.side_listeners,
            config,
            &metrics,
            &budgets,
            tls.clone(),
            &self.tls_reload,
        );
        // Until shutdown begins: dropping them closes their windows.
        let chaos_schedules = chaos.as_ref().map(|chaos| chaos.start(&services.health));

        // 6. Serving, until shutdown: TCP (and QUIC on its port, with
        //    --http3) under one set of connection caps.
        let admission = Admission::new(
            ConnectionLimits::from((&config.limits, &config.http2)),
            Arc::clone(&self.stats),
        );
        let settings = HttpSettings::from((&config.http2, &config.limits));
        let (incoming, quic) = match incoming {
            Incoming::Tcp(listener) => {
                let quic = match (&tls, config.tls.http3) {
                    (_, false) => None,
                    (None, true) => return Err(ServeError::Http3WithoutTls),
                    (Some(tls), true) => {
                        let addr = listener.local_addr().map_err(|err| ServeError::Http3 {
                            addr: config.listen.listen,
                            reason: err.to_string(),
                        })?;
                        tracing::info!(%addr, "serving HTTP/3 on UDP");
                        Some(h3::endpoint(addr, tls, &settings)?)
                    }
                };
                if let Some(channelz) = &channelz {
                    if let Ok(addr) = listener.local_addr() {
                        channelz.listening(addr, "tcp");
                    }
                    if let Some(addr) = quic.as_ref().and_then(|quic| quic.local_addr().ok()) {
                        channelz.listening(addr, "udp");
                    }
                }
                (accept::accept(listener, admission.clone(), tls), quic)
            }
            #[cfg(feature = "fuzzing")]
            Incoming::InMemory(connections) => (ReceiverStream::new(connections), None),
        };
        // Answers over TCP point at HTTP/3 when it is on.
        let alt_svc = quic
            .as_ref()
            .and_then(|endpoint| endpoint.local_addr().ok())
            .map(|addr| h3::alt_svc(addr.port()));
        let shared = Shared {
            settings,
            budgets,
            served: Arc::new(Served {
                stats: Arc::clone(&self.stats),
                alt_svc,
            }),
            chaos,
            channelz,
            stop: stop_accepting.clone(),
        };
        let quic = quic.map(|endpoint| (endpoint, admission));
        let serving = serving(incoming, quic, service, config, shared);
        tokio::pin!(serving);
        tokio::select! {
            () = &mut serving => return Ok(()),
            () = shutdown => {}
        }

        // 7. The drain.
        drop(chaos_schedules);
        drain(
            serving,
            &services,
            stop_accepting,
            streams_end,
            *config.listen.shutdown_grace,
            &self.stats,
        )
        .await;
        Ok(())
    }
}

/// Every connection from `incoming` and, with HTTP/3, from `quic` (its
/// endpoint and the caps it shares with TCP), served with `service` (behind
/// CORS when it is configured) until `shared.stop`.
fn serving<S, B>(
    incoming: impl Stream<Item = Connection> + Send + 'static,
    quic: Option<(quinn::Endpoint, Admission)>,
    service: S,
    config: &Config,
    shared: Shared,
) -> BoxFuture<'static, ()>
where
    S: Stack<B>,
    B: AnswerBody + Default,
{
    // CORS outermost, so a browser's preflight is answered before any
    // protocol is looked for and every answer carries CORS headers; served
    // as its own type rather than an `Either`, which would make every
    // call's futures as large as CORS's (measured: 190 instructions a call).
    match cors(&config.browsers.cors_allow_origin) {
        Some(cors) => Box::pin(serve_both(incoming, quic, cors.layer(service), shared)),
        None => Box::pin(serve_both(incoming, quic, service, shared)),
    }
}

/// [`serve`] on TCP beside [`h3::serve`] on QUIC, until both have drained.
async fn serve_both<S, B>(
    incoming: impl Stream<Item = Connection>,
    quic: Option<(quinn::Endpoint, Admission)>,
    service: S,
    shared: Shared,
) where
    S: Stack<B>,
    B: AnswerBody,
{
    match quic {
        None => serve(incoming, service, shared).await,
        Some((endpoint, admission)) => {
            tokio::join!(
                serve(incoming, service.clone(), shared.clone()),
                h3::serve(endpoint, admission, service, shared),
            );
        }
    }
}

/// What the layers need beyond the router: the metrics, the limits, the
/// tokens (read from their file now) and the fault settings.
fn stack_settings(
    config: &Config,
    metrics: &Arc<Metrics>,
    chaos: Option<&Chaos>,
    load_reports: Arc<LoadReports>,
) -> Result<StackSettings, ServeError> {
    let auth = match &config.auth.auth_token_file {
        Some(path) => Some(AuthLayer::new(
            read_tokens(path)?,
            config.auth.auth_open_services.clone(),
        )),
        None => None,
    };
    Ok(StackSettings {
        metrics: Arc::clone(metrics),
        max_concurrent_calls: config.limits.max_concurrent_calls,
        max_call_time: *config.limits.max_call_time,
        auth,
        behavior: BehaviorLayer::new(
            &config.listen.instance(),
            config.controls.max_payload_size,
            config.faults.fault.clone(),
            config.faults.fault_seed,
            chaos.map(|chaos| Arc::clone(&chaos.windows)),
        ),
        load_reports,
    })
}

/// Shutdown after `serving` stopped accepting: health turns NOT_SERVING,
/// connections get GOAWAY, and streams still open after `grace` end with
/// UNAVAILABLE; returns once every connection is closed, or
/// [`STREAM_END_FLUSH`] after the grace period.
async fn drain(
    mut serving: std::pin::Pin<&mut BoxFuture<'static, ()>>,
    services: &Services,
    stop_accepting: CancellationToken,
    streams_end: CancellationToken,
    grace: Duration,
    stats: &Stats,
) {
    tracing::info!(grace = %humantime::format_duration(grace), "shutting down: draining calls");
    services.health.set_all(ServingStatus::NotServing).await;
    stop_accepting.cancel();
    tokio::select! {
        () = &mut serving => {
            tracing::info!("all connections closed");
            return;
        }
        () = tokio::time::sleep(grace) => {}
    }
    tracing::warn!(
        open_streams = stats.open_streams(),
        "grace period over: ending open streams with UNAVAILABLE"
    );
    streams_end.cancel();
    if tokio::time::timeout(STREAM_END_FLUSH, serving)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period: dropping them");
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

/// Serves every connection from `incoming` with `service` until `shared.stop`, then
/// sends each GOAWAY and returns once all are closed. Dropping the returned
/// future drops every connection.
async fn serve<S, B>(incoming: impl Stream<Item = Connection>, service: S, shared: Shared)
where
    S: Stack<B>,
    B: AnswerBody,
{
    let mut connections = JoinSet::new();
    {
        // Dropped on leaving this block, which closes the listener.
        let mut incoming = std::pin::pin!(incoming);
        loop {
            tokio::select! {
                () = shared.stop.cancelled() => break,
                connection = incoming.next() => match connection {
                    Some(connection) => {
                        connections.spawn(conn::serve_connection(
                            connection,
                            service.clone(),
                            &shared,
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
            if let Err(err) = metrics::serve(listener, metrics).await {
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

/// The tokens of `--auth-token-file`: at least one.
fn read_tokens(path: &std::path::Path) -> Result<Tokens, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServeError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    let tokens = Tokens::parse(&text);
    if tokens.is_empty() {
        return Err(ServeError::NoToken(path.to_owned()));
    }
    tracing::info!(tokens = tokens.len(), "bearer-token authentication on");
    Ok(tokens)
}
