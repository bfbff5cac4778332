//! `grpc.examples.echo.Echo`, the service of grpc-go's feature examples, so
//! their clients (in any language) run against this server unchanged.

use std::pin::Pin;

use futures_util::Stream;
use grpc_echo::grpc::examples::echo::echo_server::Echo;
use grpc_echo::grpc::examples::echo::{EchoRequest, EchoResponse};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::call::Call;

/// How many copies of the message `ServerStreamingEcho` sends, as grpc-go's example servers do.
pub(crate) const SERVER_STREAMING_COPIES: usize = 10;

/// Response stream of the streaming `Echo` calls.
pub(crate) type ExampleStream =
    Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send + 'static>>;

/// Implements `grpc.examples.echo.Echo`.
#[derive(Debug, Clone)]
pub(crate) struct ExampleEchoService {
    streams_end: CancellationToken,
}

impl ExampleEchoService {
    pub(crate) fn new(streams_end: CancellationToken) -> Self {
        Self { streams_end }
    }
}

#[tonic::async_trait]
impl Echo for ExampleEchoService {
    async fn unary_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            message: request.into_inner().message,
        }))
    }

    type ServerStreamingEchoStream = ExampleStream;

    async fn server_streaming_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<ExampleStream>, Status> {
        let message = request.into_inner().message;
        let copies = std::iter::repeat_n(Ok(EchoResponse { message }), SERVER_STREAMING_COPIES);
        Ok(Response::new(Box::pin(futures_util::stream::iter(copies))))
    }

    /// Answers with the last message received (empty when there was none).
    async fn client_streaming_echo(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let mut call = Call::stream(&request, &self.streams_end);
        let mut inbound = request.into_inner();
        let mut last = String::new();
        while let Some(message) = call.next_message(&mut inbound).await? {
            last = message.message;
        }
        Ok(Response::new(EchoResponse { message: last }))
    }

    type BidirectionalStreamingEchoStream = ExampleStream;

    async fn bidirectional_streaming_echo(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ExampleStream>, Status> {
        let mut call = Call::stream(&request, &self.streams_end);
        let mut inbound = request.into_inner();
        // The first error ends the stream (`?` yields it).
        let stream = async_stream::try_stream! {
            while let Some(message) = call.next_message(&mut inbound).await? {
                yield EchoResponse { message: message.message };
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
