//! `echo-client`: calls every RPC of a grpc-echo server from the command line.

/// `println!` that ends the program quietly when stdout is closed (as by
/// `| head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

mod bench;
mod interop;
mod lean;
mod plot;
mod raw_echo;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use echo_client::proto::{
    ClientStreamResponse, ConnectionAction, ConnectionControl, EchoRequest, EchoResponse,
    ErrorControl, HealthStatus, MetadataEcho, StatusCode, StreamControl,
};
use echo_client::{ClientBuilder, EchoClient};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::LinesStream;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Status, Streaming};

/// Default `--addr`.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

#[derive(Debug, Parser)]
#[command(name = "echo-client", version, about = "Call a grpc-echo server")]
struct Cli {
    /// Server address: `http://host:port` or `host:port`; several, comma-separated,
    /// to balance calls over them.
    #[arg(long, global = true, env = "ECHO_ADDR", default_value = DEFAULT_ADDR)]
    addr: String,

    /// Balance calls over every address `--addr` resolves to (implied by a list).
    #[arg(long, global = true, env = "ECHO_BALANCE")]
    balance: bool,

    /// Deadline of each call (e.g. `500ms`, `5s`).
    #[arg(long, global = true, env = "ECHO_TIMEOUT", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,

    /// Retry idempotent calls (Echo) that fail as UNAVAILABLE up to this many
    /// times, with exponential backoff.
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

    /// Compress requests with this encoding (responses are accepted in gzip and zstd).
    #[arg(long, global = true, env = "ECHO_COMPRESS", value_enum)]
    compress: Option<Compression>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Unary Echo.
    Echo {
        /// Text to echo.
        #[arg(default_value = "")]
        message: String,
        #[command(flatten)]
        controls: Controls,
    },
    /// ServerStream: one request, `--count` responses.
    ServerStream {
        /// Text to echo.
        #[arg(default_value = "")]
        message: String,
        /// Number of responses.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Pause between responses.
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<Duration>,
        #[command(flatten)]
        controls: Controls,
    },
    /// ClientStream: sends each MESSAGE (or each stdin line), prints the summary.
    ClientStream {
        /// Messages to send; stdin lines when none are given.
        messages: Vec<String>,
    },
    /// BidiStream: sends stdin lines as they are typed, prints echoes as they arrive.
    Bidi,
    /// Health of SERVICE (the whole server by default); exits 1 unless SERVING.
    #[command(args_conflicts_with_subcommands = true)]
    Health {
        /// Service name, e.g. `echo.v1.EchoService`.
        #[arg(default_value = "")]
        service: String,
        /// Keep printing status changes until interrupted.
        #[arg(long)]
        watch: bool,
        #[command(subcommand)]
        set: Option<HealthCommand>,
    },
    /// Run gRPC interop test cases against a grpc.testing.TestService server.
    Interop(interop::InteropArgs),
    /// Load the server and report throughput, errors and latency percentiles.
    Bench(bench::BenchArgs),
    /// Send MESSAGE to an RFC 862 echo server over plain TCP and print what comes back.
    TcpEcho {
        /// The echo server, `host:port`.
        #[arg(long)]
        target: String,
        /// Text to send.
        message: String,
    },
    /// Send MESSAGE as one datagram to an RFC 862 echo server over UDP and print the reply.
    UdpEcho {
        /// The echo server, `host:port`.
        #[arg(long)]
        target: String,
        /// Text to send.
        message: String,
    },
}

