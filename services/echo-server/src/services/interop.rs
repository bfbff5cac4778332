//! `grpc.testing.TestService`, as the gRPC interop test descriptions define it,
//! so any implementation's interop client can test itself against this server.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use echo_wire::framing::{CompressionPlan, ObservedCompression};
use futures_util::Stream;
use grpc_echo::grpc::testing::test_service_server::TestService as TestServiceApi;
use grpc_echo::grpc::testing::{
    BoolValue, ECHO_INITIAL_METADATA, ECHO_TRAILING_METADATA, EchoStatus, Empty, Payload,
    PayloadType, ResponseParameters, SimpleRequest, SimpleResponse, StreamingInputCallRequest,
    StreamingInputCallResponse, StreamingOutputCallRequest, StreamingOutputCallResponse,
};
use http::{HeaderMap, HeaderValue};
use tokio_util::sync::CancellationToken;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

use super::call::{Call, EchoedMetadata};
use crate::config::Config;
use crate::context::ResponseSize;
use crate::error::EchoError;
use crate::ops::stats::Stats;

/// Response stream of the streaming TestService calls.
pub(crate) type InteropStream =
    Pin<Box<dyn Stream<Item = Result<StreamingOutputCallResponse, Status>> + Send + 'static>>;

/// Implements `grpc.testing.TestService`; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct TestService {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    instance: String,
    /// `instance` as the `hostname` header every unary answer carries, as
    /// gRPC's xDS interop test server sends it.
    hostname: HeaderValue,
    max_payload_size: u32,
    stats: Arc<Stats>,
    streams_end: CancellationToken,
}

impl TestService {
    pub(crate) fn new(config: &Config, stats: Arc<Stats>, streams_end: CancellationToken) -> Self {
        let instance = config.listen.instance();
        Self {
            shared: Arc::new(Shared {
                hostname: HeaderValue::from_str(&instance)
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                instance,
                max_payload_size: config.controls.max_payload_size,
                stats,
                streams_end,
            }),
        }
    }

    /// A payload of `header_size` (a behaviour header's, checked by its
    /// layer) or else the message's `size`.
    fn payload(
        &self,
        field: &'static str,
        header_size: Option<u32>,
        size: i32,
    ) -> Result<Payload, EchoError> {
        let size = match header_size {
            Some(size) => size,
            None => u32::try_from(size)
                .map_err(|_| EchoError::invalid(field, "must not be negative"))?,
        };
        if size > self.shared.max_payload_size {
            return Err(EchoError::invalid(
                field,
                format!(
                    "{size} exceeds the server maximum of {}",
                    self.shared.max_payload_size
                ),
            ));
        }
        Ok(Payload {
            r#type: PayloadType::Compressable as i32,
            body: Bytes::from(vec![0; size as usize]),
        })
    }

    fn simple_response(
        &self,
        request: &SimpleRequest,
        observed: Option<&ObservedCompression>,
        header_size: Option<u32>,
    ) -> Result<SimpleResponse, Status> {
        check_payload_type("response_type", request.response_type)?;
        check_compressed(request.expect_compressed.as_ref(), observed)?;
        if let Some(status) = requested_status(request.response_status.as_ref()) {
            return Err(status);
        }
        Ok(SimpleResponse {
            payload: Some(self.payload("response_size", header_size, request.response_size)?),
            server_id: if request.fill_server_id {
                self.shared.instance.clone()
            } else {
                String::new()
            },
            hostname: self.shared.instance.clone(),
            // No authentication here, so username and OAuth scope stay empty.
            ..Default::default()
        })
    }

    async fn unary(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let observed = request.extensions().get::<ObservedCompression>();
        let size = request
            .extensions()
            .get::<ResponseSize>()
            .map(|size| size.0);
        let result = self.simple_response(request.get_ref(), observed, size);
        let compress = is_true(request.get_ref().response_compressed.as_ref());
        let mut response = self.echoed_unary(request.metadata()).respond(result)?;
        if compress {
            let plan = CompressionPlan::default();
            plan.0.push(true);
            response.extensions_mut().insert(plan);
        }
        Ok(response)
    }

    /// The metadata a unary answer carries: the echoed metadata, and the
    /// `hostname` header.
    fn echoed_unary(&self, metadata: &MetadataMap) -> EchoedMetadata {
        let mut echoed = echoed(metadata);
        echoed
            .headers
            .insert(echo_wire::headers::HOSTNAME, self.shared.hostname.clone());
        echoed
    }

    /// Answers each request of `requests` with its response parameters, in order.
    fn answer_each<S>(
        &self,
        mut call: Call,
        metadata: &MetadataMap,
        mut requests: S,
    ) -> Result<Response<InteropStream>, Status>
    where
        S: Stream<Item = Result<StreamingOutputCallRequest, Status>> + Send + Unpin + 'static,
    {
        let plan = CompressionPlan::default();
        let service = self.clone();
        let open = self.shared.stats.open_stream();
        let stream = {
            let plan = plan.clone();
            // The first error ends the stream (`?` yields it).
            async_stream::try_stream! {
                while let Some(request) = call.next_message(&mut requests).await? {
                    check_payload_type("response_type", request.response_type)?;
                    for parameters in &request.response_parameters {
                        let response = service.streamed(&mut call, parameters).await?;
                        plan.0.push(is_true(parameters.compressed.as_ref()));
                        open.message_sent();
                        yield response;
                    }
                    if let Some(status) = requested_status(request.response_status.as_ref()) {
                        Err(status)?;
                    }
                }
            }
        };
        let mut response = echoed(metadata).respond(Ok(Box::pin(stream) as InteropStream))?;
        response.extensions_mut().insert(plan);
        Ok(response)
    }

