//! Server configuration: clap structs grouped as `--help` groups them, every
//! flag also an `ECHO_*` variable, defaults as `DEFAULT_*` constants. Each
//! value is parsed once, by its value parser, into the type the server uses:
//! the grammars of `--fault`, `--chaos` and `--forward-allow` are in the
//! submodules, each with an error that names its cause.

pub mod allowlist;
pub mod behaviors;
pub mod chaos;
pub mod load_report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

use allowlist::AllowedTarget;
use behaviors::Behaviors;
use chaos::{ChaosFile, Schedule};
use load_report::LoadReportSpec;

/// Default `--listen`: loopback only, so a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default `--shutdown-grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default `--max-delay`.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(60);
/// Default `--max-stream-count`.
pub const DEFAULT_MAX_STREAM_COUNT: u32 = 10_000;
/// Default `--max-payload-size` (1 MiB: well under gRPC's usual 4 MiB message limit).
pub const DEFAULT_MAX_PAYLOAD_SIZE: u32 = 1024 * 1024;
/// Default `--max-summary-messages`.
pub const DEFAULT_MAX_SUMMARY_MESSAGES: u32 = 100;
/// Default `--max-message-size`: gRPC's usual 4 MiB, both ways, after decompression.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// Default `--max-concurrent-streams` per connection (hyper's own default,
/// which tonic's builder would otherwise remove).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 200;
/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `--max-concurrent-calls` across all connections.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 10_000;
/// Default `--request-buffer-budget`: request bytes of unfinished messages,
/// process-wide. With the answer budget it leaves the idle server and its
/// allowances (see the README) room under the Kubernetes example's 256 MiB.
pub const DEFAULT_REQUEST_BUFFER_BUDGET: usize = 96 * 1024 * 1024;
/// Default `--connection-request-buffer-budget`: four messages of the largest
/// size. It is also the connection's receive window, shared by its streams'
/// windows (see `conn.rs`): 16 MiB over 200 streams leaves each about 82 KiB,
/// above HTTP/2's default 64 KiB.
pub const DEFAULT_CONNECTION_REQUEST_BUFFER_BUDGET: usize = 4 * DEFAULT_MAX_MESSAGE_SIZE;
/// Default `--answer-buffer-budget`: answer bytes not yet sent, process-wide.
pub const DEFAULT_ANSWER_BUFFER_BUDGET: usize = 96 * 1024 * 1024;
/// Default `--connection-answer-buffer-budget`.
pub const DEFAULT_CONNECTION_ANSWER_BUFFER_BUDGET: usize = 2 * DEFAULT_MAX_MESSAGE_SIZE;
/// Default `--budget-timeout`.
pub const DEFAULT_BUDGET_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `--max-call-time`.
pub const DEFAULT_MAX_CALL_TIME: Duration = Duration::from_secs(300);
/// Default `--keepalive-interval`.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Default `--keepalive-timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `--max-header-list-size` (bytes).
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Default `--handshake-timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--auth-open-services`: what load balancers and tools must reach without a token.
pub const DEFAULT_AUTH_OPEN_SERVICES: [&str; 3] = [
    tonic_health::pb::health_server::SERVICE_NAME,
    tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
];
/// Streams a connection may get reset for its own protocol errors before it is
/// closed with GOAWAY (hyper's default, the RUSTSEC-2024-0003 defence, which
/// tonic's builder would otherwise switch off).
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// Everything `echo-server` can be told, from flags or `ECHO_*` variables.
#[derive(Debug, Clone, PartialEq, Default, Parser)]
#[command(name = "echo-server", version, about)]
pub struct Config {
    /// Where to listen, who to say this is, how to run and stop.
    #[command(flatten)]
    pub listen: ListenConfig,
    /// Which services to serve besides `echo.v1.EchoService`.
    #[command(flatten)]
    pub services: ServicesConfig,
    /// Bounds on what a request's controls may ask for.
    #[command(flatten)]
    pub controls: ControlLimits,
    /// Limits on calls and connections.
    #[command(flatten)]
    pub limits: LimitsConfig,
    /// HTTP/2 settings and connection lifetimes.
    #[command(flatten)]
    pub http2: Http2Config,
    /// TLS and mutual TLS.
    #[command(flatten)]
    pub tls: TlsConfig,
    /// Browsers: the page and CORS.
    #[command(flatten)]
    pub browsers: BrowsersConfig,
    /// Bearer-token authentication.
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Logs and metrics.
    #[command(flatten)]
    pub observability: ObservabilityConfig,
    /// Faults every call gets, as if asked for by header.
    #[command(flatten)]
    pub faults: FaultsConfig,
    /// Calls to other servers on request (`Forward`).
    #[command(flatten)]
    pub forward: ForwardConfig,
    /// What load balancers read: ORCA load reports.
    #[command(flatten)]
    pub load: LoadConfig,
}

