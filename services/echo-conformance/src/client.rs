//! Client mode: each `ClientCompatRequest` made as one call with the
//! echo-client library, its outcome written back as a `ClientCompatResponse`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use echo_client::{
    ClientBuilder, Codec as WireCodec, Compression as MessageCompression, Protocol as WireProtocol,
    TlsOptions, Transport,
};
use grpc_echo::connectrpc::conformance::v1::client_compat_request::cancel::CancelTiming;
use grpc_echo::connectrpc::conformance::v1::client_compat_response::Result as Outcome;
use grpc_echo::connectrpc::conformance::v1::{
    BidiStreamRequest, BidiStreamResponse, ClientCompatRequest, ClientCompatResponse,
    ClientErrorResult, ClientResponseResult, ClientStreamRequest, ClientStreamResponse, Codec,
    Compression, ConformancePayload, Error, Header, HttpVersion, IdempotentUnaryRequest,
    IdempotentUnaryResponse, Protocol, ServerStreamRequest, ServerStreamResponse, StreamType,
    UnaryRequest, UnaryResponse, UnimplementedRequest, UnimplementedResponse,
};
use prost::Message as _;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use crate::framing;

/// The service every case calls.
const SERVICE: &str = "connectrpc.conformance.v1.ConformanceService";
/// Cases run at once: the runner's reference server takes them in parallel,
/// and some wait for delays and timeouts.
const PARALLEL_CASES: usize = 64;

/// Reads cases until stdin ends, runs them concurrently, writes each result
/// as it is known (in any order: the runner matches them by test name).
pub(crate) async fn run() -> anyhow::Result<()> {
    let mut stdin = tokio::io::stdin();
    let stdout = Arc::new(Mutex::new(tokio::io::stdout()));
    let slots = Arc::new(Semaphore::new(PARALLEL_CASES));
    let mut cases = tokio::task::JoinSet::new();
    while let Some(request) = framing::read::<ClientCompatRequest>(&mut stdin).await? {
        let slot = Arc::clone(&slots).acquire_owned().await?;
        let stdout = Arc::clone(&stdout);
        cases.spawn(async move {
            let test_name = request.test_name.clone();
            // Its own task: a case that panics is reported as failed, not lost.
            let result = match tokio::spawn(run_case(request)).await {
                Ok(Ok(result)) => Outcome::Response(result),
                Ok(Err(error)) => Outcome::Error(ClientErrorResult {
                    message: format!("{error:#}"),
                }),
                Err(panic) => Outcome::Error(ClientErrorResult {
                    message: format!("the case's call panicked: {panic}"),
                }),
            };
            let response = ClientCompatResponse {
                test_name,
                result: Some(result),
            };
            drop(slot);
            framing::write(&mut *stdout.lock().await, &response).await
        });
    }
    while let Some(written) = cases.join_next().await {
        written.context("a case panicked")??;
    }
    Ok(())
}

/// One case: the client the case describes, then its call.
async fn run_case(case: ClientCompatRequest) -> anyhow::Result<ClientResponseResult> {
    let service = case.service.as_deref().unwrap_or_default();
    anyhow::ensure!(service == SERVICE, "unknown service {service:?}");
    let client = Client::connect(&case).await?;
    let method = case.method.as_deref().unwrap_or_default();
    let mut call = Call::new(&case);
    // Each arm names the method's request and response types; the path is `method`.
    match (method, case.stream_type()) {
        ("Unary", StreamType::Unary) => {
            call.unary::<UnaryRequest, UnaryResponse>(&client, method, |r| r.payload)
                .await?;
        }
        ("IdempotentUnary", StreamType::Unary) => {
            call.unary::<IdempotentUnaryRequest, IdempotentUnaryResponse>(&client, method, |r| {
                r.payload
            })
            .await?;
        }
        ("Unimplemented", StreamType::Unary) => {
            call.unary::<UnimplementedRequest, UnimplementedResponse>(&client, method, |_| None)
                .await?;
        }
        ("ServerStream", StreamType::ServerStream) => {
            call.unary::<ServerStreamRequest, ServerStreamResponse>(&client, method, |r| r.payload)
                .await?;
        }
        ("ClientStream", StreamType::ClientStream) => {
            call.half_duplex::<ClientStreamRequest, ClientStreamResponse>(&client, method, |r| {
                r.payload
            })
            .await?;
        }
        ("BidiStream", StreamType::HalfDuplexBidiStream) => {
            call.half_duplex::<BidiStreamRequest, BidiStreamResponse>(&client, method, |r| {
                r.payload
            })
            .await?;
        }
        ("BidiStream", StreamType::FullDuplexBidiStream) => {
            call.full_duplex(&client).await?;
        }
        (method, stream_type) => {
            anyhow::bail!("no method {method:?} of stream type {stream_type:?}")
        }
    }
    Ok(call.result)
}

