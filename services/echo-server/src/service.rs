//! The `echo.v1.EchoService` handlers: check the controls, then echo.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use grpc_echo::echo::v1::echo_service_server::EchoService as EchoServiceApi;
use grpc_echo::echo::v1::{ClientStreamResponse, EchoRequest, EchoResponse};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Config;
use crate::controls::{EchoTargets, Limits, Plan, Rpc};
use crate::error::EchoError;
use crate::layers::{Deadline, ExtraTrailers};
use crate::stats::Stats;

/// Response stream of ServerStream and BidiStream.
pub type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send + 'static>>;

/// Implements `echo.v1.EchoService`; cheap to clone.
#[derive(Debug, Clone)]
pub struct EchoService {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    instance: String,
    limits: Limits,
    stats: Arc<Stats>,
    /// Cancelled when the shutdown grace period ends: open streams then stop.
    streams_end: CancellationToken,
    /// `limits.max_payload_size` bytes of a repeating pattern, made on first
    /// use; generated payloads are slices of it, shared rather than copied.
    pattern: OnceLock<Bytes>,
}

impl Shared {
    fn pattern(&self, size: u32) -> Bytes {
        let max = self.limits.max_payload_size as usize;
        let pattern = self
            .pattern
            .get_or_init(|| (0..max).map(|i| (i % 251) as u8).collect());
        pattern.slice(..size as usize)
    }
}

impl EchoService {
    pub(crate) fn new(config: &Config, stats: Arc<Stats>, streams_end: CancellationToken) -> Self {
        Self {
            shared: Arc::new(Shared {
                instance: config.instance(),
                limits: Limits::from(config),
                stats,
                streams_end,
                pattern: OnceLock::new(),
            }),
        }
    }

    fn response(&self, request: &EchoRequest, plan: &Plan, peer: &str) -> EchoResponse {
        EchoResponse {
            message: request.message.clone(),
            payload: plan
                .response_size
                .map_or_else(|| request.payload.clone(), |size| self.shared.pattern(size)),
            instance: self.shared.instance.clone(),
            peer: peer.to_owned(),
            sequence: 0,
        }
    }

    /// The per-message step of BidiStream: read one request, answer it.
    async fn bidi_step(
        &self,
        call: &Call,
        inbound: &mut Streaming<EchoRequest>,
        sequence: u64,
    ) -> Result<Option<EchoResponse>, EchoError> {
        let Some(request) = call.race(inbound.message()).await?? else {
            return Ok(None);
        };
        let plan = self.shared.limits.plan(&request, Rpc::BidiStream)?;
        call.sleep(plan.delay).await?;
        if let Some(error) = plan.error {
            return Err(error);
        }
        Ok(Some(EchoResponse {
            sequence,
            ..self.response(&request, &plan, &call.peer)
        }))
    }
}