/// Default `--orca-min-interval`.
pub const DEFAULT_ORCA_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What load balancers read of this instance: its ORCA load reports.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Load reports")]
pub struct LoadConfig {
    /// The load this instance reports (ORCA, gRFC A51): every answer of a
    /// service under test carries it in the `endpoint-load-metrics-bin`
    /// trailer, and `xds.service.orca.v3.OpenRcaService` streams it; e.g.
    /// `cpu=0.5,mem=0.25,qps=100,util.gpu=0.8` (keys: cpu, mem, app, qps,
    /// eps, util.NAME, named.NAME, req.NAME; `cpu=auto` and `qps=auto`
    /// follow the real load). A call's `x-echo-load-report` header, in the
    /// same syntax, reports in its place [default: none].
    #[arg(long, env = "ECHO_LOAD_REPORT")]
    pub load_report: Option<LoadReportSpec>,

    /// The shortest interval at which `StreamCoreMetrics` reports, whatever a
    /// caller asks.
    #[arg(long, env = "ECHO_ORCA_MIN_INTERVAL", default_value_t = DEFAULT_ORCA_MIN_INTERVAL.into())]
    pub orca_min_interval: humantime::Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            load_report: None,
            orca_min_interval: DEFAULT_ORCA_MIN_INTERVAL.into(),
        }
    }
}

/// Default `--forward-max-hops`.
pub const DEFAULT_FORWARD_MAX_HOPS: u32 = 8;
/// Default `--forward-max-count`.
pub const DEFAULT_FORWARD_MAX_COUNT: u32 = 100;

/// Calls to other servers on request (`echo.v1.EchoService/Forward`).
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Forwarding")]
pub struct ForwardConfig {
    /// Targets `Forward` may call, comma-separated: `host` (any port),
    /// `host:port`, or a network (`10.0.0.0/8`, matching targets given as
    /// addresses) [default: none: forwarding is off].
    #[arg(long, env = "ECHO_FORWARD_ALLOW", value_delimiter = ',')]
    pub forward_allow: Vec<AllowedTarget>,

    /// Servers a request may pass through (the `x-echo-hops` chain); a
    /// Forward past it is FAILED_PRECONDITION, which stops loops.
    #[arg(long, env = "ECHO_FORWARD_MAX_HOPS", default_value_t = DEFAULT_FORWARD_MAX_HOPS)]
    pub forward_max_hops: u32,

    /// Largest `count` of one Forward (its calls run one after another).
    #[arg(long, env = "ECHO_FORWARD_MAX_COUNT", default_value_t = DEFAULT_FORWARD_MAX_COUNT)]
    pub forward_max_count: u32,

    /// PEM CA certificates trusted for downstreams a Forward calls over TLS
    /// [default: TLS downstreams refused].
    #[arg(long, env = "ECHO_FORWARD_CA_FILE")]
    pub forward_ca_file: Option<PathBuf>,

    /// PEM certificate chain this server presents to TLS downstreams (mutual TLS).
    #[arg(long, env = "ECHO_FORWARD_CERT_FILE", requires = "forward_key_file")]
    pub forward_cert_file: Option<PathBuf>,

