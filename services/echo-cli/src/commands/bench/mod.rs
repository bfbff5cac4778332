//! `echo-client bench`: a load generator for the echo RPCs, or any unary or
//! bidi method with raw messages. Closed or open loop ([`schedule`]), any
//! [`targets::Caller`] driven by one loop, HDR latency percentiles
//! ([`report`]) and a percentile plot ([`plot`]).

mod histogram_log;
mod html;
mod plot;
mod report;
mod schedule;
mod targets;
pub(crate) mod template;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use echo_client::proto::EchoRequest;
use echo_client::{CallStats, ClientBuilder, ClientError, LeanUnary};
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use grpc_echo::grpc::testing::{Payload, PayloadType, SimpleRequest};
use http::uri::PathAndQuery;
use tonic::client::Grpc;

use crate::commands::any::call::{self as any_call, RequestData};
use crate::commands::any::source::SourceArgs;
use crate::output::Output;
use report::Tally;
use schedule::{Rate, Schedule};
use targets::{
    Caller, EchoBidi, EchoClientStream, EchoServerStream, EchoUnary, InteropUnary, PingPong,
    RawBidi, RawClientStream, RawServerStream, RawUnary, Requests, Templates,
};
use template::Template;

/// Which RPC the load calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchRpc {
    /// Unary Echo.
    Unary,
    /// ServerStream with `--messages` responses per call.
    ServerStream,
    /// ClientStream with `--messages` requests per call.
    ClientStream,
    /// BidiStream ping-pong: one long-lived stream per worker, one message at a time.
    Bidi,
    /// The interop `grpc.testing.TestService/UnaryCall`, asking for a payload
    /// of `--payload-size` back.
    InteropUnary,
}

/// Arguments of `echo-client bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The RPC to load.
    #[arg(long, value_enum, default_value = "unary")]
    rpc: BenchRpc,
    /// Connections to open.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Concurrent calls per connection.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// How long to measure (after the warmup).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", conflicts_with = "total")]
    duration: Duration,
    /// Stop after this many measured calls instead of after `--duration`.
    #[arg(long)]
    total: Option<u64>,
    /// Calls during this first period are not counted.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Open loop: start this many calls per second, whatever the answers do.
    #[arg(long)]
    rps: Option<f64>,
    /// Stepped open loop: add this many calls per second to `--rps` every
    /// `--step-interval` (up to `--rps-max`).
    #[arg(long, requires = "rps", conflicts_with = "rps_ramp_to")]
    rps_step: Option<f64>,
    /// The rate a stepped open loop stops rising at [default: no limit].
    #[arg(long, requires = "rps_step")]
    rps_max: Option<f64>,
    /// Ramped open loop: from `--rps` to this rate, linearly over `--duration`.
    #[arg(long, requires = "rps", conflicts_with = "total")]
    rps_ramp_to: Option<f64>,
    /// Stepped concurrency: add this many concurrent calls per connection
    /// every `--step-interval`, from `--concurrency` up to `--concurrency-max`.
    #[arg(long, requires = "concurrency_max")]
    concurrency_step: Option<usize>,
    /// Where `--concurrency-step` stops.
    #[arg(long, requires = "concurrency_step")]
    concurrency_max: Option<usize>,
    /// How long each step of `--rps-step` or `--concurrency-step` lasts; the
    /// report is broken down per step.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    step_interval: Duration,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    payload_size: usize,
    /// Messages per call for the streaming RPCs.
    #[arg(long, default_value_t = 10)]
    messages: u32,
    /// Call this method (`/package.Service/Method`, unary or bidi per `--rpc`)
    /// of any server instead of `echo.v1`: each message is field `--field`
    /// holding `--payload-size` bytes of `*`, and answers are counted, not
    /// decoded.
    #[arg(long, value_parser = parse_method, conflicts_with = "call")]
    method: Option<PathAndQuery>,
    /// `--method`'s field number (a `string` or `bytes` field); 2 is
    /// echo.v1's `payload`, bytes echoed without a UTF-8 check.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=536_870_911), requires = "method")]
    field: u32,
    /// Call this method of any server (`package.Service/Method`, any shape)
    /// with the messages of `--data`, its descriptors from the server's
    /// reflection, `--proto` or `--protoset`. Client-streaming calls send
    /// `--messages` requests; bidi calls ping-pong the first message.
    #[arg(long, conflicts_with = "rpc")]
    call: Option<String>,
    /// `--call`'s request messages: JSON (several, one after another, are
    /// sent in turn), `@FILE`, or `@-` for stdin [default: an empty message].
    /// With `{{...}}` actions it is one request's template, made per request
    /// (`{{.RequestNumber}}`, `{{.WorkerID}}`, `{{.ConnectionID}}`,
    /// `{{.Timestamp}}`, `{{.TimestampUnix}}`, `{{.TimestampUnixMilli}}`,
    /// `{{.TimestampUnixNano}}`, `{{.UUID}}`, `{{randomString N}}`,
    /// `{{randomInt MIN MAX}}`); so can `-H` values be.
    #[arg(short = 'd', long = "data", value_parser = RequestData::parse, requires = "call")]
    data: Option<RequestData>,
    #[command(flatten)]
    source: SourceArgs,
    /// Also draw the latency percentile curve (log-scale tail) in this file,
    /// as SVG or PNG by its extension.
    #[arg(long, value_parser = parse_plot_path)]
    plot: Option<std::path::PathBuf>,
    /// Also write the latency histogram to this file (`-`: stdout, after the
    /// report), losslessly (an HdrHistogram interval log), for `bench merge`
    /// to combine with other workers'.
    #[arg(long)]
    histogram_out: Option<std::path::PathBuf>,
    /// Also write the report as CSV to this file: a row per step of a stepped
    /// schedule, and one for the whole run.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
    /// Also write every measured call as CSV to this file: worker, scheduled
    /// start and latency (ms), status.
    #[arg(long)]
    csv_calls: Option<std::path::PathBuf>,
    /// Also write the report as one self-contained HTML page to this file:
    /// summary, latency percentile plot, histogram, steps, errors.
    #[arg(long)]
    html: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<BenchCommand>,
}