#[tonic::async_trait]
impl EchoServiceApi for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let call = Call::unary(&request);
        let plan = self.shared.limits.plan(request.get_ref(), Rpc::Echo)?;
        let echo = plan.echo;
        let result = async {
            call.sleep(plan.delay).await?;
            match plan.error {
                Some(error) => Err(error),
                None => Ok(self.response(request.get_ref(), &plan, &call.peer)),
            }
        }
        .await;
        respond(request.metadata(), echo, result)
    }

    type ServerStreamStream = EchoStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoStream>, Status> {
        let call = Call::stream(&request, &self.shared);
        let plan = self
            .shared
            .limits
            .plan(request.get_ref(), Rpc::ServerStream)?;
        let echo = plan.echo;
        let template = self.response(request.get_ref(), &plan, &call.peer);
        let open = self.shared.stats.open_stream();
        let stream = async_stream::stream! {
            if let Err(error) = call.sleep(plan.delay).await {
                yield Err(error.into());
                return;
            }
            for sequence in 0..u64::from(plan.count) {
                if sequence > 0
                    && let Err(error) = call.sleep(plan.interval).await
                {
                    yield Err(error.into());
                    return;
                }
                open.message_sent();
                yield Ok(EchoResponse { sequence, ..template.clone() });
            }
            if let Some(error) = plan.error {
                yield Err(error.into());
            }
        };
        respond(request.metadata(), echo, Ok(Box::pin(stream) as EchoStream))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ClientStreamResponse>, Status> {
        let call = Call::stream(&request, &self.shared);
        let _open = self.shared.stats.open_stream();
        let (metadata, _, mut inbound) = request.into_parts();
        let mut summary = Summary::new(self.shared.limits.max_summary_messages);
        let mut echo = EchoTargets::default();
        let result = async {
            while let Some(request) = call.race(inbound.message()).await?? {
                let plan = self.shared.limits.plan(&request, Rpc::ClientStream)?;
                echo = echo.union(plan.echo);
                call.sleep(plan.delay).await?;
                if let Some(error) = plan.error {
                    return Err(error);
                }
                summary.add(&request);
            }
            Ok(summary.finish(&self.shared.instance, &call.peer))
        }
        .await;
        respond(&metadata, echo, result)
    }

    type BidiStreamStream = EchoStream;

    async fn bidi_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoStream>, Status> {
        let call = Call::stream(&request, &self.shared);
        let open = self.shared.stats.open_stream();
        let mut inbound = request.into_inner();
        let service = self.clone();
        let stream = async_stream::stream! {
            for sequence in 0.. {
                match service.bidi_step(&call, &mut inbound, sequence).await {
                    Ok(Some(response)) => {
                        open.message_sent();
                        yield Ok(response);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        yield Err(error.into());
                        break;
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(stream) as EchoStream))
    }
}

/// What a handler knows about its call besides the request message.
#[derive(Debug)]
struct Call {
    peer: String,
    deadline: Option<Instant>,
    /// Set for streams, which end when the shutdown grace period does.
    streams_end: Option<CancellationToken>,
}

impl Call {
    fn unary<T>(request: &Request<T>) -> Self {
        Self {
            peer: request
                .remote_addr()
                .map(|addr| addr.to_string())
                .unwrap_or_default(),
            deadline: request.extensions().get::<Deadline>().map(|d| d.0),
            streams_end: None,
        }
    }

    fn stream<T>(request: &Request<T>, shared: &Shared) -> Self {
        Self {
            streams_end: Some(shared.streams_end.clone()),
            ..Self::unary(request)
        }
    }

    /// Runs `work` unless the caller's deadline or the server's grace period ends first.
    async fn race<F: Future>(&self, work: F) -> Result<F::Output, EchoError> {
        let deadline = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let streams_end = async {
            match &self.streams_end {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            output = work => Ok(output),
            () = deadline => Err(EchoError::DeadlineExceeded),
            () = streams_end => Err(EchoError::ShuttingDown),
        }
    }

    async fn sleep(&self, duration: Duration) -> Result<(), EchoError> {
        if duration.is_zero() {
            return Ok(());
        }
        self.race(tokio::time::sleep(duration)).await
    }
}

/// Builds the handler's answer, copying `metadata` where `EchoTargets` say.
fn respond<T>(
    metadata: &MetadataMap,
    echo: EchoTargets,
    result: Result<T, EchoError>,
) -> Result<Response<T>, Status> {
    match result {
        Ok(message) => {
            let mut response = Response::new(message);
            if echo.headers {
                *response.metadata_mut() = MetadataMap::from_headers(custom_metadata(metadata));
            }
            if echo.trailers {
                response
                    .extensions_mut()
                    .insert(ExtraTrailers(custom_metadata(metadata)));
            }
            Ok(response)
        }
        Err(error) => {
            let mut status = Status::from(error);
            // An error before any response is one trailers-only frame: headers
            // and trailers both travel in the status metadata.
            if echo.headers || echo.trailers {
                let mut headers = std::mem::take(status.metadata_mut()).into_headers();
                headers.extend(custom_metadata(metadata));
                *status.metadata_mut() = MetadataMap::from_headers(headers);
            }
            Err(status)
        }
    }
}

/// The caller's own metadata: everything but HTTP/2 and gRPC protocol headers.
fn custom_metadata(metadata: &MetadataMap) -> HeaderMap {
    const PROTOCOL: [&str; 5] = [
        "te",
        "content-type",
        "user-agent",
        "accept-encoding",
        "host",
    ];
    let mut custom = HeaderMap::new();
    for (name, value) in metadata.as_ref() {
        let name_str = name.as_str();
        if !name_str.starts_with("grpc-") && !PROTOCOL.contains(&name_str) {
            custom.append(name.clone(), value.clone());
        }
    }
    custom
}

/// Running summary of a ClientStream.
struct Summary {
    count: u64,
    total_bytes: u64,
    messages: Vec<String>,
    max_messages: usize,
    digest: Sha256,
}

impl Summary {
    fn new(max_messages: u32) -> Self {
        Self {
            count: 0,
            total_bytes: 0,
            messages: Vec::new(),
            max_messages: max_messages as usize,
            digest: Sha256::new(),
        }
    }

    fn add(&mut self, request: &EchoRequest) {
        self.count += 1;
        self.total_bytes += (request.message.len() + request.payload.len()) as u64;
        for part in [request.message.as_bytes(), &request.payload[..]] {
            self.digest.update((part.len() as u64).to_be_bytes());
            self.digest.update(part);
        }
        if self.messages.len() < self.max_messages {
            self.messages.push(request.message.clone());
        }
    }

    fn finish(self, instance: &str, peer: &str) -> ClientStreamResponse {
        ClientStreamResponse {
            count: self.count,
            total_bytes: self.total_bytes,
            messages_truncated: (self.messages.len() as u64) < self.count,
            messages: self.messages,
            sha256: hex::encode(self.digest.finalize()),
            instance: instance.to_owned(),
            peer: peer.to_owned(),
        }
    }
}