/// The echo-client transport a case asks for, with its codec settings.
struct Client {
    grpc: tonic::client::Grpc<Transport>,
}

impl Client {
    async fn connect(case: &ClientCompatRequest) -> anyhow::Result<Self> {
        let protocol = match case.protocol() {
            Protocol::Grpc => WireProtocol::Grpc,
            Protocol::GrpcWeb => WireProtocol::GrpcWeb,
            Protocol::Connect => WireProtocol::Connect,
            other => anyhow::bail!("protocol {other:?} is not supported"),
        };
        let builder = ClientBuilder::new(format!("{}:{}", case.host, case.port));
        let builder = match case.http_version() {
            HttpVersion::HttpVersion1 => builder.http1(true),
            HttpVersion::HttpVersion2 => builder,
            HttpVersion::HttpVersion3 => builder.http3(true),
            other => anyhow::bail!("HTTP version {other:?} is not supported"),
        };
        let mut builder = builder
            .protocol(protocol)
            .connect_get(case.use_get_http_method)
            .codec(match case.codec() {
                Codec::Proto => WireCodec::Proto,
                Codec::Json => WireCodec::Json,
                other => anyhow::bail!("codec {other:?} is not supported"),
            });
        if !case.server_tls_cert.is_empty() {
            builder = builder.tls(TlsOptions {
                ca_pem: case.server_tls_cert.to_vec(),
                server_name: None,
                identity: case
                    .client_tls_creds
                    .as_ref()
                    .map(|creds| (creds.cert.to_vec(), creds.key.to_vec())),
            });
        }
        // gzip, zstd and deflate are tonic's own; brotli and snappy the library's.
        let compression = compression(case.compression());
        let tonic_encoding = match compression {
            MessageCompression::Gzip => Some(CompressionEncoding::Gzip),
            MessageCompression::Zstd => Some(CompressionEncoding::Zstd),
            MessageCompression::Deflate => Some(CompressionEncoding::Deflate),
            _ => None,
        };
        builder = builder.message_compression(compression);
        let transport = builder.connect_transport().await?;
        let mut grpc = tonic::client::Grpc::new(transport)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Deflate);
        if let Some(encoding) = tonic_encoding {
            grpc = grpc.send_compressed(encoding);
        }
        if case.message_receive_limit > 0 {
            grpc = grpc.max_decoding_message_size(usize::try_from(case.message_receive_limit)?);
        }
        Ok(Self { grpc })
    }

    fn path(method: &str) -> http::uri::PathAndQuery {
        http::uri::PathAndQuery::try_from(format!("/{SERVICE}/{method}"))
            .expect("a method name is a valid path")
    }
}

/// The request compression a case asks for.
fn compression(compression: Compression) -> MessageCompression {
    match compression {
        Compression::Unspecified | Compression::Identity => MessageCompression::Identity,
        Compression::Gzip => MessageCompression::Gzip,
        Compression::Zstd => MessageCompression::Zstd,
        Compression::Deflate => MessageCompression::Deflate,
        Compression::Br => MessageCompression::Brotli,
        Compression::Snappy => MessageCompression::Snappy,
    }
}

