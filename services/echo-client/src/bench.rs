//! `echo-client bench`: a load generator for the echo RPCs. Closed loop (each
//! worker calls again as soon as it is answered) or open loop (`--rps`: calls
//! start on a fixed schedule and latency counts from the scheduled time, so a
//! stalled server cannot hide its queue). Latencies go into HDR histograms.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use echo_client::proto::{EchoRequest, StreamControl};
use echo_client::{ClientBuilder, EchoClient, Transport};

use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use grpc_echo::grpc::testing::{Payload, PayloadType, SimpleRequest};

use crate::lean::LeanUnary;
use hdrhistogram::Histogram;
use http::uri::PathAndQuery;
use serde_json::json;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Which RPC the load calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchRpc {
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
pub struct BenchArgs {
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
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    payload_size: usize,
    /// Messages per call for the streaming RPCs.
    #[arg(long, default_value_t = 10)]
    messages: u32,
    /// Call this method (`/package.Service/Method`, unary or bidi per `--rpc`)
    /// of any server instead of `echo.v1`: each message is field 1 holding
    /// `--payload-size` bytes of `*`, and answers are counted, not decoded.
    #[arg(long, value_parser = parse_method)]
    method: Option<PathAndQuery>,
    /// Also draw the latency percentile curve (log-scale tail) in this file,
    /// as SVG or PNG by its extension.
    #[arg(long, value_parser = parse_plot_path)]
    plot: Option<std::path::PathBuf>,
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

/// The message `--method` sends: protobuf field 1 (length-delimited) holding
/// `size` bytes of `*`, which reads as a `string` or `bytes` field alike.
fn raw_message(size: usize) -> Bytes {
    let mut message = BytesMut::with_capacity(size + 11);
    message.put_u8(0x0a);
    let mut length = size as u64;
    while length >= 0x80 {
        message.put_u8((length as u8 & 0x7f) | 0x80);
        length >>= 7;
    }
    message.put_u8(length as u8);
    message.put_bytes(b'*', size);
    message.freeze()
}

/// Passes encoded messages through untouched, both ways.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A client for `--method`: raw messages over the same transport as `EchoClient`.
#[derive(Clone)]
struct RawClient {
    grpc: Grpc<Transport>,
    path: PathAndQuery,
    message: Bytes,
}

impl RawClient {
    async fn unary(&mut self) -> Result<Answer, tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
        self.grpc
            .unary(
                tonic::Request::new(self.message.clone()),
                self.path.clone(),
                RawCodec,
            )
            .await?;
        Ok(Answer {
            messages: 1,
            instance: String::new(),
        })
    }
}

/// What one worker measured.
struct Tally {
    /// Microseconds per call (per message for bidi).
    latency: Histogram<u64>,
    /// Messages each way that measured calls carried.
    messages: u64,
    errors: BTreeMap<String, u64>,
    /// Answered calls (bidi: messages) per server instance that answered.
    instances: BTreeMap<String, u64>,
}

/// What a successful call (or bidi message) brought back.
struct Answer {
    messages: u64,
    instance: String,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            messages: 0,
            errors: BTreeMap::new(),
            instances: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency.add(other.latency).expect("same bounds");
        self.messages += other.messages;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        for (instance, count) in other.instances {
            *self.instances.entry(instance).or_default() += count;
        }
    }
}

/// When measuring starts and ends, and the open loop's schedule.
struct Plan {
    measure_from: Instant,
    measure_until: Option<Instant>,
    total: Option<u64>,
    /// Calls (or bidi messages) started so far, measured or not.
    started: AtomicU64,
    /// Measured calls finished so far.
    measured: AtomicU64,
    /// Open loop: the interval between scheduled starts.
    interval: Option<Duration>,
    origin: Instant,
}

impl Plan {
    /// The next call's scheduled start, or `None` when the run is over.
    fn next(&self) -> Option<Instant> {
        if self
            .total
            .is_some_and(|total| self.measured.load(Ordering::Relaxed) >= total)
        {
            return None;
        }
        let ticket = self.started.fetch_add(1, Ordering::Relaxed);
        let at = match self.interval {
            Some(interval) => self.origin + interval.mul_f64(ticket as f64),
            None => Instant::now(),
        };
        if self.measure_until.is_some_and(|until| at >= until) {
            return None;
        }
        Some(at)
    }

