//! `echo-client interop`: the gRPC interop test cases (grpc/grpc
//! `doc/interop-test-descriptions.md`) that need no cloud credentials, run
//! against any server of `grpc.testing.TestService`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Args;
use echo_client::ClientBuilder;
use echo_client::client::Transport;
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use grpc_echo::grpc::testing::unimplemented_service_client::UnimplementedServiceClient;
use grpc_echo::grpc::testing::{
    BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest,
    StreamingInputCallRequest, StreamingOutputCallRequest, StreamingOutputCallResponse,
};
use grpc_echo::wire::{CompressionPlan, ObservedBody, ObservedCompression, RecompressBody};
use http::HeaderValue;
use pin_project_lite::pin_project;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Status, Streaming};
use tower_layer::Layer;
use tower_service::Service;

/// Every case `--test-case all` runs, in order.
pub const ALL_CASES: [&str; 20] = [
    "empty_unary",
    "large_unary",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_streaming",
    "client_compressed_streaming",
    "server_streaming",
    "server_compressed_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "cancel_after_begin",
    "cancel_after_first_response",
    "status_code_and_message",
    "special_status_message",
    "custom_metadata",
    "unimplemented_method",
    "unimplemented_service",
    "rpc_soak",
    "channel_soak",
];

/// Arguments of `echo-client interop`.
#[derive(Debug, Args)]
pub struct InteropArgs {
    /// Case to run, a comma-separated list, or `all`.
    #[arg(long, default_value = "all")]
    test_case: String,
    /// Iterations of rpc_soak and channel_soak.
    #[arg(long, default_value_t = 10)]
    soak_iterations: u32,
    /// Failed iterations a soak case tolerates.
    #[arg(long, default_value_t = 0)]
    soak_max_failures: u32,
    /// Latency above which a soak iteration counts as failed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    soak_per_iteration_max_latency: Duration,
    /// Time limit of each case.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    case_timeout: Duration,
}