/// When a case cancels its call.
#[derive(Debug, Clone, Copy)]
enum Cancel {
    Never,
    BeforeCloseSend,
    AfterCloseSend(Duration),
    AfterResponses(usize),
}

/// A call's answer as tonic gives it: its headers and its message stream.
type Answer<Resp> = Result<tonic::Response<tonic::Streaming<Resp>>, Status>;

/// One call and what has been seen of it.
struct Call {
    messages: Vec<prost_types::Any>,
    metadata: MetadataMap,
    timeout: Option<Duration>,
    delay: Duration,
    cancel: Cancel,
    /// Whether the method answers once (unary, client stream).
    single_answer: bool,
    result: ClientResponseResult,
}

impl Call {
    fn new(case: &ClientCompatRequest) -> Self {
        let mut headers = http::HeaderMap::new();
        for header in &case.request_headers {
            let Ok(name) = http::HeaderName::from_bytes(header.name.as_bytes()) else {
                continue;
            };
            for value in &header.value {
                if let Ok(value) = http::HeaderValue::from_str(value) {
                    headers.append(name.clone(), value);
                }
            }
        }
        let cancel = match case.cancel.as_ref().and_then(|c| c.cancel_timing) {
            None => Cancel::Never,
            Some(CancelTiming::BeforeCloseSend(())) => Cancel::BeforeCloseSend,
            Some(CancelTiming::AfterCloseSendMs(ms)) => {
                Cancel::AfterCloseSend(Duration::from_millis(u64::from(ms)))
            }
            Some(CancelTiming::AfterNumResponses(n)) => Cancel::AfterResponses(n as usize),
        };
        Self {
            messages: case.request_messages.clone(),
            metadata: MetadataMap::from_headers(headers),
            timeout: case
                .timeout_ms
                .map(|ms| Duration::from_millis(u64::from(ms))),
            delay: Duration::from_millis(u64::from(case.request_delay_ms)),
            cancel,
            single_answer: matches!(
                case.stream_type(),
                StreamType::Unary | StreamType::ClientStream
            ),
            result: ClientResponseResult::default(),
        }
    }

    /// The call's request messages, as the method's request type.
    fn requests<Req: prost::Message + Default>(&self) -> anyhow::Result<Vec<Req>> {
        self.messages.iter().map(unpack::<Req>).collect()
    }

