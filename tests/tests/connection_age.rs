//! Connections are rotated by age (GOAWAY), with and without a grace period;
//! clients reconnect, and nothing panics (tonic 0.14.5/0.14.6 panicked without
//! a grace period, grpc-rust #2522). Its own test binary, so the panic hook
//! below sees this test's panics only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use echo_client::proto::EchoRequest;
use echo_tests::TestServer;

#[tokio::test]
async fn connections_are_rotated_by_age_and_clients_reconnect() {
    let panics = Arc::new(AtomicUsize::new(0));
    let previous = std::panic::take_hook();
    std::panic::set_hook({
        let panics = Arc::clone(&panics);
        Box::new(move |info| {
            panics.fetch_add(1, Ordering::SeqCst);
            previous(info);
        })
    });

    for grace in [None, Some(Duration::from_millis(100))] {
        let server = TestServer::with_config(echo_tests::config(|c| {
            c.http2.max_connection_age = Some(Duration::from_millis(200).into());
            c.http2.max_connection_age_grace = grace.map(Into::into);
        }))
        .await;
        // A call sent just as the server's GOAWAY is on its way is refused
        // before any handler sees it; the retry policy sends it again.
        let client = echo_client::EchoClient::builder(server.uri())
            .retry(echo_client::RetryPolicy::default())
            .connect()
            .await
            .unwrap();
        let (mut ok, mut failed) = (0, 0);
        let mut peers = std::collections::HashSet::new();
        for _ in 0..40 {
            match client.echo(EchoRequest::default()).await {
                Ok(response) => {
                    ok += 1;
                    peers.insert(response.into_inner().peer);
                }
                Err(_) => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        println!(
            "grace {grace:?}: {ok} ok, {failed} failed, {} connections",
            peers.len()
        );
        // 40 calls over about a second: several connections, each under 200 ms old.
        assert!(
            peers.len() >= 3,
            "grace {grace:?}: only {} connections used",
            peers.len()
        );
        assert_eq!(
            failed, 0,
            "grace {grace:?}: calls failed across rotations ({ok} ok)"
        );

        // A stream that outlives age + grace is cut; without a grace it may finish.
        let started = Instant::now();
        let mut stream = client
            .server_stream(echo_tests::ticking(20, 50))
            .await
            .unwrap()
            .into_inner();
        let (received, ended) = echo_tests::read_to_end(&mut stream).await;
        match grace {
            None => assert!(
                ended.is_ok() && received == 20,
                "{ended:?} after {received}"
            ),
            Some(grace) => {
                assert!(
                    ended.is_err(),
                    "a stream outlived age + grace ({received} messages)"
                );
                assert!(
                    started.elapsed()
                        < Duration::from_millis(200) + grace + Duration::from_millis(500)
                );
            }
        }
        client
            .echo(EchoRequest::default())
            .await
            .expect("the client reconnects");
        server.stop().await;
    }
    assert_eq!(panics.load(Ordering::SeqCst), 0, "something panicked");
}