/// What `bench` does besides loading a server.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Combine the `--histogram-out` files of several workers into one report
    /// with exact percentiles.
    Merge(histogram_log::MergeArgs),
}

fn parse_plot_path(path: &str) -> Result<std::path::PathBuf, String> {
    if !path.ends_with(".svg") && !path.ends_with(".png") {
        return Err("the plot is SVG or PNG: give a file name ending in .svg or .png".to_owned());
    }
    Ok(path.into())
}

fn parse_method(path: &str) -> Result<PathAndQuery, String> {
    if !path.starts_with('/') || path[1..].split('/').count() != 2 {
        return Err("expected /package.Service/Method".to_owned());
    }
    path.parse().map_err(|err| format!("{err}"))
}

/// The message `--method` sends: protobuf field `field` (length-delimited)
/// holding `size` bytes of `*`, which reads as a `string` or `bytes` field alike.
fn raw_message(field: u32, size: usize) -> Bytes {
    const LENGTH_DELIMITED: u64 = 2;
    let mut message = BytesMut::with_capacity(size + 15);
    put_varint(&mut message, u64::from(field) << 3 | LENGTH_DELIMITED);
    put_varint(&mut message, size as u64);
    message.put_bytes(b'*', size);
    message.freeze()
}

fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

impl BenchArgs {
    /// The open loop's rate, if open.
    fn rate(&self) -> Option<Rate> {
        let start = self.rps?;
        Some(match (self.rps_step, self.rps_ramp_to) {
            (Some(step), _) => Rate::Steps {
                start,
                step,
                every: self.step_interval,
                max: self.rps_max.unwrap_or(f64::INFINITY),
            },
            (None, Some(to)) => Rate::Ramp {
                from: start,
                to,
                over: self.duration,
            },
            (None, None) => Rate::Constant(start),
        })
    }

    /// Whether the load changes in steps (and is reported per step).
    fn stepped(&self) -> bool {
        self.rps_step.is_some() || self.concurrency_step.is_some()
    }

    /// Concurrent calls per connection during step `step` (from 0).
    fn concurrency_of_step(&self, step: usize) -> usize {
        match (self.concurrency_step, self.concurrency_max) {
            (Some(by), Some(max)) => (self.concurrency + by * step).min(max),
            _ => self.concurrency,
        }
    }
}

/// Whether `bench` merges files instead of loading a server (it needs no
/// connection then).
pub(crate) fn merge_only(args: &BenchArgs, out: Output) -> Option<anyhow::Result<ExitCode>> {
    let Some(BenchCommand::Merge(merge)) = &args.command else {
        return None;
    };
    Some(histogram_log::merge(merge, out))
}

