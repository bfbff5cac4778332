//! `echo-client bench`: a load generator for the echo RPCs, or any method of
//! any server. A library the `echo-client` binary calls; its steps are
//! modules:
//!
//! - `args`: [`BenchArgs`], the load's shape, checked before any load.
//! - `raw`: a method of any server as the target, and its messages.
//! - `targets`: the callers (one call each) and the loop that
//!   drives them on the schedule.
//! - `schedule`: closed or open loop, constant, stepped or ramped, warm-up.
//! - `pacer`: starts an open loop's calls on time, to tens of microseconds.
//! - `tally`: what a run measured (HDR histograms, errors, instances).
//! - `report`, `html`, `plot`, `histogram_log`: the reports (text, JSON,
//!   CSV, HTML, a percentile plot, HdrHistogram logs) and `bench merge`.
//! - `gate`: `--assert` thresholds, checked on the run and each step.
//! - `matrix`: a protocol matrix's comparison (text, JSON, HTML).
//! - `template`: per-request templates (`{{.RequestNumber}}`, ...).

pub mod args;
mod gate;
mod histogram_log;
mod html;
mod matrix;
mod pacer;
mod phases;
mod plot;
mod raw;
mod report;
mod schedule;
mod tally;
mod targets;
pub(crate) mod template;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use echo_client::proto::EchoRequest;
use echo_client::timing::Timeline;
use echo_client::{CallStats, ClientBuilder, ClientError, LeanUnary};
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use grpc_echo::grpc::testing::{Payload, PayloadType, SimpleRequest};
use tonic::client::Grpc;

use crate::output::Output;
pub use args::BenchArgs;
use args::{BenchCommand, BenchRpc};
use raw::{RawTarget, Shape};
use schedule::Schedule;
use tally::Tally;
use targets::{
    Caller, EchoBidi, EchoClientStream, EchoServerStream, EchoUnary, InteropUnary, PingPong,
    RawBidi, RawClientStream, RawServerStream, RawUnary, Requests,
};

/// Whether `bench` merges files instead of loading a server (it needs no
/// connection then).
pub fn merge_only(args: &BenchArgs, out: Output) -> Option<anyhow::Result<ExitCode>> {
    let Some(BenchCommand::Merge(merge)) = &args.command else {
        return None;
    };
    Some(histogram_log::merge(merge, out))
}

/// Runs the load and prints the report; exits 1 if any call failed.
pub async fn run(
    builder: &ClientBuilder,
    args: &BenchArgs,
    header_templates: &[(String, String)],
    out: Output,
) -> anyhow::Result<ExitCode> {
    check(builder, args, header_templates)?;
    let json = if out.json {
        report::Json::Print
    } else {
        report::Json::Off
    };
    let run = measure(builder, args, header_templates, json).await?;
    Ok(ExitCode::from(run.status(args)))
}

/// One cell of a protocol matrix: its protocol and HTTP version in words,
/// and its client, or why it cannot run.
pub struct Combination {
    /// e.g. "gRPC-Web over HTTP/1.1".
    pub wire: String,
    /// The client of the combination, or why there is none.
    pub builder: Result<ClientBuilder, String>,
}

/// A protocol matrix: the same load in each combination in turn, each
/// reported as a run is, then one table comparing them (`--json`: one object
/// with the `runs` and the `skipped`; `--html`: one page comparing them).
/// Exits as the worst run would (3, 1, 0); a combination that cannot run is
/// skipped with its reason.
pub async fn run_matrix(
    combinations: Vec<Combination>,
    args: BenchArgs,
    header_templates: &[(String, String)],
    out: Output,
) -> anyhow::Result<ExitCode> {
    if args.csv.is_some()
        || args.csv_calls.is_some()
        || args.plot.is_some()
        || args.histogram_out.is_some()
    {
        bail!(
            "--csv, --csv-calls, --plot and --histogram-out write one run: give one protocol and HTTP version (--html compares a matrix)"
        );
    }
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    // The worst status: 3 (an assertion failed) over 1 (a call failed).
    let mut status = 0;
    let plots = args.html.is_some();
    for Combination { wire, builder } in combinations {
        let builder = match builder {
            Ok(builder) => builder,
            Err(reason) => {
                rows.push(matrix::Row::skipped(wire, reason));
                continue;
            }
        };
        // Each run's own report, but its HTML page: the matrix has one.
        let run_args = BenchArgs {
            wire: wire.clone(),
            html: None,
            wire_bytes: true,
            ..args.clone()
        };
        check(&builder, &run_args, header_templates)?;
        let json = if out.json {
            report::Json::Into(&mut reports)
        } else {
            report::Json::Off
        };
        match measure(&builder, &run_args, header_templates, json).await {
            Ok(run) => {
                status = status.max(run.status(&run_args));
                rows.push(matrix::Row::ran(wire, &run.measured, &run.verdicts, plots));
            }
            Err(err) => {
                status = status.max(1);
                rows.push(matrix::Row::failed(wire, format!("{err:#}")));
            }
        }
    }
    matrix::report(&rows, reports, out);
    if let Some(path) = &args.html {
        std::fs::write(path, matrix::html(&args, &rows))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::from(status))
}

