//! Chaos schedules on real server processes: calls that start inside an
//! error or slow window fail or slow as configured, and calls outside every
//! window are untouched; a balancing client with retries rides out health
//! flips, GOAWAY bursts and closed connections without losing a call. The
//! windows are read from the servers' own log lines, timed as they arrive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use echo_client::proto::EchoRequest;
use echo_client::{EchoClient, RetryPolicy};
use echo_tests::process::ServerProcess;
use tokio::sync::Mutex;

/// How far from a window's edges a call must start to count as inside or
/// outside it: the time a call takes to reach the server, with room for a
/// loaded machine.
const EDGE: Duration = Duration::from_millis(150);

/// One call: when it started, how long it took, and who answered or why it failed.
#[derive(Debug)]
struct Outcome {
    start: Instant,
    took: Duration,
    result: Result<String, tonic::Status>,
}

fn server(listen: &str, instance: &str, schedule: &[&str]) -> ServerProcess {
    let mut args = vec!["--metrics-addr", "127.0.0.1:0", "--chaos-seed", "1"];
    for line in schedule {
        args.extend(["--chaos", line]);
    }
    ServerProcess::spawn(ServerProcess::command(listen, instance, &args, "info")).with_metrics()
}

/// GOAWAY frames `addr` sends for `run`, counted on the wire by a raw HTTP/2
/// client that connects again each time the server closes its connection.
async fn goaways_on_the_wire(addr: std::net::SocketAddr, run: Duration) -> usize {
    use echo_tests::h2raw::{self, GOAWAY};
    use tokio::io::AsyncWriteExt;
    let end = tokio::time::Instant::now() + run;
    let mut goaways = 0;
    while tokio::time::Instant::now() < end {
        let mut socket = h2raw::connect(addr).await;
        let read = async {
            while let Some(frame) = h2raw::read_frame(&mut socket).await {
                if let Some(ack) = h2raw::acknowledgement(&frame) {
                    let _ = socket.write_all(&ack).await;
                }
                if frame.kind == GOAWAY {
                    goaways += 1;
                }
            }
        };
        let _ = tokio::time::timeout_at(end, read).await;
    }
    goaways
}