    /// Starts the call: its requests come from `receiver` as they are sent.
    fn start<Req, Resp>(
        &self,
        client: &Client,
        method: &str,
        receiver: mpsc::Receiver<Req>,
    ) -> impl Future<Output = Answer<Resp>> + Send + 'static
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        *request.metadata_mut() = self.metadata.clone();
        if let Some(timeout) = self.timeout {
            request.set_timeout(timeout);
        }
        let mut grpc = client.grpc.clone();
        let path = Client::path(method);
        async move {
            grpc.ready().await.map_err(Status::from_error)?;
            grpc.streaming(request, path, ProstCodec::<Req, Resp>::default())
                .await
        }
    }

    /// When the call is canceled after its requests are closed, if it is.
    fn cancel_after_close(&self) -> Option<Instant> {
        match self.cancel {
            Cancel::AfterCloseSend(after) => Some(Instant::now() + after),
            _ => None,
        }
    }

    /// A call with one request message: unary, or a server stream.
    async fn unary<Req, Resp>(
        &mut self,
        client: &Client,
        method: &str,
        payload: impl Fn(Resp) -> Option<ConformancePayload>,
    ) -> anyhow::Result<()>
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let requests = self.requests::<Req>()?;
        anyhow::ensure!(
            requests.len() == 1,
            "{method} takes one request message, not {}",
            requests.len()
        );
        let (sender, receiver) = mpsc::channel(1);
        for request in requests {
            sender.send(request).await?;
        }
        drop(sender);
        let call = self.start::<Req, Resp>(client, method, receiver);
        let cancel_at = self.cancel_after_close();
        self.receive(call, payload, cancel_at, 0).await;
        Ok(())
    }

    /// A client stream or half-duplex bidi: every request, then the answers.
    async fn half_duplex<Req, Resp>(
        &mut self,
        client: &Client,
        method: &str,
        payload: impl Fn(Resp) -> Option<ConformancePayload>,
    ) -> anyhow::Result<()>
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let requests = self.requests::<Req>()?;
        let (sender, receiver) = mpsc::channel(1);
        // Its own task: the call's requests are only sent while it is polled,
        // and it ends (at the answer's headers) only once they are all sent.
        let call = tokio::spawn(self.start::<Req, Resp>(client, method, receiver));
        let total = requests.len();
        for (sent, request) in requests.into_iter().enumerate() {
            tokio::time::sleep(self.delay).await;
            if sender.send(request).await.is_err() {
                // The call ended early; its outcome says why.
                self.result.num_unsent_requests = count(total - sent);
                break;
            }
        }
        if let Cancel::BeforeCloseSend = self.cancel {
            call.abort();
            self.canceled();
            return Ok(());
        }
        drop(sender);
        let call = async move {
            call.await
                .unwrap_or_else(|error| Err(Status::unknown(error.to_string())))
        };
        let cancel_at = self.cancel_after_close();
        self.receive(call, payload, cancel_at, 0).await;
        Ok(())
    }

    /// A full-duplex bidi: each request, then its answer, in turn; then the
    /// rest of the answers.
    async fn full_duplex(&mut self, client: &Client) -> anyhow::Result<()> {
        let requests = self.requests::<BidiStreamRequest>()?;
        let total = requests.len();
        let (sender, receiver) = mpsc::channel(total.max(1));
        let mut requests = requests.into_iter();
        // The first request goes with the call: a server may send its
        // headers only with its first answer, and tonic's call waits for them.
        let mut sent = 0;
        if let Some(first) = requests.next() {
            tokio::time::sleep(self.delay).await;
            sender.send(first).await?;
            sent = 1;
        }
        let answer = self
            .start::<BidiStreamRequest, BidiStreamResponse>(client, "BidiStream", receiver)
            .await;
        let mut stream = match answer {
            Ok(response) => {
                let (metadata, stream, _) = response.into_parts();
                self.result.response_headers = headers_of(metadata);
                stream
            }
            Err(status) => {
                self.result.num_unsent_requests = count(total - sent);
                self.failed(&status);
                return Ok(());
            }
        };
        let mut received = 0;
        let mut ended = false;
        loop {
            if sent > received && !ended {
                match stream.message().await {
                    Ok(Some(response)) => {
                        received += 1;
                        self.result
                            .payloads
                            .push(response.payload.unwrap_or_default());
                        if let Cancel::AfterResponses(n) = self.cancel
                            && received >= n
                        {
                            self.canceled();
                            return Ok(());
                        }
                    }
                    Ok(None) => ended = true,
                    Err(status) => {
                        self.result.num_unsent_requests = count(total - sent);
                        self.failed(&status);
                        return Ok(());
                    }
                }
            }
            let Some(request) = requests.next() else {
                break;
            };
            tokio::time::sleep(self.delay).await;
            if sender.send(request).await.is_err() {
                self.result.num_unsent_requests = count(total - sent);
                break;
            }
            sent += 1;
        }
        if let Cancel::BeforeCloseSend = self.cancel {
            self.canceled();
            return Ok(());
        }
        drop(sender);
        let cancel_at = self.cancel_after_close();
        let answered = std::future::ready(Ok(tonic::Response::new(stream)));
        self.receive(
            answered,
            |r: BidiStreamResponse| r.payload,
            cancel_at,
            received,
        )
        .await;
        Ok(())
    }

    /// The answers of a call whose requests are all sent: its headers (unless
    /// already taken), messages and trailers, or the error it ended with.
    /// `received` answers were taken before.
    async fn receive<Resp>(
        &mut self,
        call: impl Future<Output = Answer<Resp>>,
        payload: impl Fn(Resp) -> Option<ConformancePayload>,
        cancel_at: Option<Instant>,
        mut received: usize,
    ) where
        Resp: prost::Message + Default + Send + 'static,
    {
        let Some(answer) = until(cancel_at, call).await else {
            self.canceled();
            return;
        };
        let mut stream = match answer {
            Ok(response) => {
                let (metadata, stream, _) = response.into_parts();
                if self.result.response_headers.is_empty() {
                    self.result.response_headers = headers_of(metadata);
                }
                stream
            }
            Err(status) => {
                self.failed(&status);
                return;
            }
        };
        loop {
            if let Cancel::AfterResponses(n) = self.cancel
                && received >= n
            {
                self.canceled();
                return;
            }
            match until(cancel_at, stream.message()).await {
                None => {
                    self.canceled();
                    return;
                }
                Some(Ok(Some(response))) => {
                    received += 1;
                    // An empty answer is an empty payload, not none.
                    self.result
                        .payloads
                        .push(payload(response).unwrap_or_default());
                }
                Some(Ok(None)) => break,
                Some(Err(status)) => {
                    self.failed(&status);
                    return;
                }
            }
        }
        match until(cancel_at, stream.trailers()).await {
            None => self.canceled(),
            Some(Ok(trailers)) => {
                self.result.response_trailers = headers_of(trailers.unwrap_or_default());
            }
            Some(Err(status)) => self.failed(&status),
        }
    }

    /// Records the call as canceled by the client: tonic cancels a call by
    /// dropping it, and CANCELLED is what its caller then has.
    fn canceled(&mut self) {
        self.failed(&Status::cancelled("canceled by the client"));
    }

    fn failed(&mut self, status: &Status) {
        self.result.response_trailers = headers_of(status.metadata().clone());
        self.result.error = Some(error_of(status));
        if self.single_answer {
            // A call with one answer has it or an error, never both.
            self.result.payloads.clear();
        }
    }
}