    /// PEM private key of `--forward-cert-file`.
    #[arg(long, env = "ECHO_FORWARD_KEY_FILE", requires = "forward_cert_file")]
    pub forward_key_file: Option<PathBuf>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            forward_allow: Vec::new(),
            forward_max_hops: DEFAULT_FORWARD_MAX_HOPS,
            forward_max_count: DEFAULT_FORWARD_MAX_COUNT,
            forward_ca_file: None,
            forward_cert_file: None,
            forward_key_file: None,
        }
    }
}

/// Faults every call gets, as if asked for by header.
#[derive(Debug, Clone, PartialEq, Default, Args)]
#[command(next_help_heading = "Faults")]
pub struct FaultsConfig {
    /// Behaviours of every call that has no `x-echo-behavior` header of its
    /// own, in that header's syntax (e.g. `error=UNAVAILABLE:30%`): a whole
    /// instance made flaky without touching its clients.
    #[arg(long, env = "ECHO_FAULT")]
    pub fault: Option<Behaviors>,

    /// Seed of the draws of weighted behaviours: the same seed and the same
    /// order of requests give the same outcomes [default: random].
    #[arg(long, env = "ECHO_FAULT_SEED")]
    pub fault_seed: Option<u64>,

    /// A chaos schedule, repeatable (in `ECHO_CHAOS`, separated by `;`): an
    /// event and its settings, e.g. `errors code=UNAVAILABLE for=5s every=1m`;
    /// events: `goaway`, `close fraction=F`, `slow delay=D`, `errors
    /// code=CODE`, `unhealthy`; every one takes `every=P`, `after=T` and
    /// `jitter=J`, and windows `for=W` [default: none].
    #[arg(long = "chaos", env = "ECHO_CHAOS", value_delimiter = ';')]
    pub chaos: Vec<Schedule>,

    /// A file of chaos schedules, one per line as `--chaos` takes them (`#`
    /// comments); read when the command line is.
    #[arg(long, env = "ECHO_CHAOS_FILE")]
    pub chaos_file: Option<ChaosFile>,

    /// Seed of the schedules' jitter and of which connections `close` picks [default: random].
    #[arg(long, env = "ECHO_CHAOS_SEED")]
    pub chaos_seed: Option<u64>,
}

impl FaultsConfig {
    /// Every chaos schedule: `--chaos`, then those of `--chaos-file`.
    pub fn schedules(&self) -> impl Iterator<Item = &Schedule> {
        let file = self.chaos_file.iter().flat_map(|file| &file.schedules);
        self.chaos.iter().chain(file)
    }
}

/// Where to listen, who to say this is, how to run and stop.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Listen and identity")]
pub struct ListenConfig {
    /// Address to listen on.
    #[arg(long, env = "ECHO_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Instance id reported in every response [default: the host name].
    #[arg(long, env = "ECHO_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Runtime worker threads (default: one per CPU the process may use). With
    /// one, the server runs on a single-threaded runtime, which spares the
    /// cross-thread hand-offs a one-worker multi-threaded runtime still makes.
    #[arg(long, env = "ECHO_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    /// After SIGINT/SIGTERM, how long open streams may go on before they end with UNAVAILABLE.
    #[arg(long, env = "ECHO_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE.into())]
    pub shutdown_grace: humantime::Duration,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a socket address"),
            instance_id: None,
            worker_threads: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE.into(),
        }
    }
}

impl ListenConfig {
    /// The instance id to report: the configured one, else the host name.
    pub fn instance(&self) -> String {
        self.instance_id
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
    }
}

/// Which services to serve besides `echo.v1.EchoService`, health and reflection.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Services")]
pub struct ServicesConfig {
    /// Serve the gRPC interop service `grpc.testing.TestService` (`true` or `false`).
    #[arg(long, env = "ECHO_INTEROP", default_value_t = true, action = clap::ArgAction::Set)]
    pub interop: bool,

    /// Serve the Connect conformance suite's `connectrpc.conformance.v1.ConformanceService`
    /// (`true` or `false`).
    #[arg(long, env = "ECHO_CONFORMANCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub conformance: bool,

