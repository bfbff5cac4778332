//! Client-side balancing over three server processes on 127.0.0.1, .2 and .3:
//! calls spread over all three, killing one mid-run loses no call (the
//! idempotent ones in flight on it are retried elsewhere), and it is taken back
//! when it recovers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use echo_client::proto::{EchoRequest, HealthStatus};
use echo_client::{EchoClient, RetryPolicy};
use echo_tests::eventually;
use echo_tests::process::{COMMAND_TIMEOUT, ServerProcess};

/// The servers' addresses as `--addr` takes them.
fn address_list(servers: &[ServerProcess]) -> String {
    servers
        .iter()
        .map(|server| server.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

async fn spread(client: &EchoClient, calls: usize) -> BTreeMap<String, usize> {
    let mut answered_by = BTreeMap::new();
    for _ in 0..calls {
        let response = client.echo(EchoRequest::default()).await.unwrap();
        *answered_by
            .entry(response.into_inner().instance)
            .or_default() += 1;
    }
    answered_by
}

#[tokio::test]
async fn calls_spread_over_three_instances_and_survive_losing_one() {
    let servers: Vec<ServerProcess> = (1..=3)
        .map(|i| ServerProcess::start_named(&format!("127.0.0.{i}:0"), &format!("instance-{i}")))
        .collect();
    let targets: Vec<String> = servers
        .iter()
        .map(|server| server.addr.to_string())
        .collect();
    let client = EchoClient::builder("balanced")
        .balanced(targets)
        .timeout(Duration::from_secs(5))
        // Until the watcher takes the dead instance out (within a health-check
        // round), calls sent to it fail at once and are retried.
        .retry(RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            budget_tokens: 1000,
        })
        .connect()
        .await
        .unwrap();

    let before = spread(&client, 300).await;
    println!("300 calls over three instances: {before:?}");
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(before.values().all(|&n| n >= 30), "lopsided: {before:?}");

    // Ten callers go on while instance-2 is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            let stop = Arc::clone(&stop);
            let answered = Arc::clone(&answered);
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    match client.echo(EchoRequest::default()).await {
                        Ok(_) => {
                            ok += 1;
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) => {
                            failed += 1;
                            eprintln!("lost: {status:?}");
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let calls_after = |calls: usize| {
        let answered = Arc::clone(&answered);
        move || {
            let answered = Arc::clone(&answered);
            async move { answered.load(Ordering::Relaxed) >= calls }
        }
    };
    eventually("the callers to be under way", calls_after(200)).await;
    servers[1].signal("KILL");
    let killed_at = answered.load(Ordering::Relaxed);
    // Long enough after the kill for the watcher to notice (a few rounds).
    eventually("1000 calls after the kill", calls_after(killed_at + 1_000)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for caller in callers {
        let (o, f) = caller.await.unwrap();
        ok += o;
        failed += f;
    }
    println!("while one instance died: {ok} calls ok, {failed} failed");
    assert_eq!(failed, 0, "calls were lost when one instance died");

    let after = spread(&client, 100).await;
    println!("100 calls after: {after:?}");
    assert!(!after.contains_key("instance-2"), "{after:?}");
    assert_eq!(after.len(), 2, "{after:?}");

    // Back on its address, it is taken back into the rotation.
    let _revived = ServerProcess::start_named(&servers[1].addr.to_string(), "instance-2");
    let mut back = BTreeMap::new();
    for _ in 0..40 {
        back = spread(&client, 30).await;
        if back.contains_key("instance-2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("after the restart: {back:?}");
    assert!(
        back.contains_key("instance-2"),
        "the recovered instance got no calls: {back:?}"
    );
}

#[test]
fn the_cli_balances_over_a_list_of_addresses() {
    let servers: Vec<ServerProcess> = (1..=2)
        .map(|i| ServerProcess::start_named(&format!("127.0.0.{i}:0"), &format!("cli-{i}")))
        .collect();
    let list = address_list(&servers);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let output = echo_tests::process::echo_client(&["--addr", &list, "--json", "echo", "x"]);
        let response: serde_json::Value =
            serde_json::from_str(&echo_tests::process::stdout(&output)).unwrap();
        seen.insert(response["instance"].as_str().unwrap().to_owned());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "20 calls all went to {seen:?}");
}

#[test]
fn bench_spreads_load_over_three_instances_and_loses_nothing_when_one_dies() {
    let servers: Vec<ServerProcess> = (1..=3)
        .map(|i| {
            let command = ServerProcess::command(
                &format!("127.0.0.{i}:0"),
                &format!("bench-{i}"),
                &["--metrics-addr", "127.0.0.1:0"],
                "info",
            );
            ServerProcess::spawn(command).with_metrics()
        })
        .collect();
    let list = address_list(&servers);
    let mut bench = std::process::Command::new(echo_tests::process::binary("echo-client"));
    bench.args([
        "--addr",
        &list,
        "--retries",
        "5",
        "--timeout",
        "5s",
        "--json",
        "bench",
        "--connections",
        "2",
        "--concurrency",
        "4",
        "--warmup",
        "0s",
        "--duration",
        "3s",
    ]);
    let bench = echo_tests::process::spawn_piped(bench);
    // Killed once it has answered some of the load, mid-run.
    let echo = [("grpc_method", "Echo"), ("grpc_code", "OK")];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while servers[1]
        .metric("grpc_server_handled_total", &echo)
        .unwrap_or(0.0)
        < 100.0
    {
        assert!(std::time::Instant::now() < deadline, "bench-2 got no load");
        std::thread::sleep(Duration::from_millis(10));
    }
    servers[1].signal("KILL");
    let output = echo_tests::process::output_of(bench, "echo-client bench", COMMAND_TIMEOUT);
    let report: serde_json::Value = serde_json::from_str(&echo_tests::process::stdout(&output))
        .unwrap_or_else(|err| {
            panic!("{err}: {}", String::from_utf8_lossy(&output.stderr));
        });
    println!(
        "bench over three instances, bench-2 killed once it had answered 100: {} calls, answered by {}, errors {}",
        report["calls"], report["instances"], report["errors"]
    );
    let instances = report["instances"].as_object().unwrap();
    assert_eq!(instances.len(), 3, "{report}");
    for (instance, count) in instances {
        assert!(
            count.as_u64().unwrap() >= 100,
            "{instance} got too few calls: {report}"
        );
    }
    assert_eq!(
        report["errors"],
        serde_json::json!({}),
        "calls were lost: {report}"
    );
    assert!(output.status.success());
}

/// A DNS name (here `localhost`) is resolved and balanced over like a list.
#[tokio::test]
async fn a_dns_name_is_balanced_over() {
    let server = ServerProcess::start_named("127.0.0.1:0", "by-name");
    let client = EchoClient::builder("balanced")
        .balanced([format!("localhost:{}", server.addr.port())])
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let answered = spread(&client, 20).await;
    assert_eq!(answered.get("by-name"), Some(&20), "{answered:?}");
}

/// A live server that reports NOT_SERVING is taken out of the rotation, and
/// put back when it serves again.
#[tokio::test]
async fn a_server_reporting_not_serving_is_taken_out_and_back() {
    let servers: Vec<ServerProcess> = (1..=2)
        .map(|i| {
            let command = ServerProcess::command(
                &format!("127.0.0.{i}:0"),
                &format!("health-{i}"),
                &["--admin"],
                "info",
            );
            ServerProcess::spawn(command)
        })
        .collect();
    let client = EchoClient::builder("balanced")
        .balanced(servers.iter().map(|server| server.addr.to_string()))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    assert_eq!(spread(&client, 100).await.len(), 2);

    let admin = EchoClient::builder(servers[0].addr.to_string())
        .connect()
        .await
        .unwrap();
    admin
        .set_health("", HealthStatus::NotServing)
        .await
        .unwrap();
    eventually("health-1 to leave the rotation", || async {
        !spread(&client, 20).await.contains_key("health-1")
    })
    .await;
    // Out for good, not by chance: a hundred more calls, none to it.
    let after = spread(&client, 100).await;
    assert_eq!(after.keys().collect::<Vec<_>>(), ["health-2"], "{after:?}");

    admin.set_health("", HealthStatus::Serving).await.unwrap();
    eventually("health-1 to come back", || async {
        spread(&client, 20).await.contains_key("health-1")
    })
    .await;
}