    fn record(&self, tally: &mut Tally, scheduled: Instant, result: Result<Answer, tonic::Status>) {
        if scheduled < self.measure_from {
            return;
        }
        self.measured.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(answer) => {
                let micros = scheduled.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                tally
                    .latency
                    .record(micros)
                    .expect("clamped into the bounds");
                tally.messages += answer.messages;
                // Looked up before inserting: the key is allocated once per instance.
                match tally.instances.get_mut(&answer.instance) {
                    Some(count) => *count += 1,
                    None => {
                        tally.instances.insert(answer.instance, 1);
                    }
                }
            }
            Err(status) => {
                *tally
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1
            }
        }
    }
}

/// Runs the load and prints the report.
pub async fn run(
    builder: &ClientBuilder,
    args: &BenchArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    if args.rps.is_some_and(|rps| !(rps > 0.0 && rps.is_finite())) {
        bail!("--rps must be a positive number");
    }
    if args.method.is_some() && !matches!(args.rpc, BenchRpc::Unary | BenchRpc::Bidi) {
        bail!("--method calls unary or bidi methods: use --rpc unary or --rpc bidi");
    }
    if args.method.is_some() && builder.is_balanced() {
        bail!("--method calls one server: give --addr a single address");
    }
    if args.method.is_some() && args.rpc == BenchRpc::InteropUnary {
        bail!("--rpc interop-unary calls grpc.testing.TestService/UnaryCall: drop --method");
    }
    let mut targets = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let target = match &args.method {
            None if args.rpc == BenchRpc::InteropUnary => Target::Interop(TestServiceClient::new(
                builder
                    .connect_transport()
                    .await
                    .context("connecting for the benchmark")?,
            )),
            None => Target::Echo(
                builder
                    .clone()
                    .connect()
                    .await
                    .context("connecting for the benchmark")?,
            ),
            Some(path) if args.rpc == BenchRpc::Unary && builder.plaintext_uri().is_some() => {
                let base = builder.plaintext_uri().expect("checked just above");
                Target::Lean(
                    LeanUnary::connect(
                        &base,
                        path.as_str(),
                        &raw_message(args.payload_size),
                        &builder.metadata_headers(),
                        builder.call_timeout(),
                    )
                    .await
                    .context("connecting for the benchmark")?,
                )
            }
            Some(path) => Target::Raw(RawClient {
                grpc: Grpc::new(
                    builder
                        .connect_transport()
                        .await
                        .context("connecting for the benchmark")?,
                ),
                path: path.clone(),
                message: raw_message(args.payload_size),
            }),
        };
        targets.push(target);
    }
    let origin = Instant::now();
    let measure_from = origin + args.warmup;
    let plan = Arc::new(Plan {
        measure_from,
        measure_until: args.total.is_none().then(|| measure_from + args.duration),
        total: args.total,
        started: AtomicU64::new(0),
        measured: AtomicU64::new(0),
        interval: args.rps.map(|rps| Duration::from_secs_f64(1.0 / rps)),
        origin,
    });
    let request = EchoRequest {
        payload: vec![0x2a; args.payload_size].into(),
        ..Default::default()
    };

    let mut workers = Vec::new();
    for target in &targets {
        for _ in 0..args.concurrency {
            workers.push(tokio::spawn(worker(
                target.clone(),
                Arc::clone(&plan),
                request.clone(),
                args.rpc,
                args.messages,
            )));
        }
    }
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(progress(Arc::clone(&plan))));

    let mut tally = Tally::new();
    for worker in workers {
        tally.merge(worker.await.context("a benchmark worker panicked")?);
    }
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[K");
    }
    let measured = plan.measured.load(Ordering::Relaxed);
    let elapsed = (Instant::now().min(plan.measure_until.unwrap_or_else(Instant::now))
        - measure_from)
        .max(Duration::from_millis(1));
    report(args, &tally, measured, elapsed, json);
    if let Some(path) = &args.plot {
        let svg = crate::plot::svg(&tally.latency, &describe(args));
        let bytes = if path.extension().is_some_and(|ext| ext == "png") {
            crate::plot::png(&svg).context("drawing the PNG plot")?
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

/// What the workers call: the echo service, or any method with raw messages.
#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per worker, made once; boxing buys nothing"
)]
enum Target {
    Echo(EchoClient),
    Interop(TestServiceClient<Transport>),
    /// `--method`, unary, plaintext, single address: the cheapest caller.
    Lean(LeanUnary),
    Raw(RawClient),
}

