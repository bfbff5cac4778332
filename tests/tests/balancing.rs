//! Client-side balancing over three server processes on 127.0.0.1, .2 and .3:
//! calls spread over all three, killing one mid-run loses no call (the
//! idempotent ones in flight on it are retried elsewhere), and it is taken back
//! when it recovers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use echo_client::proto::EchoRequest;
use echo_client::{EchoClient, RetryPolicy};
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
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    match client.echo(EchoRequest::default()).await {
                        Ok(_) => ok += 1,
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    servers[1].signal("KILL");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
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
        .map(|i| ServerProcess::start_named(&format!("127.0.0.{i}:0"), &format!("bench-{i}")))
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
    std::thread::sleep(Duration::from_millis(1_200));
    servers[1].signal("KILL");
    let output = echo_tests::process::output_of(bench, "echo-client bench", COMMAND_TIMEOUT);
    let report: serde_json::Value = serde_json::from_str(&echo_tests::process::stdout(&output))
        .unwrap_or_else(|err| {
            panic!("{err}: {}", String::from_utf8_lossy(&output.stderr));
        });
    println!(
        "bench over three instances, bench-2 killed after 1.2 s: {} calls, answered by {}, errors {}",
        report["calls"], report["instances"], report["errors"]
    );
    let instances = report["instances"].as_object().unwrap();
    assert_eq!(instances.len(), 3, "{report}");
    let answered: u64 = instances.values().map(|n| n.as_u64().unwrap()).sum();
    for (instance, count) in instances {
        assert!(
            count.as_u64().unwrap() * 10 >= answered / 3,
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