/// `future`'s output, unless `cancel_at` comes first.
async fn until<F: Future>(cancel_at: Option<Instant>, future: F) -> Option<F::Output> {
    let Some(at) = cancel_at else {
        return Some(future.await);
    };
    // The cancellation first: an answer already buffered (a half-duplex
    // call's, over HTTP/1.1) must not win over a time that has come, as it
    // would with `timeout_at`, which polls its future before its timer.
    if Instant::now() >= at {
        return None;
    }
    tokio::select! {
        biased;
        () = tokio::time::sleep_until(at) => None,
        output = future => Some(output),
    }
}

/// A count of requests, as the result's field holds it.
fn count(requests: usize) -> i32 {
    i32::try_from(requests).unwrap_or(i32::MAX)
}

/// `any` as the request type `T`, when it is one.
fn unpack<T: prost::Message + Default>(any: &prost_types::Any) -> anyhow::Result<T> {
    T::decode(any.value.as_slice()).with_context(|| {
        format!(
            "a request message of type {} that does not decode",
            any.type_url
        )
    })
}

/// The conformance form of a status: code, message and details.
fn error_of(status: &Status) -> Error {
    let details = if status.details().is_empty() {
        Vec::new()
    } else {
        tonic_types::pb::Status::decode(Bytes::copy_from_slice(status.details()))
            .map(|decoded| decoded.details)
            .unwrap_or_default()
    };
    let code = if status.code() == Code::Ok {
        Code::Unknown
    } else {
        status.code()
    };
    Error {
        code: code as i32,
        message: (!status.message().is_empty()).then(|| status.message().to_owned()),
        details,
    }
}

/// Metadata as the runner's headers: one entry per name, values in order;
/// binary values as their base64 text on the wire.
fn headers_of(metadata: MetadataMap) -> Vec<Header> {
    let headers = metadata.into_headers();
    let mut out: Vec<Header> = Vec::new();
    for name in headers.keys() {
        out.push(Header {
            name: name.as_str().to_owned(),
            value: headers
                .get_all(name)
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .collect(),
        });
    }
    out
}
