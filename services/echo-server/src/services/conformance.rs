//! `connectrpc.conformance.v1.ConformanceService`, as the Connect conformance
//! suite (v1.0.5, `docs/testing_servers.md`) defines it: each request says how
//! to answer, each answer echoes what the server saw of the request.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use grpc_echo::connectrpc::conformance::v1::conformance_payload::{ConnectGetInfo, RequestInfo};
use grpc_echo::connectrpc::conformance::v1::conformance_service_server::ConformanceService as ConformanceApi;
use grpc_echo::connectrpc::conformance::v1::unary_response_definition::Response as UnaryAnswer;
use grpc_echo::connectrpc::conformance::v1::{
    BidiStreamRequest, BidiStreamResponse, ClientStreamRequest, ClientStreamResponse,
    ConformancePayload, Error, Header, IdempotentUnaryRequest, IdempotentUnaryResponse,
    ServerStreamRequest, ServerStreamResponse, StreamResponseDefinition, UnaryRequest,
    UnaryResponse, UnaryResponseDefinition, UnimplementedRequest, UnimplementedResponse,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use prost_types::Any;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::call::{Call, EchoedMetadata};
use crate::context::Original;
use crate::error::CaseError;
use crate::protocol::form_pairs;

/// Answer stream of the streaming calls.
type AnswerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Implements `ConformanceService`; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ConformanceService {
    streams_end: CancellationToken,
}

impl ConformanceService {
    pub(crate) fn new(streams_end: CancellationToken) -> Self {
        Self { streams_end }
    }
}

/// What the server saw of a call before its first request message.
struct Seen {
    headers: Vec<Header>,
    timeout_ms: Option<i64>,
    query: Option<Vec<Header>>,
}

impl Seen {
    fn of<T>(request: &Request<T>) -> Self {
        let original = request.extensions().get::<Original>();
        let headers = match original {
            Some(original) => to_headers(&original.headers),
            None => to_headers(request.metadata().as_ref()),
        };
        // Every protocol's timeout arrives here as `grpc-timeout` (the
        // Connect translation writes it from `connect-timeout-ms`): the
        // client's, where the `Deadline` also holds the server's own limit.
        let timeout = request
            .metadata()
            .as_ref()
            .get("grpc-timeout")
            .and_then(echo_wire::grpc_timeout::parse);
        Self {
            headers,
            timeout_ms: timeout
                .map(|timeout| i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)),
            query: original
                .and_then(|original| original.query.as_deref())
                .map(|query| {
                    let mut params: Vec<Header> = Vec::new();
                    for (name, value) in form_pairs(query) {
                        push_value(&mut params, name, value);
                    }
                    params
                }),
        }
    }

    /// The request info of the first answer (or of the error, when no answer
    /// carries it), echoing `requests`.
    fn info(&self, requests: Vec<Any>) -> RequestInfo {
        RequestInfo {
            request_headers: self.headers.clone(),
            timeout_ms: self.timeout_ms,
            requests,
            connect_get_info: self
                .query
                .clone()
                .map(|query_params| ConnectGetInfo { query_params }),
        }
    }
}

fn push_value(headers: &mut Vec<Header>, name: String, value: String) {
    match headers.iter_mut().find(|header| header.name == name) {
        Some(header) => header.value.push(value),
        None => headers.push(Header {
            name,
            value: vec![value],
        }),
    }
}

fn to_headers(map: &HeaderMap) -> Vec<Header> {
    let mut headers = Vec::new();
    for (name, value) in map {
        push_value(
            &mut headers,
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    headers
}

/// `headers` as a header map; names or values HTTP cannot carry are refused.
fn to_map(headers: &[Header]) -> Result<HeaderMap, Status> {
    let mut map = HeaderMap::new();
    for header in headers {
        let name = HeaderName::try_from(header.name.as_str()).map_err(|_| {
            Status::invalid_argument(format!("header name {:?} is not valid", header.name))
        })?;
        for value in &header.value {
            let value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                Status::invalid_argument(format!("value of header {name} is not valid"))
            })?;
            map.append(name.clone(), value);
        }
    }
    Ok(map)
}

