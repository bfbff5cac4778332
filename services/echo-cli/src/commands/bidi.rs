//! `echo-client bidi`: sends stdin lines as they are typed, prints echoes as they arrive.

use std::process::ExitCode;

use echo_client::ClientBuilder;
use echo_client::proto::EchoRequest;
use tokio::io::AsyncBufReadExt;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::LinesStream;

use crate::output::Output;

pub(crate) async fn run(builder: &ClientBuilder, out: Output) -> anyhow::Result<ExitCode> {
    let client = builder.clone().connect().await?;
    let lines = LinesStream::new(tokio::io::BufReader::new(tokio::io::stdin()).lines());
    let requests = lines.map_while(Result::ok).map(|message| EchoRequest {
        message,
        ..Default::default()
    });
    let response = client.bidi_stream(requests).await?;
    out.stream(response).await?;
    Ok(ExitCode::SUCCESS)
}