    /// Serve `echo.v1.AdminService` (set the reported health at run time); needs a
    /// bearer token when `--auth-token-file` is set.
    #[arg(long, env = "ECHO_ADMIN")]
    pub admin: bool,

    /// Serve gRPC's channelz (`grpc.channelz.v1.Channelz`): this server's
    /// calls, connections and peers' addresses, and Forward's downstream
    /// channels; needs a bearer token when `--auth-token-file` is set.
    #[arg(long, env = "ECHO_CHANNELZ")]
    pub channelz: bool,

    /// Also serve the RFC 862 Echo Protocol on TCP at this address [default: off].
    #[arg(long, env = "ECHO_TCP_ECHO_ADDR")]
    pub tcp_echo_addr: Option<SocketAddr>,

    /// Also serve the RFC 862 Echo Protocol on UDP at this address [default: off].
    #[arg(long, env = "ECHO_UDP_ECHO_ADDR")]
    pub udp_echo_addr: Option<SocketAddr>,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            interop: true,
            conformance: true,
            admin: false,
            channelz: false,
            tcp_echo_addr: None,
            udp_echo_addr: None,
        }
    }
}

/// Bounds on what a request's controls may ask for.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Request controls")]
pub struct ControlLimits {
    /// Largest `delay` and `stream.interval` a request may ask for.
    #[arg(long, env = "ECHO_MAX_DELAY", default_value_t = DEFAULT_MAX_DELAY.into())]
    pub max_delay: humantime::Duration,

    /// Largest `stream.count` a request may ask for.
    #[arg(long, env = "ECHO_MAX_STREAM_COUNT", default_value_t = DEFAULT_MAX_STREAM_COUNT)]
    pub max_stream_count: u32,

    /// Largest `response_size` (bytes) a request may ask for.
    #[arg(long, env = "ECHO_MAX_PAYLOAD_SIZE", default_value_t = DEFAULT_MAX_PAYLOAD_SIZE)]
    pub max_payload_size: u32,

    /// How many messages a ClientStream summary lists before truncating.
    #[arg(long, env = "ECHO_MAX_SUMMARY_MESSAGES", default_value_t = DEFAULT_MAX_SUMMARY_MESSAGES)]
    pub max_summary_messages: u32,
}

impl Default for ControlLimits {
    fn default() -> Self {
        Self {
            max_delay: DEFAULT_MAX_DELAY.into(),
            max_stream_count: DEFAULT_MAX_STREAM_COUNT,
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            max_summary_messages: DEFAULT_MAX_SUMMARY_MESSAGES,
        }
    }
}

/// Limits on calls and connections.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitsConfig {
    /// Largest message (bytes) received or sent, after decompression.
    #[arg(long, env = "ECHO_MAX_MESSAGE_SIZE", default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    pub max_message_size: usize,

    /// Largest message (bytes) sent, when it differs from what is received
    /// [default: --max-message-size].
    #[arg(long, env = "ECHO_MAX_SEND_MESSAGE_SIZE")]
    pub max_send_message_size: Option<usize>,

    /// Connections open at once; more are closed as soon as they are accepted.
    #[arg(long, env = "ECHO_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Calls starting at once across all connections; more get RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "ECHO_MAX_CONCURRENT_CALLS", default_value_t = DEFAULT_MAX_CONCURRENT_CALLS)]
    pub max_concurrent_calls: usize,

    /// Longest a call may last, whatever deadline its caller sets (DEADLINE_EXCEEDED past it).
    #[arg(long, env = "ECHO_MAX_CALL_TIME", default_value_t = DEFAULT_MAX_CALL_TIME.into())]
    pub max_call_time: humantime::Duration,

    /// Connections open at once from one IP address [default: no limit].
    #[arg(long, env = "ECHO_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,

    /// Request bytes of messages not all arrived yet, held across all connections (bytes).
    #[arg(long, env = "ECHO_REQUEST_BUFFER_BUDGET", default_value_t = DEFAULT_REQUEST_BUFFER_BUDGET)]
    pub request_buffer_budget: usize,

    /// The same, per connection (at least --max-message-size).
    #[arg(long, env = "ECHO_CONNECTION_REQUEST_BUFFER_BUDGET", default_value_t = DEFAULT_CONNECTION_REQUEST_BUFFER_BUDGET)]
    pub connection_request_buffer_budget: usize,

    /// Answer bytes produced and not yet sent, across all connections (bytes).
    #[arg(long, env = "ECHO_ANSWER_BUFFER_BUDGET", default_value_t = DEFAULT_ANSWER_BUFFER_BUDGET)]
    pub answer_buffer_budget: usize,

    /// The same, per connection.
    #[arg(long, env = "ECHO_CONNECTION_ANSWER_BUFFER_BUDGET", default_value_t = DEFAULT_CONNECTION_ANSWER_BUFFER_BUDGET)]
    pub connection_answer_buffer_budget: usize,

    /// How long a request message may hold its reservation without progress, and a
    /// connection may hold answers its peer does not read while a budget is used up.
    #[arg(long, env = "ECHO_BUDGET_TIMEOUT", default_value_t = DEFAULT_BUDGET_TIMEOUT.into())]
    pub budget_timeout: humantime::Duration,
}

