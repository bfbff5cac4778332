//! No task outlives its call or connection: after cancelled streams, dropped
//! clients and closed connections, the runtime's live tasks return to where
//! they were. Its own test binary, so no other test's tasks are counted.

use std::time::Duration;

use echo_client::proto::EchoRequest;
use echo_tests::TestServer;
use tokio_stream::wrappers::ReceiverStream;

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_return_to_baseline_after_cancelled_calls_and_closed_connections() {
    let server = TestServer::start().await;
    let warm = server.client().await;
    warm.echo(EchoRequest::default()).await.unwrap();
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = alive_tasks();

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
