//! `grpc.testing.TestService` behaviours the interop cases do not reach:
//! CacheableUnaryCall, HalfDuplexCall and `interval_us`.

use std::time::{Duration, Instant};

use echo_tests::TestServer;
use grpc_echo::grpc::testing::test_service_client::TestServiceClient;
use grpc_echo::grpc::testing::{
    ResponseParameters, SimpleRequest, StreamingOutputCallRequest, StreamingOutputCallResponse,
};
use tokio_stream::wrappers::ReceiverStream;

fn sizes(sizes: &[i32]) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: sizes
            .iter()
            .map(|&size| ResponseParameters {
                size,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn payload_len(response: &StreamingOutputCallResponse) -> usize {
    response.payload.as_ref().map_or(0, |p| p.body.len())
}

/// Answered like UnaryCall, and marked cacheable for proxies in between.
#[tokio::test]
async fn cacheable_unary_call_answers_with_cache_control() {
    let server = TestServer::start().await;
    let mut client = TestServiceClient::new(server.channel().await);
    let response = client
        .cacheable_unary_call(SimpleRequest {
            response_size: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        response.metadata().get("cache-control").unwrap(),
        "max-age=60"
    );
    assert_eq!(response.get_ref().payload.as_ref().unwrap().body.len(), 10);
    server.stop().await;
}

/// Nothing is answered until the client half-closes; then every request is.
#[tokio::test]
async fn half_duplex_call_answers_after_the_client_finishes() {
    let server = TestServer::start().await;
    let mut client = TestServiceClient::new(server.channel().await);
    let (requests, receiver) = tokio::sync::mpsc::channel(4);
    requests.send(sizes(&[1])).await.unwrap();
    requests.send(sizes(&[2, 3])).await.unwrap();
    let call = tokio::spawn(async move {
        client
            .half_duplex_call(ReceiverStream::new(receiver))
            .await
            .map(tonic::Response::into_inner)
    });
    // While the request stream is open the call has no answer at all: tonic
    // waits for the response headers, which come with the first message.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!call.is_finished(), "answered before the client finished");
    drop(requests);
    let mut responses = call.await.unwrap().unwrap();
    let mut got = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        got.push(payload_len(&response));
    }
    assert_eq!(got, [1, 2, 3]);
    server.stop().await;
}

/// `interval_us` spaces the responses of a streaming call.
#[tokio::test]
async fn interval_us_spaces_streamed_responses() {
    let server = TestServer::start().await;
    let mut client = TestServiceClient::new(server.channel().await);
    let request = StreamingOutputCallRequest {
        response_parameters: (0..3)
            .map(|_| ResponseParameters {
                size: 1,
                interval_us: 100_000,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = client
        .streaming_output_call(request)
        .await
        .unwrap()
        .into_inner();
    let mut arrivals = Vec::new();
    while stream.message().await.unwrap().is_some() {
        arrivals.push(started.elapsed());
    }
    assert_eq!(arrivals.len(), 3);
    // Each response waits its interval first.
    for (i, at) in arrivals.iter().enumerate() {
        assert!(
            *at >= Duration::from_millis(100 * (i as u64 + 1) - 5),
            "{arrivals:?}"
        );
    }
    server.stop().await;
}
