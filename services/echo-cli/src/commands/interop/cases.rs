//! The interop cases themselves, each a function of the [`CaseContext`].
//! A failure names what differed and summarizes messages (their type, size
//! and first bytes), never printing a whole one: a large_unary answer is 300 KB.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use echo_wire::framing::{CompressionPlan, ObservedCompression};
use grpc_echo::grpc::testing::{
    BoolValue, ECHO_INITIAL_METADATA, ECHO_TRAILING_METADATA, EchoStatus, Empty, Payload,
    PayloadType, ResponseParameters, SimpleRequest, StreamingInputCallRequest,
    StreamingOutputCallRequest, StreamingOutputCallResponse,
};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Status, Streaming};

use super::context::{CaseContext, Clients};

/// What a unary call answered, as a failure shows it.
fn answered<M: prost::Message>(
    result: Result<tonic::Response<M>, Status>,
) -> Result<String, Status> {
    result.map(|response| summary(response.get_ref()))
}

/// What the next read of a stream gave, as a failure shows it.
fn next_answer<M: prost::Message>(result: Result<Option<M>, Status>) -> Result<String, Status> {
    result.map(|next| next.map_or_else(|| "the end of the stream".to_owned(), |m| summary(&m)))
}

/// How a message appears in a failure: its type, encoded size and first bytes.
fn summary<M: prost::Message>(message: &M) -> String {
    const SHOWN: usize = 16;
    let bytes = message.encode_to_vec();
    let name = std::any::type_name::<M>()
        .rsplit("::")
        .next()
        .unwrap_or("message");
    let first: Vec<String> = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    let more = if bytes.len() > SHOWN { " …" } else { "" };
    format!(
        "a {name} of {} bytes encoded ({}{more})",
        bytes.len(),
        first.join(" ")
    )
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

/// The payload is `size` zero bytes, as the interop descriptions ask.
fn check_payload(payload: Option<&Payload>, size: usize) -> anyhow::Result<()> {
    let body = payload.map_or(&[][..], |p| &p.body[..]);
    ensure!(
        body.len() == size,
        "payload.body of {} bytes, expected {size}",
        body.len()
    );
    if let Some(at) = body.iter().position(|&b| b != 0) {
        bail!(
            "payload.body byte {at} is {:#04x}, expected zeros",
            body[at]
        );
    }
    Ok(())
}

/// The status of a call expected to fail with `code`; a success is reported
/// by what it answered (a [`summary`]).
fn expect_code(result: Result<String, Status>, code: Code) -> anyhow::Result<Status> {
    match result {
        Ok(answered) => bail!("expected {code:?}, the call succeeded with {answered}"),
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

pub(super) async fn empty_unary(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
    let response = clients.test().empty_call(Empty {}).await?;
    ensure!(
        response.get_ref() == &Empty {},
        "not empty: {}",
        summary(response.get_ref())
    );
    Ok(())
}

pub(super) async fn large_unary(context: &CaseContext) -> anyhow::Result<()> {
    large_unary_on(&context.clients).await
}

async fn large_unary_on(clients: &Clients) -> anyhow::Result<()> {
    let response = clients.test().unary_call(large_unary_request()).await?;
    check_payload(response.get_ref().payload.as_ref(), 314_159)
}

pub(super) async fn client_compressed_unary(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
    let expecting = |expect: bool| SimpleRequest {
        expect_compressed: flag(expect),
        ..large_unary_request()
    };
    // The probe: an uncompressed message that claims to be compressed is refused.
    let probe = clients.test().unary_call(expecting(true)).await;
    expect_code(answered(probe), Code::InvalidArgument).context("feature probe")?;

    let response = clients
        .test()
        .unary_call(compressed(expecting(true), &[true]))
        .await?;
    check_payload(response.get_ref().payload.as_ref(), 314_159)?;
    let response = clients.test().unary_call(expecting(false)).await?;
    check_payload(response.get_ref().payload.as_ref(), 314_159)
}

pub(super) async fn server_compressed_unary(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
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

pub(super) async fn client_streaming(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
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

pub(super) async fn client_compressed_streaming(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
    let probe = [StreamingInputCallRequest {
        payload: payload(27_182),
        expect_compressed: flag(true),
    }];
    let probe = clients
        .test()
        .streaming_input_call(tokio_stream::iter(probe))
        .await;
    expect_code(answered(probe), Code::InvalidArgument).context("feature probe")?;

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

pub(super) async fn server_streaming(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
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

pub(super) async fn server_compressed_streaming(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
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

pub(super) async fn ping_pong(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
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
        "a response after the last request: {}",
        next_answer(Ok(rest)).unwrap_or_default()
    );
    Ok(())
}

pub(super) async fn empty_stream(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
    let requests = tokio_stream::empty::<StreamingOutputCallRequest>();
    let mut stream = clients
        .test()
        .full_duplex_call(requests)
        .await?
        .into_inner();
    let rest = stream.message().await?;
    ensure!(
        rest.is_none(),
        "a response on an empty stream: {}",
        next_answer(Ok(rest)).unwrap_or_default()
    );
    Ok(())
}

pub(super) async fn timeout_on_sleeping_server(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
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
    expect_code(next_answer(result), Code::DeadlineExceeded)?;
    Ok(())
}

/// tonic cancels a call by dropping it; the case passes when the call was still
/// open (no status yet) at the moment it was cancelled.
pub(super) async fn cancel_after_begin(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
    let requests = tokio_stream::pending::<StreamingInputCallRequest>();
    let mut test = clients.test();
    let call = test.streaming_input_call(requests);
    tokio::select! {
        result = call => bail!(
            "the call ended before it was cancelled: {}",
            answered(result).unwrap_or_else(|status| format!("{:?}: {}", status.code(), status.message()))
        ),
        () = tokio::time::sleep(Duration::from_millis(100)) => Ok(()),
    }
}

pub(super) async fn cancel_after_first_response(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
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
    let unary = expect_code(answered(unary), Code::from_i32(code)).context("UnaryCall")?;
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
    let duplex =
        expect_code(next_answer(duplex), Code::from_i32(code)).context("FullDuplexCall")?;
    ensure!(
        duplex.message() == message,
        "FullDuplexCall message {:?}",
        duplex.message()
    );
    Ok(())
}

pub(super) async fn status_code_and_message(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
    expect_status_echo(clients, 2, "test status message").await
}

pub(super) async fn special_status_message(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
    let message = "\t\ntest with whitespace\r\nand Unicode BMP \u{263A} and non-BMP \u{1F608}\t\n";
    expect_status_echo(clients, 2, message).await
}

const INITIAL_VALUE: &str = "test_initial_metadata_value";
const TRAILING_VALUE: [u8; 3] = [0xab, 0xab, 0xab];

fn echo_metadata() -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert(
        ECHO_INITIAL_METADATA,
        MetadataValue::from_static(INITIAL_VALUE),
    );
    metadata.insert_bin(
        ECHO_TRAILING_METADATA,
        MetadataValue::from_bytes(&TRAILING_VALUE),
    );
    metadata
}

fn check_echoed(headers: &MetadataMap, trailers: &MetadataMap) -> anyhow::Result<()> {
    let initial = headers
        .get(ECHO_INITIAL_METADATA)
        .context("no echoed initial metadata")?;
    ensure!(initial == INITIAL_VALUE, "initial metadata {initial:?}");
    let trailing = trailers
        .get_bin(ECHO_TRAILING_METADATA)
        .context("no echoed trailing metadata")?
        .to_bytes()?;
    ensure!(
        trailing[..] == TRAILING_VALUE,
        "trailing metadata {trailing:?}"
    );
    Ok(())
}

pub(super) async fn custom_metadata(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
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

pub(super) async fn unimplemented_method(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
    let result = clients.test().unimplemented_call(Empty {}).await;
    expect_code(answered(result), Code::Unimplemented)?;
    Ok(())
}

pub(super) async fn unimplemented_service(context: &CaseContext) -> anyhow::Result<()> {
    let clients = &context.clients;
    let result = clients
        .unimplemented
        .clone()
        .unimplemented_call(Empty {})
        .await;
    expect_code(answered(result), Code::Unimplemented)?;
    Ok(())
}

/// rpc_soak: large_unary again and again on one channel, counting slow or failed ones.
pub(super) async fn rpc_soak(context: &CaseContext) -> anyhow::Result<()> {
    soak(context, Some(&context.clients)).await
}

/// channel_soak: the same, on a new channel each iteration.
pub(super) async fn channel_soak(context: &CaseContext) -> anyhow::Result<()> {
    soak(context, None).await
}

async fn soak(context: &CaseContext, shared: Option<&Clients>) -> anyhow::Result<()> {
    let soak = &context.soak;
    let mut failures = Vec::new();
    for iteration in 0..soak.iterations {
        let started = Instant::now();
        let result = async {
            let clients = match shared {
                Some(clients) => clients.clone(),
                None => Clients::connect(&context.builder).await?,
            };
            large_unary_on(&clients).await
        }
        .await;
        let latency = started.elapsed();
        match result {
            Err(err) => failures.push(format!("iteration {iteration}: {err:#}")),
            Ok(()) if latency > soak.per_iteration_max_latency => {
                failures.push(format!("iteration {iteration}: took {latency:?}"));
            }
            Ok(()) => {}
        }
    }
    ensure!(
        failures.len() <= soak.max_failures as usize,
        "{} of {} iterations failed (at most {} allowed): {}",
        failures.len(),
        soak.iterations,
        soak.max_failures,
        failures.join("; ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use grpc_echo::grpc::testing::SimpleResponse;

    use super::*;

    #[test]
    fn a_failure_summarizes_an_answer_instead_of_printing_it() {
        let large = SimpleResponse {
            payload: payload(314_159),
            ..Default::default()
        };
        let error = expect_code(answered(Ok(tonic::Response::new(large))), Code::NotFound)
            .unwrap_err()
            .to_string();
        assert!(error.len() < 200, "{error}");
        assert!(
            error.contains("a SimpleResponse of 314167 bytes encoded (0a"),
            "{error}"
        );
        let wrong = Payload {
            body: vec![0, 0, 7].into(),
            ..Default::default()
        };
        let error = check_payload(Some(&wrong), 3).unwrap_err().to_string();
        assert_eq!(error, "payload.body byte 2 is 0x07, expected zeros");
    }
}
