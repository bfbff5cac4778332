//! `echo-client client-stream`: sends each message (or each stdin line), prints the summary.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use echo_client::ClientBuilder;
use echo_client::proto::EchoRequest;
use tokio::io::AsyncBufReadExt;

use crate::output::Output;

/// Arguments of `echo-client client-stream`.
#[derive(Debug, Args)]
pub(crate) struct ClientStreamArgs {
    /// Messages to send; stdin lines when none are given.
    messages: Vec<String>,
}

pub(crate) async fn run(
    builder: &ClientBuilder,
    args: ClientStreamArgs,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let client = builder.clone().connect().await?;
    let messages = if args.messages.is_empty() {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut read = Vec::new();
        while let Some(line) = lines.next_line().await.context("reading stdin")? {
            read.push(line);
        }
        read
    } else {
        args.messages
    };
    let requests = tokio_stream::iter(messages.into_iter().map(|message| EchoRequest {
        message,
        ..Default::default()
    }));
    let response = client.client_stream(requests).await?;
    out.metadata("metadata", response.metadata());
    out.summary(response.get_ref());
    Ok(ExitCode::SUCCESS)
}
