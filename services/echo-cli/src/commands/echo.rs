//! `echo-client echo`: one unary Echo, with the controls that make the server
//! misbehave on purpose (shared with `server-stream`).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use echo_client::ClientBuilder;
use echo_client::proto::{
    ConnectionAction, ConnectionControl, EchoRequest, ErrorControl, MetadataEcho, StreamControl,
};
use tonic::Code;

use crate::output::Output;

/// Arguments of `echo-client echo`.
#[derive(Debug, Args)]
pub(crate) struct EchoArgs {
    /// Text to echo.
    #[arg(default_value = "")]
    message: String,
    #[command(flatten)]
    controls: Controls,
}

pub(crate) async fn run(
    builder: &ClientBuilder,
    args: EchoArgs,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let client = builder.clone().connect().await?;
    let response = client
        .echo(args.controls.request(args.message, None))
        .await?;
    // tonic merges a unary call's trailers into its metadata.
    out.metadata("metadata", response.metadata());
    out.response(response.get_ref());
    Ok(ExitCode::SUCCESS)
}

/// Controls that make the server misbehave on purpose.
#[derive(Debug, Args)]
pub(crate) struct Controls {
    /// Send a payload of this many bytes.
    #[arg(long, default_value_t = 0)]
    payload_size: usize,
    /// Ask the server for a response payload of this many bytes.
    #[arg(long)]
    response_size: Option<u32>,
    /// Ask the server to wait this long before answering.
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    /// Ask the server to fail with this code (name such as NOT_FOUND, or number).
    #[arg(long, value_parser = parse_code)]
    fail_code: Option<Code>,
    /// Status message of `--fail-code`.
    #[arg(long, default_value = "", requires = "fail_code")]
    fail_message: String,
    /// ErrorInfo metadata of `--fail-code`, as `key=value` (repeatable).
    #[arg(long, value_parser = parse_detail, requires = "fail_code")]
    fail_detail: Vec<(String, String)>,
    /// RetryInfo of `--fail-code`: when the caller may try again.
    #[arg(long, value_parser = humantime::parse_duration, requires = "fail_code")]
    fail_retry_delay: Option<Duration>,
    /// Ask the server to echo this call's metadata back.
    #[arg(long, value_enum)]
    echo_metadata: Option<EchoMetadata>,
    /// Ask the server to answer and then send GOAWAY on the connection.
    #[arg(long, group = "connection_action")]
    goaway: bool,
    /// Ask the server to reset the stream with this HTTP/2 error code (e.g. 8 for
    /// CANCEL) after the response messages, in place of the status.
    #[arg(long, group = "connection_action", conflicts_with = "fail_code")]
    reset_stream: Option<u32>,
    /// Ask the server to close the TCP connection in place of ending the call.
    #[arg(long, group = "connection_action")]
    close_connection: bool,
    /// Ask the server what it received (protocol, HTTP version, authority,
    /// deadline, compression, TLS, headers), to see what a proxy changed.
    #[arg(long)]
    reflect_wire: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EchoMetadata {
    Headers,
    Trailers,
    Both,
}

impl Controls {
    /// The request carrying `message` and these controls (and `stream`, for ServerStream).
    pub(crate) fn request(&self, message: String, stream: Option<StreamControl>) -> EchoRequest {
        EchoRequest {
            message,
            payload: grpc_echo::echo::v1::payload(self.payload_size),
            delay: self.delay.map(proto_duration),
            response_size: self.response_size,
            error: self.fail_code.map(|code| ErrorControl {
                code: code as i32,
                message: self.fail_message.clone(),
                details: self.fail_detail.iter().cloned().collect(),
                retry_delay: self.fail_retry_delay.map(proto_duration),
            }),
            echo_metadata: match self.echo_metadata {
                None => MetadataEcho::None,
                Some(EchoMetadata::Headers) => MetadataEcho::Headers,
                Some(EchoMetadata::Trailers) => MetadataEcho::Trailers,
                Some(EchoMetadata::Both) => MetadataEcho::Both,
            } as i32,
            stream,
            reflect_wire: self.reflect_wire,
            connection: self.connection_control(),
        }
    }

    fn connection_control(&self) -> Option<ConnectionControl> {
        let (action, reset_code) = if self.goaway {
            (ConnectionAction::Goaway, 0)
        } else if let Some(code) = self.reset_stream {
            (ConnectionAction::ResetStream, code)
        } else if self.close_connection {
            (ConnectionAction::Close, 0)
        } else {
            return None;
        };
        Some(ConnectionControl {
            action: action as i32,
            reset_code,
        })
    }
}

fn parse_code(text: &str) -> Result<Code, echo_wire::codes::UnknownCode> {
    echo_wire::codes::parse(text).map(Code::from)
}

fn parse_detail(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not `key=value`"))
}

/// `duration` as a protobuf `Duration`.
pub(crate) fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: duration.as_secs() as i64,
        nanos: duration.subsec_nanos() as i32,
    }
}
