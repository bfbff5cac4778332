//! Every RPC and control, through the client library against an in-process server.

use std::time::{Duration, Instant};

use echo_client::proto::{EchoRequest, ErrorControl, MetadataEcho, StatusCode, StreamControl};
use echo_tests::{INSTANCE, TestServer, eventually, ms};
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};
use tonic_types::StatusExt;

fn text(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn echo_returns_message_payload_instance_and_peer() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let request = EchoRequest {
        message: "hello".into(),
        payload: vec![1, 2, 3].into(),
        ..Default::default()
    };
    let response = client.echo(request).await.unwrap().into_inner();
    assert_eq!(response.message, "hello");
    assert_eq!(&response.payload[..], &[1, 2, 3]);
    assert_eq!(response.instance, INSTANCE);
    assert!(
        response.peer.starts_with("127.0.0.1:"),
        "peer {:?}",
        response.peer
    );
    assert_eq!(response.sequence, 0);
    server.stop().await;
}

#[tokio::test]
async fn response_size_and_delay_are_honoured() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let started = Instant::now();
    let request = EchoRequest {
        response_size: Some(100_000),
        delay: Some(ms(200)),
        payload: vec![9; 10].into(),
        ..Default::default()
    };
    let response = client.echo(request).await.unwrap().into_inner();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(response.payload.len(), 100_000);
    assert_eq!(
        response.payload[251], 0,
        "the generated pattern repeats every 251 bytes"
    );
    assert_eq!(response.payload[252], 1);
    server.stop().await;
}

#[tokio::test]
async fn requested_error_carries_code_message_and_error_info() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let request = EchoRequest {
        error: Some(ErrorControl {
            code: StatusCode::NotFound as i32,
            message: "no such thing".into(),
            details: [("key".to_owned(), "value".to_owned())].into(),
            retry_delay: Some(prost_types::Duration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        }),
        ..Default::default()
    };
    let status = client.echo(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no such thing");
    let info = status.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, "ECHO_REQUESTED_ERROR");
    assert_eq!(info.domain, "grpc-echo");
    assert_eq!(info.metadata.get("key").map(String::as_str), Some("value"));
    let retry = status.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(2500)));
    server.stop().await;
}

#[tokio::test]
async fn bad_controls_get_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let cases: Vec<(&str, EchoRequest)> = vec![
        (
            "delay",
            EchoRequest {
                delay: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..text("")
            },
        ),
        (
            "delay",
            EchoRequest {
                delay: Some(ms(3_600_000)),
                ..text("")
            },
        ),
        (
            "response_size",
            EchoRequest {
                response_size: Some(u32::MAX),
                ..text("")
            },
        ),
        (
            "echo_metadata",
            EchoRequest {
                echo_metadata: 7,
                ..text("")
            },
        ),
        (
            "error.code",
            EchoRequest {
                error: Some(ErrorControl {
                    code: 77,
                    ..Default::default()
                }),
                ..text("")
            },
        ),
        (
            "error.code",
            EchoRequest {
                error: Some(ErrorControl::default()),
                ..text("")
            },
        ),
        (
            "error.retry_delay",
            EchoRequest {
                error: Some(ErrorControl {
                    code: StatusCode::Unavailable as i32,
                    retry_delay: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                ..text("")
            },
        ),
        (
            "stream",
            EchoRequest {
                stream: Some(StreamControl::default()),
                ..text("")
            },
        ),
    ];
    for (field, request) in cases {
        let status = client.echo(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
        let violations = status
            .get_details_bad_request()
            .expect("BadRequest detail")
            .field_violations;
        assert_eq!(violations[0].field, field);
    }

    let stream_cases = [
        (
            "stream.count",
            StreamControl {
                count: Some(1_000_000),
                interval: None,
            },
        ),
        (
            "stream.interval",
            StreamControl {
                count: Some(2),
                interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: -5,
                }),
            },
        ),
    ];
    for (field, stream) in stream_cases {
        let request = EchoRequest {
            stream: Some(stream),
            ..text("")
        };
        let status = client.server_stream(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, field);
    }
    server.stop().await;
}

#[tokio::test]
async fn unary_past_its_deadline_gets_deadline_exceeded() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut request = Request::new(EchoRequest {
        delay: Some(ms(10_000)),
        ..text("slow")
    });
    request.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let status = client.echo(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop().await;
}