#[derive(Debug, Subcommand)]
enum HealthCommand {
    /// Set the health SERVICE reports ("" for the whole server), on a server run with `--admin`.
    Set {
        /// Service name, or "" for the whole server.
        service: String,
        /// The status to report.
        #[arg(value_enum)]
        status: SetStatus,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
enum SetStatus {
    Serving,
    NotServing,
}

/// Controls that make the server misbehave on purpose.
#[derive(Debug, Args)]
struct Controls {
    /// Send a payload of this many bytes.
    #[arg(long, default_value_t = 0)]
    payload_size: usize,
    /// Ask the server for a response payload of this many bytes.
    #[arg(long)]
    response_size: Option<u32>,
    /// Ask the server to wait this long before answering.
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    /// Ask the server to fail with this code (name such as NOT_FOUND, or number).
    #[arg(long, value_parser = parse_code)]
    fail_code: Option<Code>,
    /// Status message of `--fail-code`.
    #[arg(long, default_value = "", requires = "fail_code")]
    fail_message: String,
    /// ErrorInfo metadata of `--fail-code`, as `key=value` (repeatable).
    #[arg(long, value_parser = parse_detail, requires = "fail_code")]
    fail_detail: Vec<(String, String)>,
    /// Ask the server to echo this call's metadata back.
    #[arg(long, value_enum)]
    echo_metadata: Option<EchoMetadata>,
    /// Ask the server to answer and then send GOAWAY on the connection.
    #[arg(long, group = "connection_action")]
    goaway: bool,
    /// Ask the server to reset the stream with this HTTP/2 error code (e.g. 8 for
    /// CANCEL) after the response messages, in place of the status.
    #[arg(long, group = "connection_action", conflicts_with = "fail_code")]
    reset_stream: Option<u32>,
    /// Ask the server to close the TCP connection in place of ending the call.
    #[arg(long, group = "connection_action")]
    close_connection: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Compression {
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EchoMetadata {
    Headers,
    Trailers,
    Both,
}

impl Controls {
    fn request(&self, message: String, stream: Option<StreamControl>) -> EchoRequest {
        EchoRequest {
            message,
            payload: (0..self.payload_size).map(|i| (i % 251) as u8).collect(),
            delay: self.delay.map(proto_duration),
            response_size: self.response_size,
            error: self.fail_code.map(|code| ErrorControl {
                code: code as i32,
                message: self.fail_message.clone(),
                details: self.fail_detail.iter().cloned().collect(),
            }),
            echo_metadata: match self.echo_metadata {
                None => MetadataEcho::None,
                Some(EchoMetadata::Headers) => MetadataEcho::Headers,
                Some(EchoMetadata::Trailers) => MetadataEcho::Trailers,
                Some(EchoMetadata::Both) => MetadataEcho::Both,
            } as i32,
            stream,
            connection: self.connection_control(),
        }
    }

    fn connection_control(&self) -> Option<ConnectionControl> {
        let (action, reset_code) = if self.goaway {
            (ConnectionAction::Goaway, 0)
        } else if let Some(code) = self.reset_stream {
            (ConnectionAction::ResetStream, code)
        } else if self.close_connection {
            (ConnectionAction::Close, 0)
        } else {
            return None;
        };
        Some(ConnectionControl {
            action: action as i32,
            reset_code,
        })
    }
}

fn write_stdout(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(err) = writeln!(std::io::stdout().lock(), "{line}") {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            // What a program killed by SIGPIPE reports, as shells expect.
            std::process::exit(141);
        }
        eprintln!("error: writing to stdout: {err}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // On one CPU (as when pinned for a benchmark) a single-threaded runtime
    // spares the hand-offs between threads.
    let one_cpu = std::thread::available_parallelism().map_or(true, |cpus| cpus.get() == 1);
    let runtime = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(main_async(cli)),
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn main_async(cli: Cli) -> ExitCode {
    let json = cli.json;
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            match err.downcast_ref::<Status>() {
                Some(status) => report_status(status, json),
                None if json => eprintln!("{}", json!({ "error": format!("{err:#}") })),
                None => eprintln!("error: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut builder = ClientBuilder::new(&cli.addr).connect_timeout(cli.connect_timeout);
    if cli.balance || cli.addr.contains(',') {
        let targets = cli.addr.split(',').map(|target| {
            let target = target.trim();
            target
                .split_once("://")
                .map_or(target, |(_, rest)| rest)
                .to_owned()
        });
        builder = builder.balanced(targets);
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
        builder = builder.compression(match compress {
            Compression::Gzip => CompressionEncoding::Gzip,
            Compression::Zstd => CompressionEncoding::Zstd,
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
    let wait = cli.timeout.unwrap_or(Duration::from_secs(5));
    match &cli.command {
        Command::TcpEcho { target, message } => {
            return raw_echo::tcp(target, message, wait, cli.json).await;
        }
        Command::UdpEcho { target, message } => {
            return raw_echo::udp(target, message, wait, cli.json).await;
        }
        _ => {}
    }
    if let Command::Interop(args) = &cli.command {
        let all_passed = interop::run(&builder, args).await?;
        return Ok(if all_passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if let Command::Bench(args) = &cli.command {
        let builder = builder.accept_compression(cli.compress.is_some());
        return bench::run(&builder, args, cli.json).await;
    }
    let client = builder.connect().await?;
    let out = Output {
        json: cli.json,
        show_metadata: cli.show_metadata,
    };

    match cli.command {
        Command::Echo { message, controls } => {
            let response = client.echo(controls.request(message, None)).await?;
            // tonic merges a unary call's trailers into its metadata.
            out.metadata("metadata", response.metadata());
            out.response(response.get_ref());
        }
        Command::ServerStream {
            message,
            count,
            interval,
            controls,
        } => {
            let stream = StreamControl {
                count: Some(count),
                interval: interval.map(proto_duration),
            };
            let response = client
                .server_stream(controls.request(message, Some(stream)))
                .await?;
            out.stream(response).await?;
        }
        Command::ClientStream { messages } => {
            let requests = message_source(messages).await?;
            let response = client.client_stream(requests).await?;
            out.metadata("metadata", response.metadata());
            out.summary(response.get_ref());
        }
        Command::Bidi => {
            let lines = LinesStream::new(tokio::io::BufReader::new(tokio::io::stdin()).lines());
            let requests = lines.map_while(Result::ok).map(|message| EchoRequest {
                message,
                ..Default::default()
            });
            let response = client.bidi_stream(requests).await?;
            out.stream(response).await?;
        }
        Command::Health {
            set: Some(HealthCommand::Set { service, status }),
            ..
        } => {
            let status = match status {
                SetStatus::Serving => HealthStatus::Serving,
                SetStatus::NotServing => HealthStatus::NotServing,
            };
            client.set_health(&service, status).await?;
            out.health(&service, status);
        }
        Command::Health {
            service,
            watch,
            set: None,
        } => {
            return health(&client, &service, watch, out).await;
        }
        Command::Interop(_)
        | Command::Bench(_)
        | Command::TcpEcho { .. }
        | Command::UdpEcho { .. } => {
            unreachable!("handled before connecting")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The requests of a client stream: `messages`, or stdin lines when there are none.
async fn message_source(
    messages: Vec<String>,
) -> anyhow::Result<impl tokio_stream::Stream<Item = EchoRequest> + Send + 'static> {
    let messages = if messages.is_empty() {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut read = Vec::new();
        while let Some(line) = lines.next_line().await.context("reading stdin")? {
            read.push(line);
        }
        read
    } else {
        messages
    };
    Ok(tokio_stream::iter(messages).map(|message| EchoRequest {
        message,
        ..Default::default()
    }))
}

async fn health(
    client: &EchoClient,
    service: &str,
    watch: bool,
    out: Output,
) -> anyhow::Result<ExitCode> {
    use echo_client::health_proto::health_check_response::ServingStatus;
    let serving = |status: ServingStatus| {
        if status == ServingStatus::Serving {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    if !watch {
        let status = client.health_check(service).await?;
        out.health(service, status);
        return Ok(serving(status));
    }
    let mut updates = client.health_watch(service).await?;
    let mut last = None;
    while let Some(update) = updates.message().await? {
        out.health(service, update.status());
        last = Some(update.status());
    }
    match last {
        Some(status) => Ok(serving(status)),
        None => bail!("the health watch ended without a status"),
    }
}

/// How results are printed: text, or JSON lines.
#[derive(Debug, Clone, Copy)]
struct Output {
    json: bool,
    show_metadata: bool,
}

impl Output {
    fn response(&self, response: &EchoResponse) {
        if self.json {
            out!(
                "{}",
                json!({
                    "message": response.message,
                    "payload_bytes": response.payload.len(),
                    "instance": response.instance,
                    "peer": response.peer,
                    "peer_identity": response.peer_identity,
                    "sequence": response.sequence,
                })
            );
        } else {
            out!(
                "{}  [seq {} · {} payload bytes · instance {} · peer {}]",
                response.message,
                response.sequence,
                response.payload.len(),
                response.instance,
                response.peer
            );
        }
    }

    fn summary(&self, summary: &ClientStreamResponse) {
        if self.json {
            out!(
                "{}",
                json!({
                    "count": summary.count,
                    "total_bytes": summary.total_bytes,
                    "messages": summary.messages,
                    "messages_truncated": summary.messages_truncated,
                    "sha256": summary.sha256,
                    "instance": summary.instance,
                    "peer": summary.peer,
                })
            );
        } else {
            out!(
                "{} messages, {} bytes, sha256 {}  [instance {} · peer {}]",
                summary.count,
                summary.total_bytes,
                summary.sha256,
                summary.instance,
                summary.peer
            );
            for message in &summary.messages {
                out!("  {message}");
            }
            if summary.messages_truncated {
                out!("  … (truncated)");
            }
        }
    }

    fn health(&self, service: &str, status: impl std::fmt::Debug + Copy) {
        let name = format!("{status:?}");
        if self.json {
            out!("{}", json!({ "service": service, "status": name }));
        } else {
            let service = if service.is_empty() {
                "(server)"
            } else {
                service
            };
            out!("{service}: {name}");
        }
    }

    async fn stream(
        &self,
        response: tonic::Response<Streaming<EchoResponse>>,
    ) -> anyhow::Result<()> {
        self.metadata("headers", response.metadata());
        let mut stream = response.into_inner();
        while let Some(message) = stream.message().await? {
            self.response(&message);
        }
        if let Some(trailers) = stream.trailers().await? {
            self.metadata("trailers", &trailers);
        }
        Ok(())
    }

    fn metadata(&self, kind: &str, metadata: &MetadataMap) {
        if !self.show_metadata {
            return;
        }
        let entries: Vec<(String, String)> = metadata
            .as_ref()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if self.json {
            let map: HashMap<_, _> = entries.into_iter().collect();
            out!("{}", json!({ kind: map }));
        } else {
            for (key, value) in entries {
                out!("< {kind}: {key}: {value}");
            }
        }
    }
}

/// Prints a failed call's status (and its rich details) to stderr.
fn report_status(status: &Status, json: bool) {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let mut detail_lines = Vec::new();
    if let Some(info) = details.error_info() {
        detail_lines.push(format!(
            "error info: reason {} domain {} metadata {:?}",
            info.reason, info.domain, info.metadata
        ));
    }
    if let Some(bad_request) = details.bad_request() {
        for violation in &bad_request.field_violations {
            detail_lines.push(format!(
                "bad field {}: {}",
                violation.field, violation.description
            ));
        }
    }
    let name = code_name(status.code());
    if json {
        let value: Value = json!({
            "error": {
                "code": status.code() as i32,
                "name": name,
                "message": status.message(),
                "details": detail_lines,
            }
        });
        eprintln!("{value}");
    } else {
        eprintln!(
            "error: {name} (code {}): {}",
            status.code() as i32,
            status.message()
        );
        for line in detail_lines {
            eprintln!("  {line}");
        }
    }
}

/// The canonical upper-case name of `code`, e.g. `NOT_FOUND`.
fn code_name(code: Code) -> String {
    let name = StatusCode::try_from(code as i32)
        .map(|c| c.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("STATUS_CODE_{}", code as i32));
    name.trim_start_matches("STATUS_CODE_").to_owned()
}

fn parse_code(text: &str) -> Result<Code, String> {
    if let Ok(number) = text.parse::<i32>() {
        return match StatusCode::try_from(number) {
            Ok(_) => Ok(Code::from_i32(number)),
            Err(_) => Err(format!("{number} is not a gRPC status code (0..=16)")),
        };
    }
    let wanted = text.trim().to_ascii_uppercase().replace('-', "_");
    StatusCode::from_str_name(&format!("STATUS_CODE_{wanted}"))
        .map(|c| Code::from_i32(c as i32))
        .ok_or_else(|| {
            format!("unknown status code {text:?} (try NOT_FOUND, UNAVAILABLE, 14, ...)")
        })
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
        MetadataValue::<tonic::metadata::Ascii>::try_from(value.as_str())
            .map_err(|e| format!("bad value for {key:?}: {e}"))?;
    }
    Ok((key, value))
}

fn parse_detail(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not `key=value`"))
}

fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: duration.as_secs() as i64,
        nanos: duration.subsec_nanos() as i32,
    }
}
