//! No task outlives its call or connection: after cancelled streams, dropped
//! clients and closed connections, the runtime's live tasks return to where
//! they were. On both runtimes: the multi-threaded one spawns a task per
//! HTTP/2 stream, the single-threaded one (the default on one CPU) runs each
//! stream inside its connection's task. Each test runs its own runtime, so
//! no other test's tasks are counted.

use std::time::Duration;

use echo_client::proto::EchoRequest;
use echo_tests::TestServer;
use tokio_stream::wrappers::ReceiverStream;

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The live tasks once they stop changing: the same count over 100 ms.
async fn settled_tasks() -> usize {
    let mut last = alive_tasks();
    let mut steady_since = tokio::time::Instant::now();
    let deadline = steady_since + Duration::from_secs(10);
    while steady_since.elapsed() < Duration::from_millis(100) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tasks never settled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = alive_tasks();
        if now != last {
            (last, steady_since) = (now, tokio::time::Instant::now());
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_return_to_baseline_on_the_multi_threaded_runtime() {
    tasks_return_to_baseline_after_cancelled_calls_and_closed_connections().await;
}

#[tokio::test(flavor = "current_thread")]
async fn tasks_return_to_baseline_on_the_single_threaded_runtime() {
    tasks_return_to_baseline_after_cancelled_calls_and_closed_connections().await;
}

async fn tasks_return_to_baseline_after_cancelled_calls_and_closed_connections() {
    let server = TestServer::start().await;
    let warm = server.client().await;
    warm.echo(EchoRequest::default()).await.unwrap();
    drop(warm);
    let baseline = settled_tasks().await;

    for _ in 0..20 {
        let client = server.client().await;
        // A server stream cancelled after one message.
        let mut stream = client
            .server_stream(echo_tests::ticking(10_000, 10))
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().unwrap();
        // The metric sees the connection's tasks (so a leak would show).
        assert!(alive_tasks() > baseline);
        drop(stream);
        // A bidi stream abandoned half-way.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(EchoRequest::default()).await.unwrap();
        let mut bidi = client
            .bidi_stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        bidi.message().await.unwrap().unwrap();
        drop((bidi, tx));
        // A unary call given up on before the server answers.
        let slow = EchoRequest {
            delay: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        };
        let _ = tokio::time::timeout(Duration::from_millis(20), client.echo(slow)).await;
        drop(client);
    }

    let mut now = alive_tasks();
    for _ in 0..100 {
        if now <= baseline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = alive_tasks();
    }
    println!("alive tasks: {baseline} before, {now} after 20 rounds of abandoned calls");
    assert!(now <= baseline, "{} tasks leaked", now - baseline);
    assert_eq!(server.stats.open_streams(), 0);
    server.stop().await;
}