async fn worker(
    target: Target,
    plan: Arc<Plan>,
    request: EchoRequest,
    rpc: BenchRpc,
    messages: u32,
) -> Tally {
    match (target, rpc) {
        (Target::Echo(client), BenchRpc::Bidi) => {
            bidi_worker(plan, request, async move |requests| {
                let echoes = client.bidi_stream(requests).await?.into_inner();
                Ok(Box::pin(echoes.map(|echo| {
                    echo.map(|echo| Answer {
                        messages: 1,
                        instance: echo.instance,
                    })
                })) as Answers)
            })
            .await
        }
        (Target::Raw(mut raw), BenchRpc::Bidi) => {
            let message = raw.message.clone();
            bidi_worker(plan, message, async move |requests| {
                raw.grpc
                    .ready()
                    .await
                    .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
                let echoes = raw
                    .grpc
                    .streaming(tonic::Request::new(requests), raw.path, RawCodec)
                    .await?
                    .into_inner();
                Ok(Box::pin(echoes.map(|echo| {
                    echo.map(|_| Answer {
                        messages: 1,
                        instance: String::new(),
                    })
                })) as Answers)
            })
            .await
        }
        (Target::Interop(mut interop), _) => {
            let size = request.payload.len();
            let request = SimpleRequest {
                response_type: PayloadType::Compressable as i32,
                response_size: size as i32,
                payload: Some(Payload {
                    r#type: PayloadType::Compressable as i32,
                    body: request.payload,
                }),
                ..Default::default()
            };
            let mut tally = Tally::new();
            while let Some(scheduled) = plan.next() {
                wait_until(scheduled).await;
                let result = interop.unary_call(request.clone()).await.map(|_| Answer {
                    messages: 1,
                    instance: String::new(),
                });
                plan.record(&mut tally, scheduled, result);
            }
            tally
        }
        (Target::Lean(mut lean), _) => {
            let mut tally = Tally::new();
            while let Some(scheduled) = plan.next() {
                wait_until(scheduled).await;
                let result = lean.call().await.map(|()| Answer {
                    messages: 1,
                    instance: String::new(),
                });
                plan.record(&mut tally, scheduled, result);
            }
            tally
        }
        (Target::Raw(mut raw), _) => {
            let mut tally = Tally::new();
            while let Some(scheduled) = plan.next() {
                wait_until(scheduled).await;
                let result = raw.unary().await;
                plan.record(&mut tally, scheduled, result);
            }
            tally
        }
        (Target::Echo(client), rpc) => call_worker(client, plan, request, rpc, messages).await,
    }
}

async fn call_worker(
    client: EchoClient,
    plan: Arc<Plan>,
    request: EchoRequest,
    rpc: BenchRpc,
    messages: u32,
) -> Tally {
    let mut tally = Tally::new();
    while let Some(scheduled) = plan.next() {
        wait_until(scheduled).await;
        let result = match rpc {
            BenchRpc::Unary => client.echo(request.clone()).await.map(|response| Answer {
                messages: 1,
                instance: response.into_inner().instance,
            }),
            BenchRpc::ServerStream => {
                let request = EchoRequest {
                    stream: Some(StreamControl {
                        count: Some(messages),
                        interval: None,
                    }),
                    ..request.clone()
                };
                server_stream(&client, request).await
            }
            BenchRpc::ClientStream => {
                let requests =
                    tokio_stream::iter(std::iter::repeat_n(request.clone(), messages as usize));
                client.client_stream(requests).await.map(|summary| {
                    let summary = summary.into_inner();
                    Answer {
                        messages: summary.count,
                        instance: summary.instance,
                    }
                })
            }
            BenchRpc::Bidi | BenchRpc::InteropUnary => {
                unreachable!("bidi and interop-unary have their own workers")
            }
        };
        plan.record(&mut tally, scheduled, result);
    }
    tally
}

async fn server_stream(client: &EchoClient, request: EchoRequest) -> Result<Answer, tonic::Status> {
    let mut stream = client.server_stream(request).await?.into_inner();
    let mut answer = Answer {
        messages: 0,
        instance: String::new(),
    };
    while let Some(response) = stream.message().await? {
        if answer.messages == 0 {
            answer.instance = response.instance;
        }
        answer.messages += 1;
    }
    Ok(answer)
}