/// Runs the selected cases, printing a PASS/FAIL line each and a closing tally.
/// Returns whether every case passed.
pub async fn run(builder: &ClientBuilder, args: &InteropArgs) -> anyhow::Result<bool> {
    let cases: Vec<&str> = if args.test_case == "all" {
        ALL_CASES.to_vec()
    } else {
        args.test_case.split(',').map(str::trim).collect()
    };
    if let Some(unknown) = cases.iter().find(|case| !ALL_CASES.contains(case)) {
        bail!(
            "unknown test case {unknown:?}; known: all, {}",
            ALL_CASES.join(", ")
        );
    }

    let clients = Clients::connect(builder).await?;
    let (mut passed, mut failed) = (0, 0);
    for case in cases {
        let started = Instant::now();
        let result =
            tokio::time::timeout(args.case_timeout, run_case(case, &clients, builder, args))
                .await
                .unwrap_or_else(|_| Err(anyhow!("did not finish within {:?}", args.case_timeout)));
        let elapsed_ms = started.elapsed().as_millis();
        match result {
            Ok(()) => {
                passed += 1;
                out!("PASS {case} ({elapsed_ms} ms)");
            }
            Err(err) => {
                failed += 1;
                out!("FAIL {case} ({elapsed_ms} ms): {err:#}");
            }
        }
    }
    out!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// The clients of one connection.
#[derive(Clone)]
struct Clients {
    test: TestServiceClient<Interop>,
    unimplemented: UnimplementedServiceClient<Interop>,
}

impl Clients {
    async fn connect(builder: &ClientBuilder) -> anyhow::Result<Self> {
        let transport = PerMessageCompressionLayer.layer(builder.connect_transport().await?);
        Ok(Self {
            test: TestServiceClient::new(transport.clone())
                .accept_compressed(CompressionEncoding::Gzip),
            unimplemented: UnimplementedServiceClient::new(transport),
        })
    }

    fn test(&self) -> TestServiceClient<Interop> {
        self.test.clone()
    }
}

async fn run_case(
    case: &str,
    clients: &Clients,
    builder: &ClientBuilder,
    args: &InteropArgs,
) -> anyhow::Result<()> {
    match case {
        "empty_unary" => empty_unary(clients).await,
        "large_unary" => large_unary(clients).await,
        "client_compressed_unary" => client_compressed_unary(clients).await,
        "server_compressed_unary" => server_compressed_unary(clients).await,
        "client_streaming" => client_streaming(clients).await,
        "client_compressed_streaming" => client_compressed_streaming(clients).await,
        "server_streaming" => server_streaming(clients).await,
        "server_compressed_streaming" => server_compressed_streaming(clients).await,
        "ping_pong" => ping_pong(clients).await,
        "empty_stream" => empty_stream(clients).await,
        "timeout_on_sleeping_server" => timeout_on_sleeping_server(clients).await,
        "cancel_after_begin" => cancel_after_begin(clients).await,
        "cancel_after_first_response" => cancel_after_first_response(clients).await,
        "status_code_and_message" => status_code_and_message(clients).await,
        "special_status_message" => special_status_message(clients).await,
        "custom_metadata" => custom_metadata(clients).await,
        "unimplemented_method" => unimplemented_method(clients).await,
        "unimplemented_service" => unimplemented_service(clients).await,
        "rpc_soak" => soak(builder, args, Some(clients)).await,
        "channel_soak" => soak(builder, args, None).await,
        other => bail!("unknown test case {other:?}"),
    }
}

fn payload(size: usize) -> Option<Payload> {
    Some(Payload {
        r#type: PayloadType::Compressable as i32,
        body: vec![0; size].into(),
    })
}

fn flag(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

fn check_payload(payload: Option<&Payload>, size: usize) -> anyhow::Result<()> {
    let body = payload.map_or(&[][..], |p| &p.body[..]);
    ensure!(
        body.len() == size,
        "payload of {} bytes, expected {size}",
        body.len()
    );
    ensure!(body.iter().all(|&b| b == 0), "payload is not all zeros");
    Ok(())
}

fn expect_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
) -> anyhow::Result<Status> {
    match result {
        Ok(value) => bail!("expected {code:?}, the call succeeded with {value:?}"),
        Err(status) if status.code() == code => Ok(status),
        Err(status) => bail!(
            "expected {code:?}, got {:?}: {}",
            status.code(),
            status.message()
        ),
    }
}

fn large_unary_request() -> SimpleRequest {
    SimpleRequest {
        response_type: PayloadType::Compressable as i32,
        response_size: 314_159,
        payload: payload(271_828),
        ..Default::default()
    }
}

/// A request whose messages are compressed where `plan` says (gzip).
fn compressed<T>(message: T, plan: &[bool]) -> Request<T> {
    let flags = CompressionPlan::default();
    for &compress in plan {
        flags.0.push(compress);
    }
    let mut request = Request::new(message);
    request.extensions_mut().insert(flags);
    request
}

/// The compressed flags of the response messages, as they arrived.
fn observed_flags(extensions: &http::Extensions, count: usize) -> anyhow::Result<Vec<bool>> {
    let observed = extensions
        .get::<ObservedCompression>()
        .context("no compression flags were observed")?;
    (0..count)
        .map(|i| {
            observed
                .0
                .pop()
                .with_context(|| format!("no flag for response {i}"))
        })
        .collect()
}

async fn empty_unary(clients: &Clients) -> anyhow::Result<()> {
    let response = clients.test().empty_call(Empty {}).await?;
    ensure!(response.get_ref() == &Empty {}, "not empty: {response:?}");
    Ok(())
}

async fn large_unary(clients: &Clients) -> anyhow::Result<()> {
    let response = clients.test().unary_call(large_unary_request()).await?;
    check_payload(response.get_ref().payload.as_ref(), 314_159)
}

async fn client_compressed_unary(clients: &Clients) -> anyhow::Result<()> {
    let expecting = |expect: bool| SimpleRequest {
        expect_compressed: flag(expect),
        ..large_unary_request()
    };
    // The probe: an uncompressed message that claims to be compressed is refused.
    let probe = clients.test().unary_call(expecting(true)).await;
    expect_code(probe, Code::InvalidArgument).context("feature probe")?;

    let response = clients
        .test()
        .unary_call(compressed(expecting(true), &[true]))
        .await?;
    check_payload(response.get_ref().payload.as_ref(), 314_159)?;
    let response = clients.test().unary_call(expecting(false)).await?;
    check_payload(response.get_ref().payload.as_ref(), 314_159)
}

async fn server_compressed_unary(clients: &Clients) -> anyhow::Result<()> {
    for compress in [true, false] {
        let request = SimpleRequest {
            response_compressed: flag(compress),
            ..large_unary_request()
        };
        let response = clients.test().unary_call(request).await?;
        check_payload(response.get_ref().payload.as_ref(), 314_159)?;
        let flags = observed_flags(response.extensions(), 1)?;
        ensure!(
            flags == [compress],
            "response_compressed {compress} but the flag was {flags:?}"
        );
    }
    Ok(())
}

async fn client_streaming(clients: &Clients) -> anyhow::Result<()> {
    let sizes = [27_182, 8, 1_828, 45_904];
    let requests = sizes.map(|size| StreamingInputCallRequest {
        payload: payload(size),
        ..Default::default()
    });
    let response = clients
        .test()
        .streaming_input_call(tokio_stream::iter(requests))
        .await?;
    let total = response.get_ref().aggregated_payload_size;
    ensure!(
        total == 74_922,
        "aggregated_payload_size {total}, expected 74922"
    );
    Ok(())
}

async fn client_compressed_streaming(clients: &Clients) -> anyhow::Result<()> {
    let probe = [StreamingInputCallRequest {
        payload: payload(27_182),
        expect_compressed: flag(true),
    }];
    let probe = clients
        .test()
        .streaming_input_call(tokio_stream::iter(probe))
        .await;
    expect_code(probe, Code::InvalidArgument).context("feature probe")?;

    let requests = vec![
        StreamingInputCallRequest {
            payload: payload(27_182),
            expect_compressed: flag(true),
        },
        StreamingInputCallRequest {
            payload: payload(45_904),
            expect_compressed: flag(false),
        },
    ];
    let request = compressed(tokio_stream::iter(requests), &[true, false]);
    let response = clients.test().streaming_input_call(request).await?;
    let total = response.get_ref().aggregated_payload_size;
    ensure!(
        total == 73_086,
        "aggregated_payload_size {total}, expected 73086"
    );
    Ok(())
}

fn streaming_request(sizes: &[(i32, Option<bool>)]) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_type: PayloadType::Compressable as i32,
        response_parameters: sizes
            .iter()
            .map(|&(size, compressed)| ResponseParameters {
                size,
                compressed: compressed.and_then(flag),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn collect(
    stream: &mut Streaming<StreamingOutputCallResponse>,
) -> anyhow::Result<Vec<usize>> {
    let mut sizes = Vec::new();
    while let Some(response) = stream.message().await? {
        let size = response.payload.as_ref().map_or(0, |p| p.body.len());
        check_payload(response.payload.as_ref(), size)?;
        sizes.push(size);
    }
    Ok(sizes)
}

async fn server_streaming(clients: &Clients) -> anyhow::Result<()> {
    let sizes = [31_415, 9, 2_653, 58_979];
    let request = streaming_request(&sizes.map(|size| (size, None)));
    let mut stream = clients
        .test()
        .streaming_output_call(request)
        .await?
        .into_inner();
    let received = collect(&mut stream).await?;
    ensure!(
        received == sizes.map(|s| s as usize),
        "response sizes {received:?}"
    );
    Ok(())
}

async fn server_compressed_streaming(clients: &Clients) -> anyhow::Result<()> {
    let request = streaming_request(&[(31_415, Some(true)), (92_653, Some(false))]);
    let response = clients.test().streaming_output_call(request).await?;
    let extensions = response.extensions().clone();
    let mut stream = response.into_inner();
    let received = collect(&mut stream).await?;
    ensure!(received == [31_415, 92_653], "response sizes {received:?}");
    let flags = observed_flags(&extensions, 2)?;
    ensure!(
        flags == [true, false],
        "compressed flags {flags:?}, expected [true, false]"
    );
    Ok(())
}

/// `(request size, response size)` of each ping_pong exchange.
const PING_PONG: [(usize, i32); 4] = [(27_182, 31_415), (8, 9), (1_828, 2_653), (45_904, 58_979)];

fn ping(request_size: usize, response_size: i32) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        payload: payload(request_size),
        ..streaming_request(&[(response_size, None)])
    }
}

/// Starts a FullDuplexCall with `first` already sent: some servers send their
/// headers only with the first response, and tonic waits for the headers.
async fn full_duplex(
    clients: &Clients,
    first: StreamingOutputCallRequest,
    metadata: Option<MetadataMap>,
) -> anyhow::Result<(
    tokio::sync::mpsc::Sender<StreamingOutputCallRequest>,
    tonic::Response<Streaming<StreamingOutputCallResponse>>,
)> {
    let (tx, rx) = tokio::sync::mpsc::channel(PING_PONG.len());
    tx.send(first).await?;
    let mut request = Request::new(ReceiverStream::new(rx));
    if let Some(metadata) = metadata {
        *request.metadata_mut() = metadata;
    }
    let response = clients.test().full_duplex_call(request).await?;
    Ok((tx, response))
}

async fn ping_pong(clients: &Clients) -> anyhow::Result<()> {
    let (first_request, first_response) = PING_PONG[0];
    let (tx, response) = full_duplex(clients, ping(first_request, first_response), None).await?;
    let mut stream = response.into_inner();
    for (i, &(request_size, response_size)) in PING_PONG.iter().enumerate() {
        if i > 0 {
            tx.send(ping(request_size, response_size)).await?;
        }
        let response = stream.message().await?.context("the stream ended early")?;
        check_payload(response.payload.as_ref(), response_size as usize)?;
    }
    drop(tx);
    let rest = stream.message().await?;
    ensure!(
        rest.is_none(),
        "a response after the last request: {rest:?}"
    );
    Ok(())
}

async fn empty_stream(clients: &Clients) -> anyhow::Result<()> {
    let requests = tokio_stream::empty::<StreamingOutputCallRequest>();
    let mut stream = clients
        .test()
        .full_duplex_call(requests)
        .await?
        .into_inner();
    let rest = stream.message().await?;
    ensure!(rest.is_none(), "a response on an empty stream: {rest:?}");
    Ok(())
}

async fn timeout_on_sleeping_server(clients: &Clients) -> anyhow::Result<()> {
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let first = StreamingOutputCallRequest {
        payload: payload(27_182),
        ..Default::default()
    };
    let requests = tokio_stream::once(first).chain(ReceiverStream::new(rx));
    let mut request = Request::new(requests);
    request.set_timeout(Duration::from_millis(1));
    let result = match clients.test().full_duplex_call(request).await {
        Ok(response) => response.into_inner().message().await,
        Err(status) => Err(status),
    };
    expect_code(result, Code::DeadlineExceeded)?;
    Ok(())
}

/// tonic cancels a call by dropping it; the case passes when the call was still
/// open (no status yet) at the moment it was cancelled.
async fn cancel_after_begin(clients: &Clients) -> anyhow::Result<()> {
    let requests = tokio_stream::pending::<StreamingInputCallRequest>();
    let mut test = clients.test();
    let call = test.streaming_input_call(requests);
    tokio::select! {
        result = call => bail!("the call ended before it was cancelled: {result:?}"),
        () = tokio::time::sleep(Duration::from_millis(100)) => Ok(()),
    }
}

async fn cancel_after_first_response(clients: &Clients) -> anyhow::Result<()> {
    let (request_size, response_size) = PING_PONG[0];
    let (tx, response) = full_duplex(clients, ping(request_size, response_size), None).await?;
    let mut stream = response.into_inner();
    let first = stream.message().await?.context("no first response")?;
    check_payload(first.payload.as_ref(), response_size as usize)?;
    // Cancelling: drop the call with the request stream still open.
    drop(stream);
    drop(tx);
    Ok(())
}

async fn expect_status_echo(clients: &Clients, code: i32, message: &str) -> anyhow::Result<()> {
    let status = Some(EchoStatus {
        code,
        message: message.to_owned(),
    });
    let unary = clients
        .test()
        .unary_call(SimpleRequest {
            response_status: status.clone(),
            ..Default::default()
        })
        .await;
    let unary = expect_code(unary, Code::from_i32(code)).context("UnaryCall")?;
    ensure!(
        unary.message() == message,
        "UnaryCall message {:?}",
        unary.message()
    );

    let first = StreamingOutputCallRequest {
        response_status: status,
        ..Default::default()
    };
    let duplex = match full_duplex(clients, first, None).await {
        Ok((_tx, response)) => response.into_inner().message().await,
        Err(err) => Err(err.downcast::<Status>()?),
    };
    let duplex = expect_code(duplex, Code::from_i32(code)).context("FullDuplexCall")?;
    ensure!(
        duplex.message() == message,
        "FullDuplexCall message {:?}",
        duplex.message()
    );
    Ok(())
}

async fn status_code_and_message(clients: &Clients) -> anyhow::Result<()> {
    expect_status_echo(clients, 2, "test status message").await
}

async fn special_status_message(clients: &Clients) -> anyhow::Result<()> {
    let message = "\t\ntest with whitespace\r\nand Unicode BMP \u{263A} and non-BMP \u{1F608}\t\n";
    expect_status_echo(clients, 2, message).await
}

const INITIAL_KEY: &str = "x-grpc-test-echo-initial";
const INITIAL_VALUE: &str = "test_initial_metadata_value";
const TRAILING_KEY: &str = "x-grpc-test-echo-trailing-bin";
const TRAILING_VALUE: [u8; 3] = [0xab, 0xab, 0xab];

fn echo_metadata() -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert(INITIAL_KEY, MetadataValue::from_static(INITIAL_VALUE));
    metadata.insert_bin(TRAILING_KEY, MetadataValue::from_bytes(&TRAILING_VALUE));
    metadata
}

