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
        // before any handler sees it; the client sends it again on a new
        // connection by itself (no retry policy is set).
        let client = echo_client::EchoClient::builder(server.uri())
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

/// On the wire: GOAWAY at the connection's age, while a call is still open,
/// and the cut only at age + grace.
#[tokio::test]
async fn goaway_at_the_age_comes_before_the_cut_at_age_and_grace() {
    use echo_tests::h2raw::{self, END_HEADERS, GOAWAY, HEADERS};
    use tokio::io::AsyncWriteExt;

    const AGE: Duration = Duration::from_millis(300);
    const GRACE: Duration = Duration::from_millis(400);
    let server = TestServer::with_config(echo_tests::config(|c| {
        c.http2.max_connection_age = Some(AGE.into());
        c.http2.max_connection_age_grace = Some(GRACE.into());
    }))
    .await;
    let started = Instant::now();
    let mut socket = h2raw::connect(server.addr).await;
    // A ClientStream call left open holds the connection past its GOAWAY.
    let open = h2raw::grpc_request("/echo.v1.EchoService/ClientStream", &[]);
    socket
        .write_all(&h2raw::frame(HEADERS, END_HEADERS, 1, &open))
        .await
        .unwrap();
    let mut goaway_at = None;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = h2raw::read_frame(&mut socket).await {
            if let Some(ack) = h2raw::acknowledgement(&frame) {
                let _ = socket.write_all(&ack).await;
            }
            if frame.kind == GOAWAY && goaway_at.is_none() {
                goaway_at = Some(started.elapsed());
            }
        }
        started.elapsed()
    })
    .await
    .expect("the connection outlived age + grace");
    let goaway_at = goaway_at.expect("the connection was cut without GOAWAY");
    println!("GOAWAY after {goaway_at:?}, cut after {closed:?}");
    assert!(
        goaway_at >= AGE - Duration::from_millis(10),
        "{goaway_at:?}"
    );
    assert!(
        closed >= goaway_at + GRACE - Duration::from_millis(10),
        "{closed:?}"
    );
    server.stop().await;
}
