//! What the load calls: every target is a [`Caller`], and one driver loop
//! ([`drive`]) runs any of them on the schedule.

use std::pin::Pin;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes};
use echo_client::proto::{EchoRequest, StreamControl};
use echo_client::{EchoClient, LeanUnary, Transport, load_report};
use grpc_echo::grpc::testing::SimpleRequest;
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use http::uri::PathAndQuery;
use prost_reflect::MessageDescriptor;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};

use super::schedule::Schedule;
use super::tally::{Answer, Tally};
use super::template::{RequestContext, Template};

/// One call of the load: a unary call, a whole streaming call, or (bidi) one
/// message and its echo on a stream kept open from call to call. Clones share
/// the connection but not a stream.
pub(super) trait Caller: Clone + Send + 'static {
    /// Tells a worker's caller which worker it is, on which connection.
    fn assign(&mut self, _worker: usize, _connection: usize) {}

    /// Makes the call.
    fn call(&mut self) -> impl Future<Output = Result<Answer, Status>> + Send;
}

/// Calls `caller` (worker `worker`) on `schedule` until the run is over, from
/// `joins` on when given (a stepped concurrency's later workers).
pub(super) async fn drive<C: Caller>(
    mut caller: C,
    schedule: Arc<Schedule>,
    joins: Option<tokio::time::Instant>,
    worker: usize,
) -> Tally {
    if let Some(joins) = joins {
        schedule.wait_until(joins).await;
    }
    let mut tally = Tally::new(worker, schedule.keeps_calls());
    while let Some(scheduled) = schedule.next() {
        schedule.wait_until(scheduled).await;
        let result = caller.call().await;
        schedule.record(&mut tally, scheduled, result);
    }
    tally
}

/// `echo.v1.EchoService/Echo`.
#[derive(Clone)]
pub(super) struct EchoUnary {
    pub(super) client: EchoClient,
    pub(super) request: EchoRequest,
}

impl Caller for EchoUnary {
    async fn call(&mut self) -> Result<Answer, Status> {
        let response = self.client.echo(self.request.clone()).await?;
        let load = load_report::from_metadata(response.metadata()).map(Box::new);
        Ok(Answer {
            load,
            ..Answer::one(response.into_inner().instance)
        })
    }
}

/// `echo.v1.EchoService/ServerStream`, `messages` answers per call.
#[derive(Clone)]
pub(super) struct EchoServerStream {
    client: EchoClient,
    request: EchoRequest,
}

impl EchoServerStream {
    pub(super) fn new(client: EchoClient, request: EchoRequest, messages: u32) -> Self {
        let request = EchoRequest {
            stream: Some(StreamControl {
                count: Some(messages),
                interval: None,
            }),
            ..request
        };
        Self { client, request }
    }
}

impl Caller for EchoServerStream {
    async fn call(&mut self) -> Result<Answer, Status> {
        let mut stream = self
            .client
            .server_stream(self.request.clone())
            .await?
            .into_inner();
        let mut answer = Answer {
            messages: 0,
            instance: String::new(),
            load: None,
        };
        while let Some(response) = stream.message().await? {
            if answer.messages == 0 {
                answer.instance = response.instance;
            }
            answer.messages += 1;
        }
        Ok(answer)
    }
}

/// `echo.v1.EchoService/ClientStream`, `messages` requests per call.
#[derive(Clone)]
pub(super) struct EchoClientStream {
    pub(super) client: EchoClient,
    pub(super) request: EchoRequest,
    pub(super) messages: u32,
}

impl Caller for EchoClientStream {
    async fn call(&mut self) -> Result<Answer, Status> {
        let requests = tokio_stream::iter(std::iter::repeat_n(
            self.request.clone(),
            self.messages as usize,
        ));
        let summary = self.client.client_stream(requests).await?.into_inner();
        Ok(Answer {
            messages: summary.count,
            instance: summary.instance,
            load: None,
        })
    }
}

/// The interop `grpc.testing.TestService/UnaryCall`.
#[derive(Clone)]
pub(super) struct InteropUnary {
    pub(super) client: TestServiceClient<Transport>,
    pub(super) request: SimpleRequest,
}

impl Caller for InteropUnary {
    async fn call(&mut self) -> Result<Answer, Status> {
        self.client.unary_call(self.request.clone()).await?;
        Ok(Answer::one(String::new()))
    }
}

impl Caller for LeanUnary {
    async fn call(&mut self) -> Result<Answer, Status> {
        LeanUnary::call(self).await?;
        Ok(Answer::one(String::new()))
    }
}

/// Any unary method, with raw messages over the client library's transport,
/// sent in turn.
#[derive(Clone)]
pub(super) struct RawUnary {
    pub(super) grpc: Grpc<Transport>,
    pub(super) path: PathAndQuery,
    pub(super) messages: Requests,
}

