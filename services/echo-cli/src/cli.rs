//! The command line: global flags, the client builder they make, and the
//! dispatch to each command.

use echo_client::telemetry::Telemetry;
use std::process::ExitCode;
use std::time::Duration;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use echo_client::load_report::WeightedConfig;
use echo_client::timing::Timeline;
use echo_client::{
    BalancePolicy, ClientBuilder, Codec, Compression as MessageCompression, Protocol,
};
use tonic::metadata::MetadataKey;

use crate::bench;
use crate::commands::{
    any, bidi, client_stream, echo, forward, health, interop, raw_echo, server_stream,
};
use crate::output::{self, Output};

/// How long a raw echo waits for its answer without `--timeout`.
const DEFAULT_RAW_ECHO_WAIT: Duration = Duration::from_secs(5);

/// The `echo-client` command line.
#[derive(Debug, Parser)]
#[command(name = "echo-client", version, about = "Call a grpc-echo server")]
pub struct Cli {
    #[command(flatten)]
    globals: Globals,

    #[command(subcommand)]
    command: Command,
}

/// The flags every command takes.
#[derive(Debug, Args)]
struct Globals {
    /// Server address: `http://host:port` or `host:port`; several, comma-separated,
    /// to balance calls over them.
    #[arg(long, global = true, env = "ECHO_ADDR", default_value = output::DEFAULT_ADDR)]
    addr: String,

    /// Balance calls over every address `--addr` resolves to (implied by a
    /// list and by `--balance-policy weighted`).
    #[arg(long, global = true, env = "ECHO_BALANCE")]
    balance: bool,

    /// How balanced calls pick a server: in turn, or weighted by the load
    /// each server reports in its answers (ORCA's `endpoint-load-metrics-bin`,
    /// as gRFC A58's weighted round robin weighs it: queries per second over
    /// utilization).
    #[arg(long, global = true, env = "ECHO_BALANCE_POLICY", value_enum, default_value_t = BalanceChoice::RoundRobin)]
    balance_policy: BalanceChoice,

    /// Weighted: how long a server must report before its weight counts
    /// (gRFC A58's blackout period).
    #[arg(long, global = true, env = "ECHO_WEIGHT_BLACKOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    weight_blackout: Duration,

    /// Weighted: take each server's load reports out of band, from its
    /// `OpenRcaService` stream at this interval, instead of from each
    /// answer's trailer (gRFC A58's `oob_reporting_period`).
    #[arg(long, global = true, env = "ECHO_OOB_REPORTING_PERIOD", value_parser = humantime::parse_duration)]
    oob_reporting_period: Option<Duration>,

    /// Deadline of each call (e.g. `500ms`, `5s`).
    #[arg(long, global = true, env = "ECHO_TIMEOUT", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,

    /// Retry idempotent calls (Echo, and the health checks) that fail as
    /// UNAVAILABLE up to this many times, with exponential backoff.
    #[arg(long, global = true, env = "ECHO_RETRIES", default_value_t = 0)]
    retries: u32,

    /// How long connecting may take.
    #[arg(long, global = true, env = "ECHO_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    connect_timeout: Duration,

    /// Metadata sent with each call, as `key:value` (repeatable; `-bin` keys take raw text).
    #[arg(short = 'H', long = "header", global = true, value_parser = parse_header)]
    headers: Vec<(String, String)>,

    /// Use TLS, trusting the CA certificates in this PEM file.
    #[arg(long, global = true, env = "ECHO_CA")]
    ca: Option<std::path::PathBuf>,

    /// The name to expect in the server's certificate [default: the address's host].
    #[arg(long, global = true, env = "ECHO_TLS_SERVER_NAME", requires = "ca")]
    tls_server_name: Option<String>,

    /// Client certificate chain (PEM) for mutual TLS.
    #[arg(long, global = true, env = "ECHO_TLS_CERT", requires_all = ["ca", "tls_key"])]
    tls_cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, global = true, env = "ECHO_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// Bearer token sent as `authorization` with each call.
    #[arg(long, global = true, env = "ECHO_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Print one JSON object per line instead of text.
    #[arg(long, global = true, env = "ECHO_JSON")]
    json: bool,

    /// Also print the response headers and trailers.
    #[arg(long, global = true)]
    show_metadata: bool,

    /// Print where each call's time went, phase by phase, on stderr: name
    /// resolution, TCP connect, TLS handshake (version, ALPN, resumption),
    /// HTTP/2 setup (QUIC's handshake for HTTP/3), then request sent,
    /// response headers, first message, last message and trailers, each as
    /// an offset and a duration; a call on a reused connection says so.
    /// `bench` reports the connection phases and the time to headers and to
    /// the first message as histograms beside the total.
    #[arg(long, global = true, env = "ECHO_TIMING")]
    timing: bool,

