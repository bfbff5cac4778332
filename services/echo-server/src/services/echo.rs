//! The `echo.v1.EchoService` handlers: check the controls, then echo.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::Stream;
use grpc_echo::echo::v1::echo_service_server::EchoService as EchoServiceApi;
use grpc_echo::echo::v1::{
    ClientStreamResponse, EchoRequest, EchoResponse, ForwardRequest, ForwardResponse, Wire,
};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::call::{Call, EchoedMetadata, connection_control, end_call, reset_stream};
use super::controls::{EchoTargets, Limits, Plan, Rpc};
use super::forward::Forwarder;
use crate::config::Config;
use crate::context::reflect_wire;
use crate::error::EchoError;
use crate::ops::stats::Stats;

/// Response stream of ServerStream and BidiStream.
pub(crate) type EchoStream =
    Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send + 'static>>;

/// Implements `echo.v1.EchoService`; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct EchoService {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    instance: String,
    forwarder: Forwarder,
    limits: Limits,
    stats: Arc<Stats>,
    /// Cancelled when the shutdown grace period ends: open streams then stop.
    streams_end: CancellationToken,
    /// `limits.max_payload_size` bytes of the generated payload, made on
    /// first use; each answer's payload is a slice of it, shared, not copied.
    payload: OnceLock<Bytes>,
}

impl Shared {
    fn payload(&self, size: u32) -> Bytes {
        let max = self.limits.max_payload_size as usize;
        self.payload
            .get_or_init(|| grpc_echo::echo::v1::payload(max))
            .slice(..size as usize)
    }
}

impl EchoService {
    pub(crate) fn new(
        config: &Config,
        stats: Arc<Stats>,
        streams_end: CancellationToken,
        forwarder: Forwarder,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                forwarder,
                instance: config.listen.instance(),
                limits: Limits::from(&config.controls),
                stats,
                streams_end,
                payload: OnceLock::new(),
            }),
        }
    }

    fn response(&self, request: &EchoRequest, plan: &Plan, call: &Call) -> EchoResponse {
        EchoResponse {
            message: request.message.clone(),
            // A behaviour header's size replaces the message's.
            payload: call
                .response_size
                .or(plan.response_size)
                .map_or_else(|| request.payload.clone(), |size| self.shared.payload(size)),
            instance: self.shared.instance.clone(),
            peer: call.peer.clone(),
            peer_identity: call.peer_identity.clone(),
            sequence: 0,
            wire: None,
        }
    }

    /// BidiStream's answer to one request, once its delay has passed.
    fn bidi_answer(
        &self,
        request: &EchoRequest,
        mut plan: Plan,
        call: &Call,
        sequence: u64,
    ) -> Result<EchoResponse, EchoError> {
        if let Some(error) = plan.error.take() {
            return Err(error);
        }
        Ok(EchoResponse {
            sequence,
            ..self.response(request, &plan, call)
        })
    }
}