fn check_echoed(headers: &MetadataMap, trailers: &MetadataMap) -> anyhow::Result<()> {
    let initial = headers
        .get(INITIAL_KEY)
        .context("no echoed initial metadata")?;
    ensure!(initial == INITIAL_VALUE, "initial metadata {initial:?}");
    let trailing = trailers
        .get_bin(TRAILING_KEY)
        .context("no echoed trailing metadata")?
        .to_bytes()?;
    ensure!(
        trailing[..] == TRAILING_VALUE,
        "trailing metadata {trailing:?}"
    );
    Ok(())
}

async fn custom_metadata(clients: &Clients) -> anyhow::Result<()> {
    let mut request = Request::new(large_unary_request());
    *request.metadata_mut() = echo_metadata();
    let response = clients.test().unary_call(request).await?;
    check_payload(response.get_ref().payload.as_ref(), 314_159)?;
    // tonic merges a unary call's headers and trailers into one map.
    check_echoed(response.metadata(), response.metadata()).context("UnaryCall")?;

    let (tx, response) =
        full_duplex(clients, ping(271_828, 314_159), Some(echo_metadata())).await?;
    drop(tx);
    let headers = response.metadata().clone();
    let mut stream = response.into_inner();
    let sizes = collect(&mut stream).await?;
    ensure!(
        sizes == [314_159],
        "FullDuplexCall response sizes {sizes:?}"
    );
    let trailers = stream.trailers().await?.context("no trailers")?;
    check_echoed(&headers, &trailers).context("FullDuplexCall")
}