    async fn streamed(
        &self,
        call: &mut Call,
        parameters: &ResponseParameters,
    ) -> Result<StreamingOutputCallResponse, EchoError> {
        let interval = u64::try_from(parameters.interval_us).map_err(|_| {
            EchoError::invalid("response_parameters.interval_us", "must not be negative")
        })?;
        call.sleep(Duration::from_micros(interval)).await?;
        Ok(StreamingOutputCallResponse {
            payload: Some(self.payload(
                "response_parameters.size",
                call.response_size,
                parameters.size,
            )?),
        })
    }
}

#[tonic::async_trait]
impl TestServiceApi for TestService {
    async fn empty_call(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.echoed_unary(request.metadata()).respond(Ok(Empty {}))
    }

    async fn unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        self.unary(request).await
    }

    /// Answers like UnaryCall, marked cacheable for proxies in between.
    async fn cacheable_unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let mut response = self.unary(request).await?;
        response
            .metadata_mut()
            .insert("cache-control", MetadataValue::from_static("max-age=60"));
        Ok(response)
    }

    type StreamingOutputCallStream = InteropStream;

    async fn streaming_output_call(
        &self,
        request: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<InteropStream>, Status> {
        let call = Call::stream(&request, &self.shared.streams_end);
        let (metadata, _, request) = request.into_parts();
        self.answer_each(call, &metadata, futures_util::stream::iter([Ok(request)]))
    }

    async fn streaming_input_call(
        &self,
        request: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let mut call = Call::stream(&request, &self.shared.streams_end);
        let _open = self.shared.stats.open_stream();
        let observed = request.extensions().get::<ObservedCompression>().cloned();
        let (metadata, _, mut inbound) = request.into_parts();
        let result = async {
            let mut aggregated: i32 = 0;
            while let Some(message) = call.next_message(&mut inbound).await? {
                check_compressed(message.expect_compressed.as_ref(), observed.as_ref())?;
                let size = message.payload.map_or(0, |p| p.body.len());
                aggregated = aggregated.saturating_add(i32::try_from(size).unwrap_or(i32::MAX));
            }
            Ok(StreamingInputCallResponse {
                aggregated_payload_size: aggregated,
            })
        }
        .await;
        echoed(&metadata).respond(result)
    }

    type FullDuplexCallStream = InteropStream;

    async fn full_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<InteropStream>, Status> {
        let call = Call::stream(&request, &self.shared.streams_end);
        let (metadata, _, inbound) = request.into_parts();
        self.answer_each(call, &metadata, inbound)
    }

    type HalfDuplexCallStream = InteropStream;

    async fn half_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<InteropStream>, Status> {
        let mut call = Call::stream(&request, &self.shared.streams_end);
        let (metadata, _, mut inbound) = request.into_parts();
        // Nothing is answered until the client half-closes.
        let mut buffered = Vec::new();
        while let Some(message) = call.next_message(&mut inbound).await? {
            buffered.push(Ok(message));
        }
        self.answer_each(call, &metadata, futures_util::stream::iter(buffered))
    }

    async fn unimplemented_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(
            "grpc.testing.TestService/UnimplementedCall is never implemented",
        ))
    }
}

/// `x-grpc-test-echo-initial` back as a header, `x-grpc-test-echo-trailing-bin` as a trailer.
fn echoed(metadata: &MetadataMap) -> EchoedMetadata {
    let copy = |key: &'static str| {
        let mut headers = HeaderMap::new();
        for value in metadata.as_ref().get_all(key) {
            headers.append(key, value.clone());
        }
        headers
    };
    EchoedMetadata {
        headers: copy(ECHO_INITIAL_METADATA),
        trailers: copy(ECHO_TRAILING_METADATA),
    }
}

fn is_true(value: Option<&BoolValue>) -> bool {
    value.is_some_and(|v| v.value)
}

/// A request that says it was sent compressed must have been.
fn check_compressed(
    expect_compressed: Option<&BoolValue>,
    observed: Option<&ObservedCompression>,
) -> Result<(), Status> {
    let was_compressed = observed.and_then(|flags| flags.0.pop()).unwrap_or(false);
    if is_true(expect_compressed) && !was_compressed {
        return Err(EchoError::invalid(
            "expect_compressed",
            "the message was expected compressed but arrived uncompressed",
        )
        .into());
    }
    Ok(())
}

fn check_payload_type(field: &'static str, value: i32) -> Result<(), Status> {
    match PayloadType::try_from(value) {
        Ok(_) => Ok(()),
        Err(_) => {
            Err(EchoError::invalid(field, format!("unknown PayloadType value {value}")).into())
        }
    }
}

/// The status a request asks the call to end with, if any.
fn requested_status(status: Option<&EchoStatus>) -> Option<Status> {
    status
        .filter(|status| status.code != 0)
        .map(|status| Status::new(Code::from_i32(status.code), status.message.clone()))
}