    /// Compress requests with this encoding (answers are accepted in gzip, zstd and deflate,
    /// and in the request's own).
    #[arg(long, global = true, env = "ECHO_COMPRESS", value_enum)]
    compress: Option<Compression>,

    /// The protocol calls are made in: test a gRPC-Web proxy or a Connect
    /// gateway in front of a server. `bench` takes a comma-separated list
    /// and runs each with each `--http-version` (a protocol matrix).
    #[arg(
        long,
        global = true,
        env = "ECHO_PROTOCOL",
        value_enum,
        value_delimiter = ',',
        default_value = "grpc"
    )]
    protocol: Vec<WireProtocol>,

    /// The HTTP version calls go over: `1.1` (gRPC-Web and Connect only),
    /// `2`, or `3` (QUIC; needs `--ca`). `bench` takes a comma-separated
    /// list (a protocol matrix) [default: 2].
    #[arg(long, global = true, env = "ECHO_HTTP_VERSION", value_enum, value_delimiter = ',', conflicts_with_all = ["http1", "http3"])]
    http_version: Vec<HttpChoice>,

    /// Make calls over HTTP/1.1 (`--protocol grpc-web` or `connect`; plaintext
    /// or TLS): `--http-version 1.1`.
    #[arg(long, global = true, env = "ECHO_HTTP1", conflicts_with = "http3")]
    http1: bool,

    /// Make calls over HTTP/3 (QUIC), in any protocol; needs TLS (`--ca`):
    /// `--http-version 3`.
    #[arg(long, global = true, env = "ECHO_HTTP3")]
    http3: bool,

    /// The messages' encoding on the wire: protobuf, or proto3 JSON (for the
    /// echo server's own services, whose descriptors the client holds; any
    /// other method goes in protobuf).
    #[arg(long, global = true, env = "ECHO_CODEC", value_enum, default_value_t = WireCodec::Proto)]
    codec: WireCodec,

    /// With `--protocol connect`, call methods without side effects (such as
    /// Echo) with GET, the message in the query.
    #[arg(long, global = true, env = "ECHO_CONNECT_GET")]
    connect_get: bool,
}

/// `--codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WireCodec {
    Proto,
    Json,
}

/// `--balance-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BalanceChoice {
    RoundRobin,
    Weighted,
}

/// `--http-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HttpChoice {
    #[value(name = "1.1")]
    Http1,
    #[value(name = "2")]
    Http2,
    #[value(name = "3")]
    Http3,
}

/// `--protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WireProtocol {
    Grpc,
    GrpcWeb,
    Connect,
}

