//! A server out of file descriptors pauses its accept loop instead of spinning
//! on EMFILE, keeps serving the connections it has, and accepts again once
//! descriptors free up.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use echo_client::EchoClient;
use echo_client::proto::EchoRequest;
use echo_tests::process::{ServerProcess, binary};

/// The server's open-files limit: enough for its own descriptors and a few
/// connections, far fewer than the test opens.
const NOFILE: u32 = 64;

async fn echo(client: &EchoClient) -> Result<(), tonic::Status> {
    client.echo(EchoRequest::default()).await.map(drop)
}

#[tokio::test]
async fn out_of_descriptors_the_server_pauses_keeps_serving_and_recovers() {
    let mut command = Command::new("sh");
    command
        .args(["-c", &format!("ulimit -n {NOFILE} && exec \"$@\""), "sh"])
        .arg(binary("echo-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            // Accepted connections stay open for the whole test.
            "--handshake-timeout",
            "60s",
        ])
        .env("RUST_LOG", "info");
    let server = ServerProcess::spawn(command);
    let connected = EchoClient::builder(server.addr.to_string())
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    echo(&connected).await.unwrap();

    // Past the limit: the server accepts until EMFILE, the rest wait in the
    // listen backlog (128, so this many fit without a client's connect stalling).
    let flood: Vec<TcpStream> = (0..2 * NOFILE)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    server.wait_for_log("cannot accept connections: pausing");

    let cpu_before = server.cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_used = server.cpu_time() - cpu_before;
    println!("out of descriptors: {cpu_used:?} of CPU in 2 s");
    assert!(
        cpu_used < Duration::from_millis(500),
        "the accept loop spins: {cpu_used:?} of CPU in 2 s"
    );
    echo(&connected)
        .await
        .expect("an existing connection is still served");

    drop(flood);
    let mut recovered = false;
    for _ in 0..100 {
        let fresh = EchoClient::builder(server.addr.to_string())
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(1))
            .connect()
            .await;
        if let Ok(fresh) = fresh
            && echo(&fresh).await.is_ok()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "no new connection was served after descriptors freed up"
    );
}