impl LimitsConfig {
    /// The largest message the server sends.
    pub fn max_send_message_size(&self) -> usize {
        self.max_send_message_size.unwrap_or(self.max_message_size)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_send_message_size: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_call_time: DEFAULT_MAX_CALL_TIME.into(),
            max_connections_per_ip: None,
            request_buffer_budget: DEFAULT_REQUEST_BUFFER_BUDGET,
            connection_request_buffer_budget: DEFAULT_CONNECTION_REQUEST_BUFFER_BUDGET,
            answer_buffer_budget: DEFAULT_ANSWER_BUFFER_BUDGET,
            connection_answer_buffer_budget: DEFAULT_CONNECTION_ANSWER_BUFFER_BUDGET,
            budget_timeout: DEFAULT_BUDGET_TIMEOUT.into(),
        }
    }
}

/// HTTP/2 settings, and how long a connection may live.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "HTTP/2")]
pub struct Http2Config {
    /// Streams one connection may have open at once (advertised in SETTINGS).
    #[arg(long, env = "ECHO_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,

    /// Largest header list (bytes) a request may send.
    #[arg(long, env = "ECHO_MAX_HEADER_LIST_SIZE", default_value_t = DEFAULT_MAX_HEADER_LIST_SIZE)]
    pub max_header_list_size: u32,

    /// Interval of HTTP/2 keepalive PINGs to idle peers.
    #[arg(long, env = "ECHO_KEEPALIVE_INTERVAL", default_value_t = DEFAULT_KEEPALIVE_INTERVAL.into())]
    pub keepalive_interval: humantime::Duration,

    /// A peer that does not answer a keepalive PING within this is disconnected.
    #[arg(long, env = "ECHO_KEEPALIVE_TIMEOUT", default_value_t = DEFAULT_KEEPALIVE_TIMEOUT.into())]
    pub keepalive_timeout: humantime::Duration,

    /// A new connection must finish its TLS handshake, and then send the HTTP/2 preface, within this.
    #[arg(long, env = "ECHO_HANDSHAKE_TIMEOUT", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.into())]
    pub handshake_timeout: humantime::Duration,

    /// Close connections this old (GOAWAY), so load balancers can rebalance [default: never].
    #[arg(long, env = "ECHO_MAX_CONNECTION_AGE")]
    pub max_connection_age: Option<humantime::Duration>,

    /// After `--max-connection-age`, how long open calls may finish before the connection is cut [default: until they finish].
    #[arg(
        long,
        env = "ECHO_MAX_CONNECTION_AGE_GRACE",
        requires = "max_connection_age"
    )]
    pub max_connection_age_grace: Option<humantime::Duration>,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL.into(),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT.into(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT.into(),
            max_connection_age: None,
            max_connection_age_grace: None,
        }
    }
}