impl From<WireProtocol> for Protocol {
    fn from(protocol: WireProtocol) -> Self {
        match protocol {
            WireProtocol::Grpc => Self::Grpc,
            WireProtocol::GrpcWeb => Self::GrpcWeb,
            WireProtocol::Connect => Self::Connect,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Unary Echo.
    Echo(echo::EchoArgs),
    /// ServerStream: one request, `--count` responses.
    ServerStream(server_stream::ServerStreamArgs),
    /// ClientStream: sends each MESSAGE (or each stdin line), prints the summary.
    ClientStream(client_stream::ClientStreamArgs),
    /// BidiStream: sends stdin lines as they are typed, prints echoes as they arrive.
    Bidi,
    /// Forward: the server calls TARGET (and that one the next, for a chain);
    /// prints each call's result; exits 1 unless all are OK.
    Forward(forward::ForwardArgs),
    /// Health of SERVICE (the whole server by default); exits 1 unless SERVING.
    #[command(args_conflicts_with_subcommands = true)]
    Health(health::HealthArgs),
    /// Run gRPC interop test cases against a grpc.testing.TestService server.
    Interop(interop::InteropArgs),
    /// Load the server and report throughput, errors and latency percentiles.
    #[command(args_conflicts_with_subcommands = true)]
    Bench(Box<bench::BenchArgs>),
    /// List the services a server (or `--proto`/`--protoset`) defines, or a SERVICE's methods.
    List(any::ListArgs),
    /// Print a service, method, message or enum as proto source.
    Describe(any::DescribeArgs),
    /// Call any method of any service with JSON; exits 64 + the status code if it fails.
    Call(any::CallArgs),
    /// Send MESSAGE to an RFC 862 echo server over plain TCP and print what comes back.
    TcpEcho(raw_echo::RawEchoArgs),
    /// Send MESSAGE as one datagram to an RFC 862 echo server over UDP and print the reply.
    UdpEcho(raw_echo::RawEchoArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Compression {
    Gzip,
    Zstd,
    Deflate,
    Br,
    Snappy,
}

/// `call` exits with this plus the status code when the call fails, as
/// grpcurl does (e.g. 69 for NOT_FOUND); other failures exit with 1.
pub(crate) const STATUS_EXIT_OFFSET: u8 = 64;

/// Runs the command in a client span, exported when an OTLP endpoint is set
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`): every call carries its trace context.
pub async fn run(cli: Cli) -> ExitCode {
    let telemetry = match Telemetry::start(None, "echo-client") {
        Ok(telemetry) => telemetry,
        Err(err) => {
            output::report_error(&anyhow::Error::new(err), cli.globals.json);
            return ExitCode::FAILURE;
        }
    };
    if let Some(telemetry) = &telemetry {
        tracing_subscriber::registry()
            .with(telemetry.layer())
            .init();
    }
    let span = tracing::info_span!(
        "echo-client",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty
    );
    let code = run_command(cli).instrument(span.clone()).await;
    if code != ExitCode::SUCCESS {
        span.record("otel.status_code", "ERROR");
    }
    // Closed, so that it is among the spans sent at shutdown.
    drop(span);
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    code
}

/// Runs the command; failures are printed here, once.
async fn run_command(cli: Cli) -> ExitCode {
    let json = cli.globals.json;
    let exit_by_status = matches!(cli.command, Command::Call(_));
    match dispatch(cli).await {
        Ok(code) => code,
        Err(err) => {
            output::report_error(&err, json);
            match err.downcast_ref::<tonic::Status>() {
                Some(status) if exit_by_status => {
                    ExitCode::from(STATUS_EXIT_OFFSET + status.code() as u8)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn dispatch(Cli { globals, command }: Cli) -> anyhow::Result<ExitCode> {
    let out = Output {
        json: globals.json,
        show_metadata: globals.show_metadata,
    };
    let raw_echo_wait = globals.timeout.unwrap_or(DEFAULT_RAW_ECHO_WAIT);
    // Every call's phases, printed once the command ends (failed or not).
    let timeline = (globals.timing && !matches!(command, Command::Bench(_))).then(Timeline::new);
    let timed = |globals: &Globals| match &timeline {
        Some(timeline) => builder(globals).map(|builder| builder.timing(timeline.clone())),
        None => builder(globals),
    };
    let ran = match command {
        Command::Echo(args) => echo::run(&timed(&globals)?, args, out).await,
        Command::ServerStream(args) => server_stream::run(&timed(&globals)?, args, out).await,
        Command::Forward(args) => forward::run(&timed(&globals)?, args, out).await,
        Command::ClientStream(args) => client_stream::run(&timed(&globals)?, args, out).await,
        Command::Bidi => bidi::run(&timed(&globals)?, out).await,
        Command::Health(args) => health::run(&timed(&globals)?, args, out).await,
        Command::Interop(args) => interop::run(&timed(&globals)?, &args).await,
        Command::List(args) => any::list(&timed(&globals)?, args, out).await,
        Command::Describe(args) => any::describe(&timed(&globals)?, args, out).await,
        Command::Call(args) => any::call(&timed(&globals)?, args, out).await,
        Command::TcpEcho(args) => raw_echo::tcp(&args, raw_echo_wait, out).await,
        Command::UdpEcho(args) => raw_echo::udp(&args, raw_echo_wait, out).await,
        Command::Bench(mut args) => {
            args.timing = globals.timing;
            if let Some(merged) = bench::merge_only(&args, out) {
                return merged;
            }
            // Header templates are made per request; the others go with every call.
            let mut globals = globals;
            let (templated, plain) = std::mem::take(&mut globals.headers)
                .into_iter()
                .partition(|(_, value)| bench::template::Template::is_template(value));
            globals.headers = plain;
            let templated: Vec<(String, String)> = templated;
            // The server's compression is measured only when asked for.
            let accept_compression = globals.compress.is_some();
            let combinations = combinations(&globals);
            if combinations.len() > 1 {
                let runs = combinations
                    .into_iter()
                    .map(|(protocol, http)| bench::Combination {
                        wire: wire(protocol, http),
                        builder: builder_for(&globals, protocol, http)
                            .map(|builder| builder.accept_compression(accept_compression))
                            .map_err(|err| err.to_string()),
                    })
                    .collect();
                return bench::run_matrix(runs, *args, &templated, out).await;
            }
            let builder = builder(&globals)?.accept_compression(accept_compression);
            let mut args = args;
            args.wire = builder.wire();
            bench::run(&builder, &args, &templated, out).await
        }
    };
    if let Some(timeline) = timeline {
        output::timing(&timeline.take_calls(), out.json);
    }
    ran
}

/// Every protocol and HTTP version the global flags name, in the order
/// given (protocols first).
fn combinations(cli: &Globals) -> Vec<(WireProtocol, HttpChoice)> {
    let versions = match (&cli.http_version[..], cli.http1, cli.http3) {
        ([], true, _) => vec![HttpChoice::Http1],
        ([], _, true) => vec![HttpChoice::Http3],
        ([], false, false) => vec![HttpChoice::Http2],
        (versions, _, _) => versions.to_vec(),
    };
    let mut combinations = Vec::new();
    for protocol in &cli.protocol {
        for version in &versions {
            if !combinations.contains(&(*protocol, *version)) {
                combinations.push((*protocol, *version));
            }
        }
    }
    combinations
}

/// A protocol and HTTP version in words ("gRPC-Web over HTTP/1.1"), as the
/// client library names them.
fn wire(protocol: WireProtocol, http: HttpChoice) -> String {
    ClientBuilder::new("")
        .protocol(protocol.into())
        .http1(http == HttpChoice::Http1)
        .http3(http == HttpChoice::Http3)
        .wire()
}

/// The client builder the global flags describe: one protocol and HTTP
/// version (lists are for `bench`).
fn builder(cli: &Globals) -> anyhow::Result<ClientBuilder> {
    match combinations(cli)[..] {
        [(protocol, http)] => builder_for(cli, protocol, http),
        _ => anyhow::bail!(
            "several protocols or HTTP versions are for `bench` (a protocol matrix): give this command one"
        ),
    }
}

/// The client builder of the global flags, in `protocol` over `http`.
fn builder_for(
    cli: &Globals,
    wire_protocol: WireProtocol,
    http: HttpChoice,
) -> anyhow::Result<ClientBuilder> {
    let (http1, http3) = (http == HttpChoice::Http1, http == HttpChoice::Http3);
    if http1 && wire_protocol == WireProtocol::Grpc {
        anyhow::bail!(
            "gRPC needs HTTP/2 or HTTP/3: HTTP/1.1 (--http1) takes --protocol grpc-web or connect"
        );
    }
    if http3 && cli.ca.is_none() {
        anyhow::bail!("HTTP/3 needs TLS (QUIC is always encrypted): give --ca");
    }
    let mut builder = ClientBuilder::new(&cli.addr)
        .connect_timeout(cli.connect_timeout)
        .protocol(wire_protocol.into())
        .http1(http1)
        .http3(http3)
        .codec(match cli.codec {
            WireCodec::Proto => Codec::Proto,
            WireCodec::Json => Codec::Json,
        })
        .connect_get(cli.connect_get);
    let weighted = cli.balance_policy == BalanceChoice::Weighted;
    if cli.balance || weighted || cli.addr.contains(',') {
        let targets = cli.addr.split(',').map(|target| {
            let target = target.trim();
            target
                .split_once("://")
                .map_or(target, |(_, rest)| rest)
                .to_owned()
        });
        builder = builder.balanced(targets);
    }
    if weighted {
        builder = builder.balance_policy(BalancePolicy::Weighted(WeightedConfig {
            blackout_period: cli.weight_blackout,
            out_of_band: cli.oob_reporting_period,
            ..WeightedConfig::default()
        }));
    }
    if let Some(timeout) = cli.timeout {
        builder = builder.timeout(timeout);
    }
    if cli.retries > 0 {
        builder = builder.retry(echo_client::RetryPolicy {
            max_attempts: cli.retries + 1,
            // Enough for every call in flight on a server that dies under load.
            budget_tokens: 1000,
            ..Default::default()
        });
    }
    if let Some(compress) = cli.compress {
        builder = builder.message_compression(match compress {
            Compression::Gzip => MessageCompression::Gzip,
            Compression::Zstd => MessageCompression::Zstd,
            Compression::Deflate => MessageCompression::Deflate,
            Compression::Br => MessageCompression::Brotli,
            Compression::Snappy => MessageCompression::Snappy,
        });
    }
    if let Some(ca) = &cli.ca {
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let identity = match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        builder = builder.tls(echo_client::TlsOptions {
            ca_pem: read(ca)?,
            server_name: cli.tls_server_name.clone(),
            identity,
        });
    }
    if let Some(token) = &cli.token {
        builder = builder.bearer_token(token)?;
    }
    for (key, value) in &cli.headers {
        builder = if key.ends_with("-bin") {
            builder.binary_metadata(key, value.as_bytes())?
        } else {
            builder.metadata(key, value)?
        };
    }
    Ok(builder)
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not `key:value`"))?;
    let key = key.trim().to_ascii_lowercase();
    let value = value.trim().to_owned();
    if key.ends_with("-bin") {
        MetadataKey::<tonic::metadata::Binary>::from_bytes(key.as_bytes())
            .map_err(|e| format!("bad key {key:?}: {e}"))?;
    } else {
        MetadataKey::<tonic::metadata::Ascii>::from_bytes(key.as_bytes())
            .map_err(|e| format!("bad key {key:?}: {e}"))?;
        tonic::metadata::MetadataValue::<tonic::metadata::Ascii>::try_from(value.as_str())
            .map_err(|e| format!("bad value for {key:?}: {e}"))?;
    }
    Ok((key, value))
}