async fn unimplemented_method(clients: &Clients) -> anyhow::Result<()> {
    let result = clients.test().unimplemented_call(Empty {}).await;
    expect_code(result, Code::Unimplemented)?;
    Ok(())
}

async fn unimplemented_service(clients: &Clients) -> anyhow::Result<()> {
    let result = clients
        .unimplemented
        .clone()
        .unimplemented_call(Empty {})
        .await;
    expect_code(result, Code::Unimplemented)?;
    Ok(())
}

/// rpc_soak (`shared` clients: one channel) or channel_soak (a new channel
/// per iteration): large_unary again and again, counting slow or failed ones.
async fn soak(
    builder: &ClientBuilder,
    args: &InteropArgs,
    shared: Option<&Clients>,
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for iteration in 0..args.soak_iterations {
        let started = Instant::now();
        let result = async {
            let clients = match shared {
                Some(clients) => clients.clone(),
                None => Clients::connect(builder).await?,
            };
            large_unary(&clients).await
        }
        .await;
        let latency = started.elapsed();
        match result {
            Err(err) => failures.push(format!("iteration {iteration}: {err:#}")),
            Ok(()) if latency > args.soak_per_iteration_max_latency => {
                failures.push(format!("iteration {iteration}: took {latency:?}"));
            }
            Ok(()) => {}
        }
    }
    ensure!(
        failures.len() <= args.soak_max_failures as usize,
        "{} of {} iterations failed (at most {} allowed): {}",
        failures.len(),
        args.soak_iterations,
        args.soak_max_failures,
        failures.join("; ")
    );
    Ok(())
}