/// `callers` tasks calling Echo through `client` for `run`.
async fn call_for(client: &EchoClient, callers: usize, run: Duration) -> Vec<Outcome> {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let end = Instant::now() + run;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let client = client.clone();
            let outcomes = Arc::clone(&outcomes);
            tokio::spawn(async move {
                while Instant::now() < end {
                    let start = Instant::now();
                    let result = client
                        .echo(EchoRequest::default())
                        .await
                        .map(|response| response.into_inner().instance);
                    let outcome = Outcome {
                        start,
                        took: start.elapsed(),
                        result,
                    };
                    outcomes.lock().await.push(outcome);
                    // Spread the starts rather than hammer the loopback.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    Arc::into_inner(outcomes).unwrap().into_inner()
}

/// The windows of `event` the server logged so far, as (opened, closed); one
/// still open closes in an hour.
fn windows(server: &ServerProcess, event: &str) -> Vec<(Instant, Instant)> {
    let mut windows = Vec::new();
    let mut opened = None;
    for (at, line) in server.log_so_far() {
        if line["fields"]["event"] != event {
            continue;
        }
        match line["fields"]["message"].as_str() {
            Some("chaos window opened") => opened = Some(at),
            Some("chaos window closed") => windows.extend(opened.take().map(|open| (open, at))),
            _ => {}
        }
    }
    windows.extend(opened.map(|open| (open, open + Duration::from_secs(3600))));
    windows
}

/// Where a call started: well inside a window, well outside all, or near an edge.
#[derive(Debug, PartialEq)]
enum Place {
    Inside,
    Outside,
    Edge,
}

fn place(start: Instant, windows: &[(Instant, Instant)], last_known: Instant) -> Place {
    if start + EDGE > last_known {
        // After the last log line read: a window may have opened unseen.
        return Place::Edge;
    }
    for &(open, close) in windows {
        if start > open + EDGE && start + EDGE < close {
            return Place::Inside;
        }
        if start + EDGE >= open && start <= close + EDGE {
            return Place::Edge;
        }
    }
    Place::Outside
}

async fn client(server: &ServerProcess) -> EchoClient {
    EchoClient::builder(format!("http://{}", server.addr))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn calls_inside_error_and_slow_windows_fail_and_slow_and_no_others() {
    // Windows of 1 s every 2 s: [0.5, 1.5], [2.5, 3.5], [4.5, 5.5] after start.
    let erring = server(
        "127.0.0.1:0",
        "erring",
        &["errors code=UNAVAILABLE for=1s every=2s after=500ms"],
    );
    let slow = server(
        "127.0.0.1:0",
        "slow",
        &["slow delay=300ms for=1s every=2s after=500ms"],
    );
    let (erring_client, slow_client) = (client(&erring).await, client(&slow).await);
    let (errors, delays) = tokio::join!(
        call_for(&erring_client, 2, Duration::from_millis(5200)),
        call_for(&slow_client, 8, Duration::from_millis(5200)),
    );
    let last_known = Instant::now();

    let error_windows = windows(&erring, "errors");
    assert!(error_windows.len() >= 2, "{error_windows:?}");
    let mut counts = BTreeMap::new();
    for outcome in &errors {
        let place = place(outcome.start, &error_windows, last_known);
        match (&place, &outcome.result) {
            (Place::Inside, Err(status)) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(status.message().contains("chaos"), "{status:?}");
            }
            (Place::Inside, Ok(_)) => panic!("a call inside an error window succeeded"),
            (Place::Outside, Err(status)) => {
                panic!("a call outside every error window failed: {status:?}")
            }
            _ => {}
        }
        *counts.entry(format!("{place:?}")).or_insert(0) += 1;
    }
    println!("error windows {error_windows:?}: calls by place {counts:?}");
    assert!(
        counts["Inside"] >= 50 && counts["Outside"] >= 50,
        "{counts:?}"
    );

    let slow_windows = windows(&slow, "slow");
    assert!(slow_windows.len() >= 2, "{slow_windows:?}");
    let mut counts = BTreeMap::new();
    for outcome in &delays {
        let place = place(outcome.start, &slow_windows, last_known);
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        match place {
            Place::Inside => assert!(outcome.took >= Duration::from_millis(300), "{outcome:?}"),
            Place::Outside => assert!(outcome.took < Duration::from_millis(300), "{outcome:?}"),
            Place::Edge => {}
        }
        *counts.entry(format!("{place:?}")).or_insert(0) += 1;
    }
    println!("slow windows {slow_windows:?}: calls by place {counts:?}");
    assert!(
        counts["Inside"] >= 10 && counts["Outside"] >= 50,
        "{counts:?}"
    );

    for (server, event, windows) in [
        (&erring, "errors", &error_windows),
        (&slow, "slow", &slow_windows),
    ] {
        let counted = server
            .metric("grpc_server_chaos_events_total", &[("event", event)])
            .unwrap();
        assert!(counted >= windows.len() as f64, "{event}: {counted}");
    }
}

#[tokio::test]
async fn a_balanced_client_rides_out_health_flips_goaway_bursts_and_closed_connections() {
    let servers = [
        server(
            "127.0.0.1:0",
            "unhealthy",
            // Out of rotation for 2 s of every 4 s.
            &["unhealthy for=2s every=4s after=500ms"],
        ),
        server("127.0.0.2:0", "goaway", &["goaway every=500ms"]),
        server(
            "127.0.0.3:0",
            "closing",
            &["close fraction=100% every=700ms"],
        ),
    ];
    let client = EchoClient::builder("balanced")
        .balanced(servers.iter().map(|server| server.addr.to_string()))
        .timeout(Duration::from_secs(5))
        .retry(RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            budget_tokens: 1000,
        })
        .connect()
        .await
        .unwrap();
    // Three connections watched on the wire besides the client's: a burst
    // reaches every open connection.
    let watchers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(goaways_on_the_wire(
                servers[1].addr,
                Duration::from_millis(6500),
            ))
        })
        .collect();
    let outcomes = call_for(&client, 4, Duration::from_millis(6500)).await;
    let last_known = Instant::now();
    let mut goaways_seen = Vec::new();
    for watcher in watchers {
        goaways_seen.push(watcher.await.unwrap());
    }

    let lost: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(lost.is_empty(), "{} calls lost: {lost:?}", lost.len());

    // The watcher checks health every 250 ms, so an instance leaves the
    // rotation within a round or two of its window opening; calls further
    // inside never reach it. It comes back after a round or two too.
    let unhealthy = windows(&servers[0], "unhealthy");
    assert!(unhealthy.len() >= 2, "{unhealthy:?}");
    // Rounds of health checks, with room for a loaded machine.
    let settle = Duration::from_millis(1000);
    let settled: Vec<_> = unhealthy
        .iter()
        .map(|&(open, close)| (open + settle, close))
        .collect();
    println!("unhealthy windows {unhealthy:?}");
    let mut by_place: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for outcome in &outcomes {
        let place = place(outcome.start, &settled, last_known);
        let instance = outcome.result.as_ref().unwrap().clone();
        if place == Place::Inside {
            assert_ne!(
                instance, "unhealthy",
                "called while NOT_SERVING: {outcome:?}"
            );
        }
        *by_place
            .entry(format!("{place:?}"))
            .or_default()
            .entry(instance)
            .or_default() += 1;
    }
    println!("answers by place {by_place:?}");
    assert!(
        by_place["Inside"].values().sum::<usize>() >= 50,
        "{by_place:?}"
    );
    assert!(by_place["Outside"]["unhealthy"] >= 20, "{by_place:?}");

    // The others kept answering through their bursts and closes.
    let late = outcomes
        .iter()
        .filter(|o| o.start > last_known - Duration::from_secs(2));
    let mut late_answers = BTreeMap::new();
    for outcome in late {
        *late_answers
            .entry(outcome.result.as_ref().unwrap().clone())
            .or_insert(0) += 1;
    }
    println!("answers in the last 2 s: {late_answers:?}");
    assert!(late_answers.get("goaway").copied().unwrap_or(0) >= 20);
    assert!(late_answers.get("closing").copied().unwrap_or(0) >= 20);
    // A burst every 500 ms for 6.5 s: twelve GOAWAY frames on the watching
    // connection, or one or two fewer for the time it takes to reconnect.
    let goaways = servers[1]
        .metric("grpc_server_chaos_events_total", &[("event", "goaway")])
        .unwrap();
    println!(
        "GOAWAY frames on three watched connections: {goaways_seen:?}; {goaways} bursts counted"
    );
    for seen in &goaways_seen {
        assert!(*seen >= 10, "GOAWAY frames on the wire: {goaways_seen:?}");
    }
    let closed = servers[2]
        .metric("grpc_server_chaos_connections_closed_total", &[])
        .unwrap();
    assert!(closed >= 5.0, "{closed} connections closed");
    println!("{goaways} GOAWAY bursts, {closed} connections closed; all calls answered");
}