#[tonic::async_trait]
impl EchoServiceApi for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let mut call = Call::unary(&request);
        let plan = self.shared.limits.plan(request.get_ref(), Rpc::Echo)?;
        let wire = reflected_wire(&request);
        let (echo, action) = (plan.echo, plan.connection);
        let connection = connection_control(&request, action);
        let result = async {
            call.sleep(plan.delay).await?;
            end_call(action, connection.as_ref()).await;
            match plan.error {
                Some(error) => Err(error),
                None => Ok(EchoResponse {
                    wire,
                    ..self.response(request.get_ref(), &plan, &call)
                }),
            }
        }
        .await;
        let mut response =
            echoed(request.metadata(), echo).respond(result.map_err(Status::from))?;
        reset_stream(&mut response, action);
        Ok(response)
    }

    type ServerStreamStream = EchoStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoStream>, Status> {
        let mut call = Call::stream(&request, &self.shared.streams_end);
        let plan = self
            .shared
            .limits
            .plan(request.get_ref(), Rpc::ServerStream)?;
        let (echo, action) = (plan.echo, plan.connection);
        let connection = connection_control(&request, action);
        let template = self.response(request.get_ref(), &plan, &call);
        // On the first response only.
        let mut wire = reflected_wire(&request);
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
                yield Ok(EchoResponse { sequence, wire: wire.take(), ..template.clone() });
            }
            end_call(action, connection.as_ref()).await;
            if let Some(error) = plan.error {
                yield Err(error.into());
            }
        };
        let mut response =
            echoed(request.metadata(), echo).respond(Ok(Box::pin(stream) as EchoStream))?;
        reset_stream(&mut response, action);
        Ok(response)
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ClientStreamResponse>, Status> {
        let mut call = Call::stream(&request, &self.shared.streams_end);
        let _open = self.shared.stats.open_stream();
        let (metadata, _, mut inbound) = request.into_parts();
        let mut summary = Summary::new(self.shared.limits.max_summary_messages);
        let mut echo = EchoTargets::default();
        let result = async {
            while let Some(request) = call.next_message(&mut inbound).await? {
                let plan = self.shared.limits.plan(&request, Rpc::ClientStream)?;
                echo = echo.union(plan.echo);
                call.sleep(plan.delay).await?;
                if let Some(error) = plan.error {
                    return Err(error);
                }
                summary.add(&request);
            }
            Ok(summary.finish(&self.shared.instance, &call))
        }
        .await;
        echoed(&metadata, echo).respond(result.map_err(Status::from))
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let response = self
            .shared
            .forwarder
            .forward(&self.shared.instance, request)
            .await?;
        Ok(Response::new(response))
    }

    type BidiStreamStream = EchoStream;

    async fn bidi_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoStream>, Status> {
        let mut call = Call::stream(&request, &self.shared.streams_end);
        let open = self.shared.stats.open_stream();
        let mut inbound = request.into_inner();
        let service = self.clone();
        // The first error ends the stream (`?` yields it).
        let stream = async_stream::try_stream! {
            // Each message's steps are written out here rather than awaited
            // as one future: that future (800 bytes in a debug build) would be
            // built and copied for every message.
            for sequence in 0.. {
                let Some(request) = call.next_message(&mut inbound).await? else {
                    break;
                };
                let plan = service.shared.limits.plan(&request, Rpc::BidiStream)?;
                call.sleep(plan.delay).await?;
                let response = service.bidi_answer(&request, plan, &call, sequence)?;
                open.message_sent();
                yield response;
            }
        };
        Ok(Response::new(Box::pin(stream) as EchoStream))
    }
}

/// The caller's own metadata (everything but HTTP/2 and gRPC protocol headers),
/// where `targets` ask for it.
fn echoed(metadata: &MetadataMap, targets: EchoTargets) -> EchoedMetadata {
    let custom = || {
        // Credentials are never echoed: proxies in between may log response
        // headers. Nor are HTTP/1.1's connection headers, or a browser's own.
        const PROTOCOL: [&str; 16] = [
            "te",
            "content-type",
            "user-agent",
            "accept-encoding",
            "host",
            "authorization",
            "cookie",
            "connection",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
            "origin",
            "referer",
            "accept",
            "accept-language",
            "priority",
        ];
        let mut custom = HeaderMap::new();
        for (name, value) in metadata.as_ref() {
            let name_str = name.as_str();
            if !name_str.starts_with("grpc-")
                && !name_str.starts_with("sec-")
                && !PROTOCOL.contains(&name_str)
            {
                custom.append(name.clone(), value.clone());
            }
        }
        custom
    };
    EchoedMetadata {
        headers: if targets.headers {
            custom()
        } else {
            HeaderMap::new()
        },
        trailers: if targets.trailers {
            custom()
        } else {
            HeaderMap::new()
        },
    }
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

    fn finish(self, instance: &str, call: &Call) -> ClientStreamResponse {
        ClientStreamResponse {
            count: self.count,
            total_bytes: self.total_bytes,
            messages_truncated: (self.messages.len() as u64) < self.count,
            messages: self.messages,
            sha256: hex::encode(self.digest.finalize()),
            instance: instance.to_owned(),
            peer: call.peer.clone(),
            peer_identity: call.peer_identity.clone(),
        }
    }
}

/// What arrived for `request`, when its `reflect_wire` asks.
fn reflected_wire(request: &Request<EchoRequest>) -> Option<Box<Wire>> {
    request.get_ref().reflect_wire.then(|| {
        let headers = request.metadata().clone().into_headers();
        Box::new(reflect_wire(&headers, request.extensions()))
    })
}