/// The headers and trailers a definition asks for.
fn metadata(headers: &[Header], trailers: &[Header]) -> Result<EchoedMetadata, Status> {
    Ok(EchoedMetadata {
        headers: to_map(headers)?,
        trailers: to_map(trailers)?,
    })
}

/// The error `error` asks for, carrying `info` among its details when set.
fn case_error(error: &Error, info: Option<RequestInfo>) -> Status {
    let mut details = error.details.clone();
    if let Some(info) = info {
        details.push(pack_named("ConformancePayload.RequestInfo", &info));
    }
    CaseError {
        code: error.code,
        message: error.message.clone().unwrap_or_default(),
        details,
    }
    .into()
}

/// `message`, a `connectrpc.conformance.v1` message named `name`, as an `Any`.
fn pack_named(name: &str, message: &impl prost::Message) -> Any {
    Any {
        type_url: format!("type.googleapis.com/connectrpc.conformance.v1.{name}"),
        value: message.encode_to_vec(),
    }
}

/// A conformance message as an `Any`.
trait Packed: prost::Message + Sized {
    const NAME: &'static str;

    fn pack(&self) -> Any {
        pack_named(Self::NAME, self)
    }
}

macro_rules! packed {
    ($($message:ident),*) => {
        $(impl Packed for $message {
            const NAME: &'static str = stringify!($message);
        })*
    };
}

packed!(
    UnaryRequest,
    IdempotentUnaryRequest,
    ClientStreamRequest,
    ServerStreamRequest,
    BidiStreamRequest
);