#[tokio::test]
async fn server_stream_sends_count_responses_then_the_requested_error() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let request = EchoRequest {
        stream: Some(StreamControl {
            count: Some(5),
            interval: Some(ms(20)),
        }),
        response_size: Some(64),
        error: Some(ErrorControl {
            code: StatusCode::Aborted as i32,
            message: "after five".into(),
            ..Default::default()
        }),
        ..text("tick")
    };
    let mut stream = client.server_stream(request).await.unwrap().into_inner();
    for expected in 0..5 {
        let response = stream.message().await.unwrap().expect("a response");
        assert_eq!(response.sequence, expected);
        assert_eq!(response.message, "tick");
        assert_eq!(response.payload.len(), 64);
    }
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "after five");

    let empty = EchoRequest {
        stream: Some(StreamControl {
            count: Some(0),
            interval: None,
        }),
        ..text("")
    };
    let mut stream = client.server_stream(empty).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_none());
    server.stop().await;
}

#[tokio::test]
async fn server_stream_past_its_deadline_ends_with_deadline_exceeded() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut request = Request::new(EchoRequest {
        message: "tick".into(),
        ..echo_tests::ticking(1000, 50)
    });
    request.set_timeout(Duration::from_millis(300));
    let mut stream = client.server_stream(request).await.unwrap().into_inner();
    let (received, ended) = echo_tests::read_to_end(&mut stream).await;
    let status = ended.expect_err("stream ended OK past its deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!((1..100).contains(&received), "received {received}");
    eventually("the stream to close on the server", || async {
        server.stats.open_streams() == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn cancelling_a_server_stream_stops_the_server_producing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let request = EchoRequest {
        message: "tick".into(),
        ..echo_tests::ticking(10_000, 10)
    };
    let mut stream = client.server_stream(request).await.unwrap().into_inner();
    for _ in 0..3 {
        stream.message().await.unwrap().unwrap();
    }
    assert_eq!(server.stats.open_streams(), 1);
    drop(stream);

    eventually("the server to drop the cancelled stream", || async {
        server.stats.open_streams() == 0
    })
    .await;
    let sent = server.stats.stream_messages_sent();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.stats.stream_messages_sent(),
        sent,
        "the server kept producing"
    );
    assert!(
        sent < 100,
        "the server produced {sent} messages for a stream read 3 deep"
    );
    server.stop().await;
}

#[tokio::test]
async fn client_stream_summarises_every_request() {
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.controls.max_summary_messages = 2;
    }))
    .await;
    let client = server.client().await;
    let requests = vec![
        EchoRequest {
            payload: vec![1, 2].into(),
            ..text("a")
        },
        text("bb"),
        EchoRequest {
            payload: vec![3].into(),
            ..text("ccc")
        },
    ];
    let mut digest = Sha256::new();
    for request in &requests {
        for part in [request.message.as_bytes(), &request.payload[..]] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
    }
    let summary = client
        .client_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.count, 3);
    assert_eq!(summary.total_bytes, 1 + 2 + 2 + 3 + 1);
    assert_eq!(summary.messages, ["a", "bb"]);
    assert!(summary.messages_truncated);
    assert_eq!(summary.sha256, hex::encode(digest.finalize()));
    assert_eq!(summary.instance, INSTANCE);

    let failing = vec![
        text("fine"),
        EchoRequest {
            error: Some(ErrorControl {
                code: StatusCode::DataLoss as i32,
                ..Default::default()
            }),
            ..text("")
        },
    ];
    let status = client
        .client_stream(tokio_stream::iter(failing))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DataLoss);
    server.stop().await;
}

#[tokio::test]
async fn bidi_answers_each_request_before_the_client_finishes() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(text("first")).await.unwrap();
    let mut responses = client
        .bidi_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for (sequence, word) in ["first", "second", "third"].into_iter().enumerate() {
        if sequence > 0 {
            tx.send(text(word)).await.unwrap();
        }
        // The request stream is still open: this echo proves full duplex.
        let response = responses.message().await.unwrap().unwrap();
        assert_eq!(response.message, word);
        assert_eq!(response.sequence, sequence as u64);
    }
    tx.send(EchoRequest {
        response_size: Some(10),
        ..text("sized")
    })
    .await
    .unwrap();
    assert_eq!(
        responses.message().await.unwrap().unwrap().payload.len(),
        10
    );
    drop(tx);
    assert!(responses.message().await.unwrap().is_none());

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut responses = client
        .bidi_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(EchoRequest {
        echo_metadata: MetadataEcho::Headers as i32,
        ..text("")
    })
    .await
    .unwrap();
    let status = responses.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("echo_metadata"));
    server.stop().await;
}