/// The transport of the interop clients.
pub type Interop = PerMessageCompression<Transport>;

/// Gives a call's messages per-message compression ([`CompressionPlan`] in the
/// request extensions) and reports the responses' flags
/// ([`ObservedCompression`] in the response extensions).
#[derive(Debug, Clone, Copy)]
pub struct PerMessageCompressionLayer;

impl<S> Layer<S> for PerMessageCompressionLayer {
    type Service = PerMessageCompression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PerMessageCompression { inner }
    }
}

/// The service made by [`PerMessageCompressionLayer`].
#[derive(Debug, Clone)]
pub struct PerMessageCompression<S> {
    inner: S,
}

impl<S, B> Service<http::Request<Body>> for PerMessageCompression<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ObservedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(plan) = request.extensions_mut().remove::<CompressionPlan>() {
            request
                .headers_mut()
                .insert("grpc-encoding", HeaderValue::from_static("gzip"));
            request = request.map(|body| Body::new(RecompressBody::new(body, plan)));
        }
        ObservedResponse {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Future of [`PerMessageCompression`].
    pub struct ObservedResponse<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for ObservedResponse<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(self.project().inner.poll(cx))?;
        let observed = ObservedCompression::default();
        response.extensions_mut().insert(observed.clone());
        Poll::Ready(Ok(
            response.map(|body| Body::new(ObservedBody::new(body, observed.0)))
        ))
    }
}