/// Loads the server as `args` say and writes the reports.
async fn measure(
    builder: &ClientBuilder,
    args: &BenchArgs,
    header_templates: &[(String, String)],
    json: report::Json<'_>,
) -> anyhow::Result<Run> {
    let raw = raw::raw_target(builder, args, header_templates).await?;
    let started = std::time::SystemTime::now();
    // Every connection counts its retries here, for the report.
    let stats = Arc::new(CallStats::default());
    let mut builder = builder.clone().call_stats(Arc::clone(&stats));
    let timed = args.timing.then(phases::timeline);
    // The bytes on the wire are counted when timing, and in a matrix.
    let timeline = match &timed {
        Some((timeline, _)) => Some(timeline.clone()),
        None => args.wire_bytes.then(Timeline::bytes_only),
    };
    if let Some(timeline) = &timeline {
        builder = builder.timing(timeline.clone());
    }
    let builder = &builder;
    let mut measured = match &raw {
        None => measure_echo(builder, args).await?,
        Some(raw) => measure_raw(builder, args, raw).await?,
    };
    if let Some((timeline, phases)) = timed {
        let mut phases = std::mem::take(&mut *phases.lock().unwrap_or_else(|p| p.into_inner()));
        phases.add_connections(&timeline.connections());
        measured.phases = Some(phases);
    }
    measured.wire_bytes = timeline.map(|timeline| timeline.wire_bytes());
    let verdicts = write_reports(args, &measured, &stats, started, json)?;
    Ok(Run { measured, verdicts })
}

/// A run's measurements and assertions' verdicts.
struct Run {
    measured: Measured,
    verdicts: Vec<gate::Verdict>,
}

impl Run {
    /// The exit status: with assertions, they decide (0 or 3); without, any
    /// failed call fails the run (1).
    fn status(&self, args: &BenchArgs) -> u8 {
        if !args.assertions.is_empty() {
            gate::status(&self.verdicts)
        } else {
            u8::from(!self.measured.tally.errors.is_empty())
        }
    }
}

/// Refuses a load shape that cannot run, before connecting.
fn check(
    builder: &ClientBuilder,
    args: &BenchArgs,
    header_templates: &[(String, String)],
) -> anyhow::Result<()> {
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
    if !header_templates.is_empty() && raw::raw_target_named(args).is_none() {
        bail!("header templates (`{{{{...}}}}` in -H) apply to --call and --method loads");
    }
    Ok(())
}

/// Loads echo.v1 (or the interop UnaryCall) with `--rpc`'s calls.
async fn measure_echo(builder: &ClientBuilder, args: &BenchArgs) -> anyhow::Result<Measured> {
    let request = EchoRequest {
        payload: vec![b'*'; args.payload_size].into(),
        ..Default::default()
    };
    let connect = || builder.clone().connect();
    match args.rpc {
        BenchRpc::Unary => {
            let callers = connect_each(args, || async {
                Ok(EchoUnary {
                    client: connect().await?,
                    request: request.clone(),
                })
            });
            load(callers.await?, args).await
        }
        BenchRpc::ServerStream => {
            let callers = connect_each(args, || async {
                let client = connect().await?;
                Ok(EchoServerStream::new(
                    client,
                    request.clone(),
                    args.messages,
                ))
            });
            load(callers.await?, args).await
        }
        BenchRpc::ClientStream => {
            let callers = connect_each(args, || async {
                Ok(EchoClientStream {
                    client: connect().await?,
                    request: request.clone(),
                    messages: args.messages,
                })
            });
            load(callers.await?, args).await
        }
        BenchRpc::Bidi => {
            let callers = connect_each(args, || async {
                Ok(PingPong::new(EchoBidi(connect().await?), request.clone()))
            });
            load(callers.await?, args).await
        }
        BenchRpc::InteropUnary => {
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
            load(callers.await?, args).await
        }
    }
}