#[tokio::test]
async fn metadata_is_echoed_as_headers_and_trailers() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let with_metadata = |request: EchoRequest| {
        let mut request = Request::new(request);
        request
            .metadata_mut()
            .insert("x-trace", "abc".parse().unwrap());
        request.metadata_mut().insert_bin(
            "x-blob-bin",
            tonic::metadata::MetadataValue::from_bytes(&[0, 255]),
        );
        request
    };

    let request = EchoRequest {
        echo_metadata: MetadataEcho::Headers as i32,
        ..text("")
    };
    let response = client.echo(with_metadata(request)).await.unwrap();
    assert_eq!(response.metadata().get("x-trace").unwrap(), "abc");
    assert_eq!(
        response
            .metadata()
            .get_bin("x-blob-bin")
            .unwrap()
            .to_bytes()
            .unwrap(),
        &[0, 255][..]
    );

    // Trailers on a stream arrive after the last message.
    let request = EchoRequest {
        echo_metadata: MetadataEcho::Trailers as i32,
        stream: Some(StreamControl {
            count: Some(2),
            interval: None,
        }),
        ..text("")
    };
    let response = client.server_stream(with_metadata(request)).await.unwrap();
    assert!(
        response.metadata().get("x-trace").is_none(),
        "asked for trailers only"
    );
    let mut stream = response.into_inner();
    while stream.message().await.unwrap().is_some() {}
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers.get("x-trace").unwrap(), "abc");
    assert!(
        trailers.get("user-agent").is_none(),
        "protocol headers are not echoed"
    );

    // A failing call still echoes, in its status metadata.
    let request = EchoRequest {
        echo_metadata: MetadataEcho::Both as i32,
        error: Some(ErrorControl {
            code: StatusCode::Unavailable as i32,
            ..Default::default()
        }),
        ..text("")
    };
    let status = client.echo(with_metadata(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.metadata().get("x-trace").unwrap(), "abc");
    server.stop().await;
}

#[tokio::test]
async fn client_default_metadata_and_timeout_apply_to_every_call() {
    let server = TestServer::start().await;
    let client = echo_client::EchoClient::builder(server.addr.to_string())
        .metadata("x-team", "payments")
        .unwrap()
        .timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let request = EchoRequest {
        echo_metadata: MetadataEcho::Headers as i32,
        ..text("")
    };
    let response = client.echo(request).await.unwrap();
    assert_eq!(response.metadata().get("x-team").unwrap(), "payments");

    let status = client
        .echo(EchoRequest {
            delay: Some(ms(5_000)),
            ..text("")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);

    let error = echo_client::EchoClient::builder(server.addr.to_string())
        .metadata("bad key", "x")
        .unwrap_err();
    assert!(error.to_string().contains("bad key"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn health_reports_serving_and_watch_turns_not_serving_on_shutdown() {
    let mut server = TestServer::with_config(echo_tests::config(|c| {
        c.listen.shutdown_grace = Duration::from_millis(300).into();
    }))
    .await;
    let client = server.client().await;
    use echo_client::health_proto::health_check_response::ServingStatus;
    assert_eq!(
        client.health_check("").await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        client.health_check("echo.v1.EchoService").await.unwrap(),
        ServingStatus::Serving
    );
    let status = client.health_check("no.such.Service").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Every served service, and the server as a whole, turns NOT_SERVING.
    let mut watches = Vec::new();
    for service in [
        "",
        "echo.v1.EchoService",
        "grpc.examples.echo.Echo",
        "grpc.testing.TestService",
    ] {
        let mut watch = client.health_watch(service).await.unwrap();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::Serving, "{service:?}");
        watches.push((service, watch));
    }
    server.begin_shutdown();
    for (service, mut watch) in watches {
        let update = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("a health update")
            .unwrap()
            .unwrap();
        assert_eq!(update.status(), ServingStatus::NotServing, "{service:?}");
    }
    server.join().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_unary_calls_and_ends_streams_after_the_grace_period() {
    let mut server = TestServer::with_config(echo_tests::config(|c| {
        c.listen.shutdown_grace = Duration::from_millis(500).into();
    }))
    .await;
    let client = server.client().await;

    let request = EchoRequest {
        message: "long".into(),
        ..echo_tests::ticking(10_000, 20)
    };
    let mut stream = client.server_stream(request).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    let unary = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .echo(EchoRequest {
                    delay: Some(ms(300)),
                    ..text("in flight")
                })
                .await
        }
    });
    eventually("the stream and the unary call to be in flight", || async {
        server.stats.in_flight_calls() == 2
    })
    .await;

    let addr = server.addr;
    let shutdown_started = Instant::now();
    server.begin_shutdown();
    let response = unary
        .await
        .unwrap()
        .expect("the in-flight unary call finishes");
    assert_eq!(response.get_ref().message, "in flight");

    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended OK during shutdown"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        shutdown_started.elapsed() >= Duration::from_millis(500),
        "ended before the grace period"
    );

    tokio::time::timeout(Duration::from_secs(5), server.join())
        .await
        .expect("run returns after the grace period")
        .unwrap();
    let refused = echo_client::EchoClient::builder(addr.to_string())
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn many_concurrent_calls_share_one_connection() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let calls = (0..200).map(|i| {
        let client = client.clone();
        async move {
            client
                .echo(text(&format!("call {i}")))
                .await
                .map(|r| r.into_inner().message)
        }
    });
    let results: Vec<_> = futures_util::future::join_all(calls).await;
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result.unwrap(), format!("call {i}"));
    }
    let mut stream = client
        .server_stream(EchoRequest {
            stream: Some(StreamControl {
                count: Some(50),
                interval: None,
            }),
            ..text("")
        })
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while let Some(item) = stream.next().await {
        item.unwrap();
        count += 1;
    }
    assert_eq!(count, 50);
    assert_eq!(
        server.stats.open_connections(),
        1,
        "the calls did not share one connection"
    );
    server.stop().await;
}

