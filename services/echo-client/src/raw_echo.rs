//! `echo-client tcp-echo` / `udp-echo`: the RFC 862 Echo Protocol, the same
//! echo as gRPC's with nothing in between.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Sends `message` over TCP and reads the same number of bytes back.
pub async fn tcp(
    target: &str,
    message: &str,
    wait: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(target)
            .await
            .with_context(|| format!("cannot connect to {target}"))?;
        stream.write_all(message.as_bytes()).await?;
        let mut echoed = vec![0; message.len()];
        stream
            .read_exact(&mut echoed)
            .await
            .context("the connection closed before the echo")?;
        anyhow::Ok(echoed)
    };
    let echoed = tokio::time::timeout(wait, exchange)
        .await
        .context("no echo in time")??;
    report("tcp", message, &echoed, started.elapsed(), json)
}

/// Sends `message` as one datagram and waits for the reply.
pub async fn udp(
    target: &str,
    message: &str,
    wait: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let socket = UdpSocket::bind("0.0.0.0:0").await?;
    socket
        .connect(target)
        .await
        .with_context(|| format!("cannot reach {target}"))?;
    let started = Instant::now();
    socket.send(message.as_bytes()).await?;
    let mut echoed = vec![0; 65_535];
    let len = tokio::time::timeout(wait, socket.recv(&mut echoed))
        .await
        .context("no echo in time")??;
    echoed.truncate(len);
    report("udp", message, &echoed, started.elapsed(), json)
}

fn report(
    protocol: &str,
    sent: &str,
    echoed: &[u8],
    rtt: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let echoed = String::from_utf8_lossy(echoed);
    ensure!(
        echoed == sent,
        "the echo differs from what was sent: {echoed:?}"
    );
    if json {
        out!(
            "{}",
            json!({ "protocol": protocol, "message": echoed, "rtt_us": rtt.as_micros() })
        );
    } else {
        out!("{echoed}  [{protocol} · rtt {rtt:.1?}]");
    }
    Ok(ExitCode::SUCCESS)
}
