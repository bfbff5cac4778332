//! `echo-client tcp-echo` / `udp-echo`: the RFC 862 Echo Protocol, the same
//! echo as gRPC's with nothing in between.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::output::Output;

/// Arguments of `echo-client tcp-echo` and `udp-echo`.
#[derive(Debug, Args)]
pub(crate) struct RawEchoArgs {
    /// The echo server, `host:port`.
    #[arg(long)]
    target: String,
    /// Text to send.
    message: String,
}

/// Sends the message over TCP and reads the same number of bytes back.
pub(crate) async fn tcp(
    args: &RawEchoArgs,
    wait: Duration,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let RawEchoArgs { target, message } = args;
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(target.as_str())
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
    report("tcp", message, &echoed, started.elapsed(), out)
}

/// Sends the message as one datagram and waits for the reply.
pub(crate) async fn udp(
    args: &RawEchoArgs,
    wait: Duration,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let RawEchoArgs { target, message } = args;
    let socket = UdpSocket::bind("0.0.0.0:0").await?;
    socket
        .connect(target.as_str())
        .await
        .with_context(|| format!("cannot reach {target}"))?;
    let started = Instant::now();
    socket.send(message.as_bytes()).await?;
    let mut echoed = vec![0; 65_535];
    let len = tokio::time::timeout(wait, socket.recv(&mut echoed))
        .await
        .context("no echo in time")??;
    echoed.truncate(len);
    report("udp", message, &echoed, started.elapsed(), out)
}

fn report(
    protocol: &str,
    sent: &str,
    echoed: &[u8],
    rtt: Duration,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let echoed = String::from_utf8_lossy(echoed);
    ensure!(
        echoed == sent,
        "the echo differs from what was sent: {echoed:?}"
    );
    if out.json {
        out!(
            "{}",
            json!({ "protocol": protocol, "message": echoed, "rtt_us": rtt.as_micros() })
        );
    } else {
        out!("{echoed}  [{protocol} · rtt {rtt:.1?}]");
    }
    Ok(ExitCode::SUCCESS)
}