/// `delay` comes before the first message, `interval` between the next ones.
#[tokio::test]
async fn server_stream_delay_and_interval_space_the_messages() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let request = EchoRequest {
        delay: Some(ms(200)),
        ..echo_tests::ticking(3, 100)
    };
    let started = Instant::now();
    let mut stream = client.server_stream(request).await.unwrap().into_inner();
    let mut arrivals = Vec::new();
    while let Some(_message) = stream.message().await.unwrap() {
        arrivals.push(started.elapsed());
    }
    assert_eq!(arrivals.len(), 3);
    assert!(arrivals[0] >= Duration::from_millis(200), "{arrivals:?}");
    for pair in arrivals.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(95),
            "{arrivals:?}"
        );
    }
    server.stop().await;
}

/// On a bidi stream, `error` ends the stream with that status after the
/// answers to the messages before it.
#[tokio::test]
async fn bidi_ends_with_the_requested_error() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let requests = vec![
        text("first"),
        EchoRequest {
            error: Some(ErrorControl {
                code: StatusCode::FailedPrecondition as i32,
                message: "second fails".into(),
                ..Default::default()
            }),
            ..text("second")
        },
        text("never answered"),
    ];
    let mut responses = client
        .bidi_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(responses.message().await.unwrap().unwrap().message, "first");
    let status = responses.message().await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "second fails");
    server.stop().await;
}

/// Each bidi message waits its own `delay` (the call's one timer, set again
/// for every message), and a delay that outlasts the caller's deadline ends
/// the stream with DEADLINE_EXCEEDED.
#[tokio::test]
async fn bidi_delays_each_answer_until_the_deadline_ends_the_stream() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let delayed = |message: &str, millis| EchoRequest {
        delay: Some(ms(millis)),
        ..text(message)
    };
    let (requests, inbound) = tokio::sync::mpsc::channel(4);
    let mut request = Request::new(ReceiverStream::new(inbound));
    request.set_timeout(Duration::from_millis(1_500));
    let started = Instant::now();
    let mut responses = client.bidi_stream(request).await.unwrap().into_inner();
    for (message, millis, after) in [("first", 150, 150), ("second", 200, 350)] {
        requests.send(delayed(message, millis)).await.unwrap();
        let answer = responses.message().await.unwrap().unwrap();
        assert_eq!(answer.message, message);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(after),
            "{message} after {elapsed:?}"
        );
    }
    requests
        .send(delayed("past the deadline", 5_000))
        .await
        .unwrap();
    let status = responses.message().await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let elapsed = started.elapsed();
    // Well before the 5 s delay would have ended.
    assert!(elapsed < Duration::from_secs(4), "ended after {elapsed:?}");
    eventually("the stream to close on the server", || async {
        server.stats.open_streams() == 0
    })
    .await;
    server.stop().await;
}

/// A ClientStream answers with a summary, so `response_size` is refused.
#[tokio::test]
async fn response_size_on_a_client_stream_is_invalid() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let request = EchoRequest {
        response_size: Some(10),
        ..text("")
    };
    let status = client
        .client_stream(tokio_stream::iter([request]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "response_size");
    server.stop().await;
}