/// Loads a method of any server (`--method`, `--call`) in its shape.
async fn measure_raw(
    builder: &ClientBuilder,
    args: &BenchArgs,
    raw: &RawTarget,
) -> anyhow::Result<Measured> {
    let path = &raw.path;
    let messages = Requests::new(raw.messages.clone(), raw.templates.clone());
    let grpc = || async { anyhow::Ok(Grpc::new(builder.connect_transport().await?)) };
    match raw.shape {
        Shape::Unary => measure_raw_unary(builder, args, raw).await,
        Shape::ServerStream => {
            let callers = connect_each(args, || async {
                Ok(RawServerStream {
                    grpc: grpc().await?,
                    path: path.clone(),
                    messages: messages.clone(),
                })
            });
            load(callers.await?, args).await
        }
        Shape::ClientStream => {
            let callers = connect_each(args, || async {
                Ok(RawClientStream {
                    grpc: grpc().await?,
                    path: path.clone(),
                    messages: messages.clone(),
                    count: args.messages,
                })
            });
            load(callers.await?, args).await
        }
        Shape::Bidi => {
            let callers = connect_each(args, || async {
                let opener = RawBidi {
                    grpc: grpc().await?,
                    path: path.clone(),
                };
                Ok(PingPong::new(opener, raw.messages[0].clone()))
            });
            load(callers.await?, args).await
        }
    }
}

/// Loads a unary method of any server: with the lean caller when the
/// address allows it (plaintext, one server, one message, nothing made per
/// request), with the client library's transport otherwise.
async fn measure_raw_unary(
    builder: &ClientBuilder,
    args: &BenchArgs,
    raw: &RawTarget,
) -> anyhow::Result<Measured> {
    let lean = || LeanUnary::connect(builder, raw.path.as_str(), raw.messages[0].clone());
    let first = if raw.messages.len() == 1 && raw.templates.is_none() {
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
            load(callers, args).await
        }
        None | Some(Err(ClientError::Unsupported { .. })) => {
            let messages = Requests::new(raw.messages.clone(), raw.templates.clone());
            let callers = connect_each(args, || async {
                Ok(RawUnary {
                    grpc: Grpc::new(builder.connect_transport().await?),
                    path: raw.path.clone(),
                    messages: messages.clone(),
                })
            });
            load(callers.await?, args).await
        }
        Some(Err(err)) => Err(err).context("connecting for the benchmark"),
    }
}

/// Prints the report, and writes each one asked for.
fn write_reports(
    args: &BenchArgs,
    measured: &Measured,
    stats: &CallStats,
    started: std::time::SystemTime,
    json: report::Json<'_>,
) -> anyhow::Result<Vec<gate::Verdict>> {
    let Measured {
        tally,
        phases,
        wire_bytes,
        calls,
        elapsed,
    } = measured;
    let (calls, elapsed) = (*calls, *elapsed);
    let verdicts = report::verdicts(args, tally, calls, elapsed);
    let extra = report::Extra {
        phases: phases
            .as_ref()
            .map(|phases| (phases.json(), phases.lines())),
        wire_bytes: *wire_bytes,
    };
    report::print(args, tally, extra, calls, elapsed, stats, &verdicts, json);
    if let Some(path) = &args.histogram_out {
        histogram_log::write(path, &tally.latency, started, elapsed)?;
    }
    let write = |path: &std::path::Path, bytes: Vec<u8>| {
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    if let Some(path) = &args.csv {
        write(
            path,
            report::csv(args, tally, calls, elapsed, &verdicts).into_bytes(),
        )?;
    }
    if let (Some(path), Some(details)) = (&args.csv_calls, &tally.calls) {
        write(path, report::calls_csv(details).into_bytes())?;
    }
    if let Some(path) = &args.html {
        write(
            path,
            html::page(args, tally, calls, elapsed, &verdicts).into_bytes(),
        )?;
    }
    if let Some(path) = &args.plot {
        let svg = plot::svg(&tally.latency, &report::describe(args));
        let bytes = if path.extension().is_some_and(|ext| ext == "png") {
            plot::png(&svg).context("drawing the PNG plot")?
        } else {
            svg.into_bytes()
        };
        write(path, bytes)?;
    }
    Ok(verdicts)
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
    /// Each phase's histogram, with `--timing`.
    phases: Option<phases::Phases>,
    /// Bytes sent and received on the wire (warmup and connecting
    /// included), with `--timing` and in a matrix.
    wire_bytes: Option<(u64, u64)>,
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
        phases: None,
        wire_bytes: None,
        tally,
        calls: schedule.measured(),
        elapsed: schedule.measured_time(),
    })
}