fn delay(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

fn payload(data: Bytes, info: Option<RequestInfo>) -> Option<ConformancePayload> {
    Some(ConformancePayload {
        data,
        request_info: info,
    })
}

/// A unary answer (Unary, IdempotentUnary, ClientStream) as `definition` asks.
async fn answer_unary(
    call: &mut Call,
    seen: &Seen,
    definition: Option<UnaryResponseDefinition>,
    requests: Vec<Any>,
) -> Result<Response<Option<ConformancePayload>>, Status> {
    let info = seen.info(requests);
    let Some(definition) = definition else {
        return Ok(Response::new(payload(Bytes::new(), Some(info))));
    };
    let echoed = metadata(&definition.response_headers, &definition.response_trailers)?;
    let result = match definition.response {
        Some(UnaryAnswer::Error(error)) => Err(case_error(&error, Some(info))),
        Some(UnaryAnswer::ResponseData(data)) => Ok(payload(data, Some(info))),
        None => Ok(payload(Bytes::new(), Some(info))),
    };
    call.sleep(delay(definition.response_delay_ms)).await?;
    echoed.respond(result)
}

/// Unary and IdempotentUnary: the one request, answered as its definition says.
async fn unary_case<M: Packed>(
    request: Request<M>,
    definition: impl FnOnce(&M) -> Option<UnaryResponseDefinition>,
) -> Result<Response<Option<ConformancePayload>>, Status> {
    let (mut call, seen) = (Call::unary(&request), Seen::of(&request));
    let message = request.into_inner();
    answer_unary(&mut call, &seen, definition(&message), vec![message.pack()]).await
}

#[tonic::async_trait]
impl ConformanceApi for ConformanceService {
    async fn unary(
        &self,
        request: Request<UnaryRequest>,
    ) -> Result<Response<UnaryResponse>, Status> {
        unary_case(request, |message| message.response_definition.clone())
            .await
            .map(|response| response.map(|payload| UnaryResponse { payload }))
    }

    async fn idempotent_unary(
        &self,
        request: Request<IdempotentUnaryRequest>,
    ) -> Result<Response<IdempotentUnaryResponse>, Status> {
        unary_case(request, |message| message.response_definition.clone())
            .await
            .map(|response| response.map(|payload| IdempotentUnaryResponse { payload }))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<ClientStreamRequest>>,
    ) -> Result<Response<ClientStreamResponse>, Status> {
        let mut call = Call::stream(&request, &self.streams_end);
        let seen = Seen::of(&request);
        let mut inbound = request.into_inner();
        let mut definition = None;
        let mut requests = Vec::new();
        while let Some(message) = call.next_message(&mut inbound).await? {
            if requests.is_empty() {
                definition = message.response_definition.clone();
            }
            requests.push(message.pack());
        }
        answer_unary(&mut call, &seen, definition, requests)
            .await
            .map(|response| response.map(|payload| ClientStreamResponse { payload }))
    }

    type ServerStreamStream = AnswerStream<ServerStreamResponse>;

    async fn server_stream(
        &self,
        request: Request<ServerStreamRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let mut call = Call::stream(&request, &self.streams_end);
        let seen = Seen::of(&request);
        let message = request.into_inner();
        let requests = vec![message.pack()];
        let definition = message.response_definition.unwrap_or_default();
        let echoed = metadata(&definition.response_headers, &definition.response_trailers)?;
        let mut info = Some(seen.info(requests));
        let answers = async_stream::try_stream! {
            for data in definition.response_data {
                call.sleep(delay(definition.response_delay_ms)).await?;
                yield ServerStreamResponse { payload: payload(data, info.take()) };
            }
            if let Some(error) = &definition.error {
                Err(case_error(error, info.take()))?;
            }
        };
        echoed.respond(Ok(Box::pin(answers) as Self::ServerStreamStream))
    }

    type BidiStreamStream = AnswerStream<BidiStreamResponse>;

    async fn bidi_stream(
        &self,
        request: Request<Streaming<BidiStreamRequest>>,
    ) -> Result<Response<Self::BidiStreamStream>, Status> {
        let mut call = Call::stream(&request, &self.streams_end);
        let seen = Seen::of(&request);
        let mut inbound = request.into_inner();
        // The first request says how to answer, and whether to answer as
        // requests arrive (full duplex) or after the last (half duplex): read
        // it before the headers go, as they are its to set.
        let Some(first) = call.next_message(&mut inbound).await? else {
            return Ok(Response::new(Box::pin(futures_util::stream::empty())));
        };
        let definition: StreamResponseDefinition =
            first.response_definition.clone().unwrap_or_default();
        let full_duplex = first.full_duplex;
        let echoed = metadata(&definition.response_headers, &definition.response_trailers)?;
        let answers = async_stream::try_stream! {
            let mut first_answer = true;
            let mut pending = vec![first.pack()];
            let mut data = definition.response_data.into_iter();
            if full_duplex {
                loop {
                    match data.next() {
                        Some(data) => {
                            call.sleep(delay(definition.response_delay_ms)).await?;
                            let info = seen.info(std::mem::take(&mut pending));
                            let info = if first_answer {
                                info
                            } else {
                                RequestInfo { requests: info.requests, ..RequestInfo::default() }
                            };
                            first_answer = false;
                            yield BidiStreamResponse { payload: payload(data, Some(info)) };
                        }
                        // Nothing left to answer with: the error ends the call
                        // now, as the client may wait for an answer before it
                        // sends again.
                        None if definition.error.is_some() => break,
                        None => {}
                    }
                    match call.next_message(&mut inbound).await? {
                        Some(message) => pending.push(message.pack()),
                        None => break,
                    }
                }
            } else {
                while let Some(message) = call.next_message(&mut inbound).await? {
                    pending.push(message.pack());
                }
                let mut info = Some(seen.info(pending));
                for data in data {
                    call.sleep(delay(definition.response_delay_ms)).await?;
                    first_answer = false;
                    yield BidiStreamResponse { payload: payload(data, info.take()) };
                }
                pending = info.map(|info| info.requests).unwrap_or_default();
            }
            if let Some(error) = &definition.error {
                let info = first_answer.then(|| seen.info(pending));
                Err(case_error(error, info))?;
            }
        };
        echoed.respond(Ok(Box::pin(answers) as Self::BidiStreamStream))
    }

    async fn unimplemented(
        &self,
        _request: Request<UnimplementedRequest>,
    ) -> Result<Response<UnimplementedResponse>, Status> {
        Err(Status::unimplemented(
            "connectrpc.conformance.v1.ConformanceService/Unimplemented is never implemented",
        ))
    }
}