/// Runs the load and prints the report; exits 1 if any call failed.
pub(crate) async fn run(
    builder: &ClientBuilder,
    args: &BenchArgs,
    header_templates: &[(String, String)],
    out: Output,
) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    let positive = |rate: Option<f64>| rate.is_none_or(|rate| rate > 0.0 && rate.is_finite());
    if !positive(args.rps) || !positive(args.rps_step) || !positive(args.rps_ramp_to) {
        bail!("--rps, --rps-step and --rps-ramp-to must be positive numbers");
    }
    if args
        .rps_max
        .is_some_and(|max| max.is_nan() || max < args.rps.unwrap_or_default())
    {
        bail!("--rps-max must be at least --rps");
    }
    if args.concurrency_step == Some(0)
        || args
            .concurrency_max
            .is_some_and(|max| max < args.concurrency)
    {
        bail!(
            "--concurrency-step must be at least 1, and --concurrency-max at least --concurrency"
        );
    }
    if args.step_interval.is_zero() {
        bail!("--step-interval must be longer than zero");
    }
    if args.method.is_some() && !matches!(args.rpc, BenchRpc::Unary | BenchRpc::Bidi) {
        bail!("--method calls unary or bidi methods: use --rpc unary or --rpc bidi");
    }
    if (args.method.is_some() || args.call.is_some()) && builder.is_balanced() {
        bail!("--method and --call call one server: give --addr a single address");
    }
    if !header_templates.is_empty() && raw_target_named(args).is_none() {
        bail!("header templates (`{{{{...}}}}` in -H) apply to --call and --method loads");
    }
    let raw = raw_target(builder, args, header_templates).await?;
    let started = std::time::SystemTime::now();
    // Every connection counts its retries here, for the report.
    let stats = Arc::new(CallStats::default());
    let builder = &builder.clone().call_stats(Arc::clone(&stats));
    let request = EchoRequest {
        payload: vec![b'*'; args.payload_size].into(),
        ..Default::default()
    };
    let measured = match (&raw, args.rpc) {
        (None, BenchRpc::Unary) => {
            let callers = connect_each(args, || async {
                Ok(EchoUnary {
                    client: builder.clone().connect().await?,
                    request: request.clone(),
                })
            });
            load(callers.await?, args).await?
        }
        (None, BenchRpc::ServerStream) => {
            let callers = connect_each(args, || async {
                Ok(EchoServerStream::new(
                    builder.clone().connect().await?,
                    request.clone(),
                    args.messages,
                ))
            });
            load(callers.await?, args).await?
        }
        (None, BenchRpc::ClientStream) => {
            let callers = connect_each(args, || async {
                Ok(EchoClientStream {
                    client: builder.clone().connect().await?,
                    request: request.clone(),
                    messages: args.messages,
                })
            });
            load(callers.await?, args).await?
        }
        (None, BenchRpc::Bidi) => {
            let callers = connect_each(args, || async {
                let client = builder.clone().connect().await?;
                Ok(PingPong::new(EchoBidi(client), request.clone()))
            });
            load(callers.await?, args).await?
        }
        (None, BenchRpc::InteropUnary) => {
            let request = SimpleRequest {
                response_type: PayloadType::Compressable as i32,
                response_size: i32::try_from(args.payload_size)
                    .context("--payload-size is too large for the interop service")?,
                payload: Some(Payload {
                    r#type: PayloadType::Compressable as i32,
                    body: request.payload.clone(),
                }),
                ..Default::default()
            };
            let callers = connect_each(args, || async {
                Ok(InteropUnary {
                    client: TestServiceClient::new(builder.connect_transport().await?),
                    request: request.clone(),
                })
            });
            load(callers.await?, args).await?
        }
        (
            Some(RawTarget {
                path,
                messages,
                templates,
                shape: Shape::Unary,
            }),
            _,
        ) => {
            // The lean caller when the address allows it (plaintext, one
            // server, one message, nothing made per request); the client
            // library's transport otherwise.
            let lean = || LeanUnary::connect(builder, path.as_str(), messages[0].clone());
            let first = if messages.len() == 1 && templates.is_none() {
                Some(lean().await)
            } else {
                None
            };
            match first {
                Some(Ok(first)) => {
                    let mut callers = vec![first];
                    for _ in 1..args.connections {
                        callers.push(lean().await.context("connecting for the benchmark")?);
                    }
                    load(callers, args).await?
                }
                None | Some(Err(ClientError::Unsupported { .. })) => {
                    let messages = Requests::new(messages.clone(), templates.clone());
                    let callers = connect_each(args, || async {
                        Ok(RawUnary {
                            grpc: Grpc::new(builder.connect_transport().await?),
                            path: path.clone(),
                            messages: messages.clone(),
                        })
                    });
                    load(callers.await?, args).await?
                }
                Some(Err(err)) => return Err(err).context("connecting for the benchmark"),
            }
        }
        (
            Some(RawTarget {
                path,
                messages,
                templates,
                shape: Shape::ServerStream,
            }),
            _,
        ) => {
            let messages = Requests::new(messages.clone(), templates.clone());
            let callers = connect_each(args, || async {
                Ok(RawServerStream {
                    grpc: Grpc::new(builder.connect_transport().await?),
                    path: path.clone(),
                    messages: messages.clone(),
                })
            });
            load(callers.await?, args).await?
        }
        (
            Some(RawTarget {
                path,
                messages,
                templates,
                shape: Shape::ClientStream,
            }),
            _,
        ) => {
            let messages = Requests::new(messages.clone(), templates.clone());
            let callers = connect_each(args, || async {
                Ok(RawClientStream {
                    grpc: Grpc::new(builder.connect_transport().await?),
                    path: path.clone(),
                    messages: messages.clone(),
                    count: args.messages,
                })
            });
            load(callers.await?, args).await?
        }
        (
            Some(RawTarget {
                path,
                messages,
                shape: Shape::Bidi,
                ..
            }),
            _,
        ) => {
            let callers = connect_each(args, || async {
                let grpc = Grpc::new(builder.connect_transport().await?);
                let opener = RawBidi {
                    grpc,
                    path: path.clone(),
                };
                Ok(PingPong::new(opener, messages[0].clone()))
            });
            load(callers.await?, args).await?
        }
    };
    let Measured {
        tally,
        calls,
        elapsed,
    } = measured;
    report::print(args, &tally, calls, elapsed, &stats, out.json);
    if let Some(path) = &args.histogram_out {
        histogram_log::write(path, &tally.latency, started, elapsed)?;
    }
    let write = |path: &std::path::Path, text: String| {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    if let Some(path) = &args.csv {
        write(path, report::csv(args, &tally, calls, elapsed))?;
    }
    if let (Some(path), Some(details)) = (&args.csv_calls, &tally.calls) {
        write(path, report::calls_csv(details))?;
    }
    if let Some(path) = &args.html {
        write(path, html::page(args, &tally, calls, elapsed))?;
    }
    if let Some(path) = &args.plot {
        let svg = plot::svg(&tally.latency, &report::describe(args));
        let bytes = if path.extension().is_some_and(|ext| ext == "png") {
            plot::png(&svg).context("drawing the PNG plot")?
        } else {
            svg.into_bytes()
        };
        std::fs::write(path, bytes)
            .with_context(|| format!("writing the plot to {}", path.display()))?;
    }
    Ok(if tally.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The method `--method` or `--call` names, if either does.
fn raw_target_named(args: &BenchArgs) -> Option<&str> {
    args.call
        .as_deref()
        .or(args.method.as_ref().map(PathAndQuery::as_str))
}

/// A method of any server, with encoded messages.
struct RawTarget {
    path: PathAndQuery,
    /// At least one.
    messages: Vec<Bytes>,
    /// What is made per request instead (bidi ping-pongs the first message).
    templates: Option<Arc<Templates>>,
    shape: Shape,
}

/// Which way a method streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unary,
    ServerStream,
    ClientStream,
    Bidi,
}

/// The method `--method` or `--call` names, if either does.
async fn raw_target(
    builder: &ClientBuilder,
    args: &BenchArgs,
    header_templates: &[(String, String)],
) -> anyhow::Result<Option<RawTarget>> {
    let headers = header_templates
        .iter()
        .map(|(key, value)| {
            let key = key
                .parse()
                .with_context(|| format!("{key:?} is not a header name"))?;
            let template =
                Template::parse(value).with_context(|| format!("the template of header {key}"))?;
            Ok((key, template))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(path) = &args.method {
        return Ok(Some(RawTarget {
            path: path.clone(),
            messages: vec![raw_message(args.field, args.payload_size)],
            templates: templates(None, headers),
            shape: if args.rpc == BenchRpc::Bidi {
                Shape::Bidi
            } else {
                Shape::Unary
            },
        }));
    }
    let Some(name) = &args.call else {
        return Ok(None);
    };
    let (service, _) = any_call::split_method(name)?;
    let pool = crate::commands::any::pool_for(builder, &args.source, service).await?;
    let method = crate::commands::any::find_method(&pool, name)?;
    let input = method.input();
    // A template is one request's JSON, made anew for each request; it is
    // made once here so that one that does not fit fails before the load.
    let text = args.data.as_ref().map(RequestData::text).transpose()?;
    let body = match &text {
        Some(text) if Template::is_template(text) => {
            let template = Template::parse(text).context("the --data template")?;
            let first = template.render(template::RequestContext {
                request: 0,
                worker: 0,
                connection: 0,
            });
            targets::encode(&input, &first).context("the --data template's first request")?;
            Some((template, input.clone()))
        }
        _ => None,
    };
    let messages = match &text {
        Some(text) if body.is_none() => any_call::parse_all(&input, text)?,
        _ => vec![prost_reflect::DynamicMessage::new(input.clone())],
    };
    if messages.is_empty() {
        bail!("--data holds no request message");
    }
    let shape = match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => Shape::Unary,
        (false, true) => Shape::ServerStream,
        (true, false) => Shape::ClientStream,
        (true, true) => Shape::Bidi,
    };
    Ok(Some(RawTarget {
        path: any_call::path_of(&method)?,
        messages: messages
            .iter()
            .map(|message| prost::Message::encode_to_vec(message).into())
            .collect(),
        templates: templates(body, headers),
        shape,
    }))
}

fn templates(
    body: Option<(Template, prost_reflect::MessageDescriptor)>,
    headers: Vec<(
        tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
        Template,
    )>,
) -> Option<Arc<Templates>> {
    (body.is_some() || !headers.is_empty()).then(|| {
        Arc::new(Templates {
            body,
            headers,
            made: Default::default(),
        })
    })
}

/// One caller per `--connections`, each with a connection of its own.
async fn connect_each<C, F, Fut>(args: &BenchArgs, connect: F) -> anyhow::Result<Vec<C>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<C>>,
{
    let mut callers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        callers.push(connect().await.context("connecting for the benchmark")?);
    }
    Ok(callers)
}

/// What a run measured.
struct Measured {
    tally: Tally,
    /// Measured calls, failed ones included.
    calls: u64,
    /// How long the measured part lasted.
    elapsed: Duration,
}

/// Runs `--concurrency` workers per caller on the schedule.
async fn load<C: Caller>(callers: Vec<C>, args: &BenchArgs) -> anyhow::Result<Measured> {
    let schedule = Arc::new(Schedule::new(
        args.warmup,
        args.duration,
        args.total,
        args.rate(),
        args.stepped().then_some(args.step_interval),
        args.csv_calls.is_some(),
    ));
    let per_connection = args.concurrency_max.unwrap_or(args.concurrency);
    let mut workers = Vec::with_capacity(callers.len() * per_connection);
    for (connection, caller) in callers.iter().enumerate() {
        for slot in 0..per_connection {
            // Stepped concurrency: the workers past `--concurrency` join one
            // step at a time.
            let joins = args
                .concurrency_step
                .filter(|_| slot >= args.concurrency)
                .map(|step| {
                    let steps = (slot - args.concurrency) / step + 1;
                    schedule.measure_from() + args.step_interval * steps as u32
                });
            let worker = workers.len();
            let mut caller = caller.clone();
            caller.assign(worker, connection);
            workers.push(tokio::spawn(targets::drive(
                caller,
                Arc::clone(&schedule),
                joins,
                worker,
            )));
        }
    }
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(schedule::progress(Arc::clone(&schedule))));
    let mut tally = Tally::new(0, args.csv_calls.is_some());
    for worker in workers {
        tally.merge(worker.await.context("a benchmark worker panicked")?);
    }
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[K");
    }
    Ok(Measured {
        tally,
        calls: schedule.measured(),
        elapsed: schedule.measured_time(),
    })
}

#[cfg(test)]
mod tests {
    use grpc_echo::echo::v1::EchoRequest;
    use prost::Message;

    use super::raw_message;

    #[test]
    fn raw_messages_fill_the_field_asked() {
        let as_message = EchoRequest::decode(raw_message(1, 200)).unwrap();
        assert_eq!(as_message.message, "*".repeat(200));
        assert!(as_message.payload.is_empty());
        let as_payload = EchoRequest::decode(raw_message(2, 70_000)).unwrap();
        assert_eq!(as_payload.payload, vec![b'*'; 70_000]);
        assert!(as_payload.message.is_empty());
    }
}
