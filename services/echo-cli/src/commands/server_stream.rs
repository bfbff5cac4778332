//! `echo-client server-stream`: one request, a stream of answers printed as they arrive.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use echo_client::ClientBuilder;
use echo_client::proto::StreamControl;

use crate::commands::echo::{Controls, proto_duration};
use crate::output::Output;

/// Arguments of `echo-client server-stream`.
#[derive(Debug, Args)]
pub(crate) struct ServerStreamArgs {
    /// Text to echo.
    #[arg(default_value = "")]
    message: String,
    /// Number of responses.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Pause between responses.
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    #[command(flatten)]
    controls: Controls,
}

pub(crate) async fn run(
    builder: &ClientBuilder,
    args: ServerStreamArgs,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let client = builder.clone().connect().await?;
    let stream = StreamControl {
        count: Some(args.count),
        interval: args.interval.map(proto_duration),
    };
    let response = client
        .server_stream(args.controls.request(args.message, Some(stream)))
        .await?;
    out.stream(response).await?;
    Ok(ExitCode::SUCCESS)
}