/// TLS and mutual TLS.
#[derive(Debug, Clone, PartialEq, Default, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsConfig {
    /// Serve TLS with this PEM certificate chain (reloaded when the file changes or on SIGHUP).
    #[arg(long, env = "ECHO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "ECHO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates that chain to these PEM CA certificates (mutual TLS).
    #[arg(long, env = "ECHO_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Also serve HTTP/3 (QUIC) on UDP at the `--listen` address, and point
    /// HTTP/1.1 and HTTP/2 clients at it with `Alt-Svc`; needs TLS.
    #[arg(long, env = "ECHO_HTTP3", requires = "tls_cert")]
    pub http3: bool,
}

/// Browsers: the page, and which origins may call (CORS).
#[derive(Debug, Clone, PartialEq, Default, Args)]
#[command(next_help_heading = "Browsers")]
pub struct BrowsersConfig {
    /// Serve a page at `/` on the gRPC port for calling EchoService from a browser.
    #[arg(long, env = "ECHO_WEB")]
    pub web: bool,

    /// Answer CORS for these origins (comma-separated, or `*` for any) [default: off].
    #[arg(long, env = "ECHO_CORS_ALLOW_ORIGIN", value_delimiter = ',')]
    pub cors_allow_origin: Vec<String>,
}

/// Bearer-token authentication.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Auth")]
pub struct AuthConfig {
    /// Require `authorization: Bearer <token>` with a token from this file (one per line).
    #[arg(long, env = "ECHO_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Services reachable without a token (comma-separated full names).
    #[arg(long, env = "ECHO_AUTH_OPEN_SERVICES", value_delimiter = ',', default_values_t = DEFAULT_AUTH_OPEN_SERVICES.map(String::from))]
    pub auth_open_services: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            auth_token_file: None,
            auth_open_services: DEFAULT_AUTH_OPEN_SERVICES.map(String::from).to_vec(),
        }
    }
}

/// Logs and metrics.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Observability")]
pub struct ObservabilityConfig {
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "ECHO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Serve Prometheus metrics at `http://ADDR/metrics` [default: off].
    #[arg(long, env = "ECHO_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Export traces over OTLP/gRPC to this endpoint (e.g.
    /// `http://collector:4317`); `OTEL_EXPORTER_OTLP_ENDPOINT` does too
    /// [default: off].
    #[arg(long, env = "ECHO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Human,
            metrics_addr: None,
            otlp_endpoint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_defaults_and_default_agree() {
        let parsed = Config::try_parse_from(["echo-server"]).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn grammars_are_parsed_once_into_typed_values() {
        let parsed = Config::try_parse_from([
            "echo-server",
            "--fault",
            "error=UNAVAILABLE:30%",
            "--chaos",
            "goaway every=1s",
            "--forward-allow",
            "echo-b,10.0.0.0/8",
        ])
        .unwrap();
        assert!(parsed.faults.fault.as_ref().unwrap().error.is_some());
        assert_eq!(parsed.faults.schedules().count(), 1);
        assert_eq!(parsed.forward.forward_allow.len(), 2);
        for (flag, value, cause) in [
            ("--fault", "delay", "`delay` is not NAME=VALUE"),
            ("--chaos", "storm every=1s", "unknown chaos event `storm`"),
            ("--forward-allow", "a b", "`a b` is not a host"),
            (
                "--chaos-file",
                "/nonexistent/chaos",
                "/nonexistent/chaos: No such file",
            ),
        ] {
            let err = Config::try_parse_from(["echo-server", flag, value]).unwrap_err();
            let err = err.to_string();
            assert!(err.contains(flag) && err.contains(cause), "{err}");
        }
    }

    #[test]
    fn durations_take_human_units() {
        let parsed = Config::try_parse_from(["echo-server", "--shutdown-grace", "1m 30s"]).unwrap();
        assert_eq!(*parsed.listen.shutdown_grace, Duration::from_secs(90));
    }
}