/// Answers of a bidi stream, one per message.
type Answers = Pin<Box<dyn Stream<Item = Result<Answer, tonic::Status>> + Send>>;

/// Ping-pong on one stream opened by `open`: each message waits for the previous echo.
async fn bidi_worker<T: Clone + Send + 'static>(
    plan: Arc<Plan>,
    message: T,
    open: impl AsyncFnOnce(ReceiverStream<T>) -> Result<Answers, tonic::Status>,
) -> Tally {
    let mut tally = Tally::new();
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let Some(mut scheduled) = plan.next() else {
        return tally;
    };
    wait_until(scheduled).await;
    if sender.send(message.clone()).await.is_err() {
        return tally;
    }
    let mut echoes = match open(ReceiverStream::new(receiver)).await {
        Ok(echoes) => echoes,
        Err(status) => {
            plan.record(&mut tally, scheduled, Err(status));
            return tally;
        }
    };
    loop {
        let result = echoes
            .next()
            .await
            .unwrap_or_else(|| Err(tonic::Status::new(Code::Unknown, "the stream ended")));
        let failed = result.is_err();
        plan.record(&mut tally, scheduled, result);
        if failed {
            return tally;
        }
        let Some(next) = plan.next() else {
            return tally;
        };
        scheduled = next;
        wait_until(scheduled).await;
        if sender.send(message.clone()).await.is_err() {
            return tally;
        }
    }
}

/// Waits for a scheduled start; returns at once when it is due. tokio's
/// timer would wait for its next millisecond tick even then, which capped a
/// closed loop at one call per millisecond per worker.
async fn wait_until(scheduled: Instant) {
    if scheduled > Instant::now() {
        tokio::time::sleep_until(scheduled).await;
    }
}

/// A live line on a terminal: calls measured and their rate.
async fn progress(plan: Arc<Plan>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut last = 0;
    loop {
        ticks.tick().await;
        let measured = plan.measured.load(Ordering::Relaxed);
        eprint!("\r\x1b[K{measured} measured, {} /s", measured - last);
        last = measured;
    }
}

/// The load shape, in words.
fn describe(args: &BenchArgs) -> String {
    format!(
        "{:?} over {} connection(s) x {} concurrent, {}",
        args.rpc,
        args.connections,
        args.concurrency,
        args.rps.map_or("closed loop".to_owned(), |rps| format!(
            "open loop at {rps}/s"
        )),
    )
}

fn report(args: &BenchArgs, tally: &Tally, measured: u64, elapsed: Duration, json: bool) {
    let seconds = elapsed.as_secs_f64();
    let rate = (measured - tally.errors.values().sum::<u64>()) as f64 / seconds;
    let message_rate = tally.messages as f64 / seconds;
    let h = &tally.latency;
    let ms = |micros: u64| micros as f64 / 1000.0;
    let percentiles = [50.0, 90.0, 99.0, 99.9].map(|q| (q, ms(h.value_at_quantile(q / 100.0))));
    if json {
        let latency: serde_json::Map<String, serde_json::Value> = [
            ("min".to_owned(), json!(ms(h.min()))),
            ("mean".to_owned(), json!(h.mean() / 1000.0)),
            ("max".to_owned(), json!(ms(h.max()))),
        ]
        .into_iter()
        .chain(percentiles.iter().map(|(q, v)| (format!("p{q}"), json!(v))))
        .collect();
        out!(
            "{}",
            json!({
                "rpc": format!("{:?}", args.rpc),
                "connections": args.connections,
                "concurrency": args.concurrency,
                "open_loop_rps": args.rps,
                "calls": measured,
                "seconds": seconds,
                "calls_per_second": rate,
                "messages_per_second": message_rate,
                "errors": tally.errors,
                "instances": tally.instances,
                "latency_ms": latency,
            })
        );
        return;
    }
    out!("{}: {measured} calls in {seconds:.2}s", describe(args));
    out!("  {rate:.0} calls/s, {message_rate:.0} messages/s");
    out!(
        "  latency ms: min {:.3}  mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(h.min()),
        h.mean() / 1000.0,
        percentiles[0].1,
        percentiles[1].1,
        percentiles[2].1,
        percentiles[3].1,
        ms(h.max()),
    );
    if !tally.errors.is_empty() {
        out!("  errors: {:?}", tally.errors);
    }
    if tally.instances.len() > 1 {
        out!("  answered by: {:?}", tally.instances);
    }
}
