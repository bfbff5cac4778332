//! Faults with real server processes: shutdown under load, restarts, crashes
//! mid-stream, and a frozen peer.

use std::time::{Duration, Instant};

use echo_client::proto::EchoRequest;
use echo_client::{EchoClient, RetryPolicy};
use echo_tests::process::ServerProcess;
use echo_tests::{eventually, ms, ticking};
use tonic::Code;

async fn connect(server: &ServerProcess) -> EchoClient {
    EchoClient::builder(server.addr.to_string())
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn sigterm_under_load_answers_every_call_in_flight() {
    let mut server =
        ServerProcess::start(&["--shutdown-grace", "5s", "--metrics-addr", "127.0.0.1:0"])
            .with_metrics();
    // Four connections, each under the per-connection stream limit.
    let mut calls = Vec::new();
    for _ in 0..4 {
        let client = connect(&server).await;
        for i in 0..75 {
            let client = client.clone();
            let request = EchoRequest {
                message: format!("call {i}"),
                delay: Some(ms(2_000)),
                ..Default::default()
            };
            calls.push(tokio::spawn(async move { client.echo(request).await }));
        }
    }
    let in_flight = calls.len() as f64;
    eventually("every call to be in flight on the server", || async {
        server.metric("grpc_server_in_flight_calls", &[]) == Some(in_flight)
    })
    .await;
    server.signal("TERM");

    let total = calls.len();
    let mut answered = 0;
    for call in calls {
        let response = call
            .await
            .unwrap()
            .expect("a call in flight at SIGTERM failed");
        assert!(response.get_ref().message.starts_with("call "));
        answered += 1;
    }
    println!("{answered} of {total} calls in flight at SIGTERM answered");
    assert_eq!(answered, total);
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn the_client_retries_across_a_server_restart() {
    let first = ServerProcess::start(&[]);
    let addr = first.addr;
    let retrying = EchoClient::builder(addr.to_string())
        .timeout(Duration::from_secs(10))
        .retry(RetryPolicy {
            max_attempts: 30,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            budget_tokens: 100,
        })
        .connect()
        .await
        .unwrap();
    let plain = EchoClient::builder(addr.to_string())
        .connect()
        .await
        .unwrap();
    retrying.echo(EchoRequest::default()).await.unwrap();
    plain.echo(EchoRequest::default()).await.unwrap();

    first.signal("KILL");
    drop(first);
    let status = plain.echo(EchoRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(700));
        ServerProcess::start_at(&addr.to_string(), &[])
    });
    let started = Instant::now();
    let response = retrying
        .echo(EchoRequest {
            message: "after restart".into(),
            ..Default::default()
        })
        .await
        .expect("the retrying client gets through once the server is back");
    assert_eq!(response.get_ref().message, "after restart");
    println!(
        "answered {:?} after the server went down",
        started.elapsed()
    );
    let _second = restart.await.unwrap();
}

#[tokio::test]
async fn a_server_dying_mid_stream_gives_unavailable_not_a_hang() {
    let server = ServerProcess::start(&[]);
    let client = connect(&server).await;
    let mut stream = client
        .server_stream(ticking(1000, 20))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        stream.message().await.unwrap().unwrap();
    }
    server.signal("KILL");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("the stream hung after the server died");
    let status = ended.expect_err("the stream ended OK although the server died");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn keepalive_notices_a_frozen_server() {
    let server = ServerProcess::start(&[]);
    let client = EchoClient::builder(server.addr.to_string())
        .keepalive(Duration::from_millis(200), Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    // Nothing arrives for 10 s: only keepalive can tell a silent server from a dead one.
    let mut stream = client
        .server_stream(ticking(2, 10_000))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();

    server.signal("STOP");
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    let noticed = started.elapsed();
    server.signal("CONT");
    let status = ended
        .expect("the client did not notice within 5 s")
        .unwrap_err();
    println!("frozen server noticed after {noticed:?}: {status:?}");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(noticed < Duration::from_secs(2), "{noticed:?}");
}