impl Caller for RawUnary {
    fn assign(&mut self, worker: usize, connection: usize) {
        self.messages.assign(worker, connection);
    }

    async fn call(&mut self) -> Result<Answer, Status> {
        crate::commands::any::call::ready(&mut self.grpc).await?;
        self.grpc
            .unary(self.messages.next_request()?, self.path.clone(), RawCodec)
            .await?;
        Ok(Answer::one(String::new()))
    }
}

/// Any server-streaming method: one raw request (in turn), the answers counted.
#[derive(Clone)]
pub(super) struct RawServerStream {
    pub(super) grpc: Grpc<Transport>,
    pub(super) path: PathAndQuery,
    pub(super) messages: Requests,
}

impl Caller for RawServerStream {
    fn assign(&mut self, worker: usize, connection: usize) {
        self.messages.assign(worker, connection);
    }

    async fn call(&mut self) -> Result<Answer, Status> {
        crate::commands::any::call::ready(&mut self.grpc).await?;
        let mut answers = self
            .grpc
            .server_streaming(self.messages.next_request()?, self.path.clone(), RawCodec)
            .await?
            .into_inner();
        let mut answer = Answer {
            messages: 0,
            instance: String::new(),
            load: None,
        };
        while answers.message().await?.is_some() {
            answer.messages += 1;
        }
        Ok(answer)
    }
}

/// Any client-streaming method: `count` raw requests (in turn), one answer.
#[derive(Clone)]
pub(super) struct RawClientStream {
    pub(super) grpc: Grpc<Transport>,
    pub(super) path: PathAndQuery,
    pub(super) messages: Requests,
    pub(super) count: u32,
}

impl Caller for RawClientStream {
    fn assign(&mut self, worker: usize, connection: usize) {
        self.messages.assign(worker, connection);
    }

    async fn call(&mut self) -> Result<Answer, Status> {
        crate::commands::any::call::ready(&mut self.grpc).await?;
        // The headers of the first request go with the call.
        let mut metadata = None;
        let mut messages = Vec::with_capacity(self.count as usize);
        for _ in 0..self.count {
            let (headers, _, message) = self.messages.next_request()?.into_parts();
            metadata.get_or_insert(headers);
            messages.push(message);
        }
        let requests = tonic::Request::from_parts(
            metadata.unwrap_or_default(),
            Default::default(),
            tokio_stream::iter(messages),
        );
        self.grpc
            .client_streaming(requests, self.path.clone(), RawCodec)
            .await?;
        Ok(Answer {
            messages: u64::from(self.count),
            instance: String::new(),
            load: None,
        })
    }
}

/// The requests of a `--method` or `--call` load: messages encoded once and
/// handed out in turn (each worker from the first), or made per request from
/// templates (body, headers or both).
#[derive(Clone)]
pub(super) struct Requests {
    messages: Arc<[Bytes]>,
    next: usize,
    templates: Option<Arc<Templates>>,
    worker: usize,
    connection: usize,
}

/// What is made per request.
pub(super) struct Templates {
    /// The request message, as JSON of this type.
    pub(super) body: Option<(Template, MessageDescriptor)>,
    pub(super) headers: Vec<(MetadataKey<Ascii>, Template)>,
    /// Requests made so far, across workers.
    pub(super) made: AtomicU64,
}

impl Requests {
    /// `messages` (at least one) in turn, with `templates` applied.
    pub(super) fn new(messages: Vec<Bytes>, templates: Option<Arc<Templates>>) -> Self {
        assert!(!messages.is_empty(), "no request messages");
        Self {
            messages: messages.into(),
            next: 0,
            templates,
            worker: 0,
            connection: 0,
        }
    }

    /// The worker and connection the templates name.
    pub(super) fn assign(&mut self, worker: usize, connection: usize) {
        (self.worker, self.connection) = (worker, connection);
    }

    /// The message whose turn it is (a free function: it borrows only the
    /// turn, so the templates stay borrowed beside it).
    fn next_message(messages: &[Bytes], next: &mut usize) -> Bytes {
        let message = messages[*next].clone();
        *next = (*next + 1) % messages.len();
        message
    }

    /// The next request. A template that makes a message or header that does
    /// not fit fails the call as INVALID_ARGUMENT, before anything is sent.
    pub(super) fn next_request(&mut self) -> Result<tonic::Request<Bytes>, Status> {
        let Some(templates) = &self.templates else {
            return Ok(tonic::Request::new(Self::next_message(
                &self.messages,
                &mut self.next,
            )));
        };
        let context = RequestContext {
            request: templates.made.fetch_add(1, Ordering::Relaxed),
            worker: self.worker,
            connection: self.connection,
        };
        let body = match &templates.body {
            Some((template, input)) => encode(input, &template.render(context))
                .map_err(|err| Status::invalid_argument(format!("{err:#}")))?,
            None => Self::next_message(&self.messages, &mut self.next),
        };
        let mut request = tonic::Request::new(body);
        for (key, template) in &templates.headers {
            let value = template.render(context);
            let value = MetadataValue::try_from(value.as_str()).map_err(|_| {
                Status::invalid_argument(format!("header {key} from its template: {value:?}"))
            })?;
            request.metadata_mut().insert(key.clone(), value);
        }
        Ok(request)
    }
}

/// `json`, one request of type `input`, encoded.
pub(super) fn encode(input: &MessageDescriptor, json: &str) -> anyhow::Result<Bytes> {
    let value = serde_json::from_str(json);
    let message = crate::commands::any::call::to_message(input, 0, value)?;
    Ok(prost::Message::encode_to_vec(&message).into())
}

/// Answers of a bidi stream, one per message.
pub(super) type Answers = Pin<Box<dyn Stream<Item = Result<Answer, Status>> + Send>>;

/// Opens a bidi stream whose requests come from a channel.
pub(super) trait OpenStream<M>: Clone + Send + 'static {
    /// Opens the stream; its answers, one per message.
    fn open(
        &mut self,
        requests: ReceiverStream<M>,
    ) -> impl Future<Output = Result<Answers, Status>> + Send;
}

/// Bidi ping-pong: each call sends one message on a stream kept open between
/// calls and waits for its echo. A failed stream is opened again by the next call.
pub(super) struct PingPong<M, O> {
    opener: O,
    message: M,
    open: Option<(mpsc::Sender<M>, Answers)>,
}

impl<M, O> PingPong<M, O> {
    pub(super) fn new(opener: O, message: M) -> Self {
        Self {
            opener,
            message,
            open: None,
        }
    }
}

impl<M: Clone, O: Clone> Clone for PingPong<M, O> {
    /// A clone opens a stream of its own.
    fn clone(&self) -> Self {
        Self::new(self.opener.clone(), self.message.clone())
    }
}

impl<M, O> PingPong<M, O>
where
    M: Clone + Send + Sync + 'static,
    O: OpenStream<M>,
{
    async fn exchange(&mut self) -> Result<Answer, Status> {
        let answers = match &mut self.open {
            Some((sender, answers)) => {
                sender
                    .send(self.message.clone())
                    .await
                    .map_err(|_| Status::unavailable("the stream closed"))?;
                answers
            }
            None => {
                // Sent before opening: some servers answer the headers only
                // with the first message, and the call waits for them.
                let (sender, receiver) = mpsc::channel(1);
                sender
                    .send(self.message.clone())
                    .await
                    .expect("the receiver is right here");
                let answers = self.opener.open(ReceiverStream::new(receiver)).await?;
                &mut self.open.insert((sender, answers)).1
            }
        };
        answers
            .next()
            .await
            .unwrap_or_else(|| Err(Status::unknown("the stream ended")))
    }
}

impl<M, O> Caller for PingPong<M, O>
where
    M: Clone + Send + Sync + 'static,
    O: OpenStream<M>,
{
    async fn call(&mut self) -> Result<Answer, Status> {
        let result = self.exchange().await;
        if result.is_err() {
            self.open = None;
        }
        result
    }
}

/// Opens `echo.v1.EchoService/BidiStream`.
#[derive(Clone)]
pub(super) struct EchoBidi(pub(super) EchoClient);

impl OpenStream<EchoRequest> for EchoBidi {
    async fn open(&mut self, requests: ReceiverStream<EchoRequest>) -> Result<Answers, Status> {
        let echoes = self.0.bidi_stream(requests).await?.into_inner();
        Ok(Box::pin(
            echoes.map(|echo| echo.map(|echo| Answer::one(echo.instance))),
        ))
    }
}

/// Opens any bidi method, with raw messages.
#[derive(Clone)]
pub(super) struct RawBidi {
    pub(super) grpc: Grpc<Transport>,
    pub(super) path: PathAndQuery,
}

impl OpenStream<Bytes> for RawBidi {
    async fn open(&mut self, requests: ReceiverStream<Bytes>) -> Result<Answers, Status> {
        crate::commands::any::call::ready(&mut self.grpc).await?;
        let echoes = self
            .grpc
            .streaming(tonic::Request::new(requests), self.path.clone(), RawCodec)
            .await?
            .into_inner();
        Ok(Box::pin(
            echoes.map(|echo| echo.map(|_| Answer::one(String::new()))),
        ))
    }
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
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
