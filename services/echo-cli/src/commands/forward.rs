//! `echo-client forward`: the server calls a downstream (and that one the
//! next, for a chain), and the results come back as a tree.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use echo_client::ClientBuilder;
use echo_client::proto::{
    EchoRequest, ForwardMethod, ForwardProtocol, ForwardRequest, ForwardResponse, ForwardResult,
    StatusCode,
};
use serde_json::{Value, json};

use crate::commands::echo::proto_duration;
use crate::output::Output;

/// Arguments of `echo-client forward`.
#[derive(Debug, Args)]
pub(crate) struct ForwardArgs {
    /// The downstream (`host:port`), then each next one: `forward B C` has
    /// the server forward to B, and B to C.
    #[arg(required = true)]
    targets: Vec<String>,
    /// Calls the server makes to the first target.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Calls per second to the first target [default: one after another].
    #[arg(long)]
    rate: Option<f64>,
    /// Timeout of each downstream call (cut to what is left of this call's).
    #[arg(long, value_parser = humantime::parse_duration)]
    each_timeout: Option<Duration>,
    /// Protocol of the downstream calls.
    #[arg(long, value_enum, default_value = "grpc")]
    downstream_protocol: DownstreamProtocol,
    /// `KEY=VALUE` metadata each downstream call carries (repeatable).
    #[arg(long = "downstream-header", value_parser = parse_header)]
    downstream_headers: Vec<(String, String)>,
    /// Call each downstream over TLS (the server's `--forward-ca-file`, and
    /// its `--forward-cert-file` for mutual TLS).
    #[arg(long)]
    downstream_tls: bool,
    /// The name to expect in the downstream's certificate [default: its host].
    #[arg(long, requires = "downstream_tls")]
    downstream_server_name: Option<String>,
    /// What the last hop calls: echo.v1 Echo, or the interop
    /// `grpc.testing.TestService/UnaryCall` of any interop server.
    #[arg(long, value_enum, default_value = "echo")]
    downstream_method: DownstreamMethod,
    /// Text the last hop's Echo carries.
    #[arg(short, long, default_value = "")]
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DownstreamMethod {
    Echo,
    InteropUnaryCall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DownstreamProtocol {
    Grpc,
    GrpcWeb,
    Connect,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

impl ForwardArgs {
    /// The request: the first target with the count and rate, each next one
    /// nested in the one before.
    fn request(&self) -> ForwardRequest {
        let protocol = match self.downstream_protocol {
            DownstreamProtocol::Grpc => ForwardProtocol::Grpc,
            DownstreamProtocol::GrpcWeb => ForwardProtocol::GrpcWeb,
            DownstreamProtocol::Connect => ForwardProtocol::Connect,
        };
        let hop = |target: &String| ForwardRequest {
            target: target.clone(),
            timeout: self.each_timeout.map(proto_duration),
            headers: self.downstream_headers.iter().cloned().collect(),
            protocol: protocol as i32,
            tls: self.downstream_tls,
            server_name: self.downstream_server_name.clone().unwrap_or_default(),
            ..Default::default()
        };
        let mut request = None;
        for target in self.targets.iter().rev() {
            request = Some(ForwardRequest {
                request: request.is_none().then(|| EchoRequest {
                    message: self.message.clone(),
                    ..Default::default()
                }),
                method: match (&request, self.downstream_method) {
                    (None, DownstreamMethod::InteropUnaryCall) => {
                        ForwardMethod::InteropUnaryCall as i32
                    }
                    _ => ForwardMethod::Echo as i32,
                },
                forward: request.map(Box::new),
                ..hop(target)
            });
        }
        let first = request.expect("clap requires a target");
        ForwardRequest {
            count: Some(self.count),
            rate: self.rate,
            ..first
        }
    }
}

pub(crate) async fn run(
    builder: &ClientBuilder,
    args: ForwardArgs,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let client = builder.clone().connect().await?;
    let response = client.forward(args.request()).await?.into_inner();
    if out.json {
        out!("{}", forwarded_json(&response));
    } else {
        print_forwarded(&response, &args.targets, 0);
    }
    let all_ok = every_result(&response, &|result| result.code == StatusCode::Ok as i32);
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether `check` holds for every result, nested ones too.
fn every_result(response: &ForwardResponse, check: &dyn Fn(&ForwardResult) -> bool) -> bool {
    response.results.iter().all(|result| {
        check(result)
            && result
                .forwarded
                .as_ref()
                .is_none_or(|nested| every_result(nested, check))
    })
}

fn code(result: &ForwardResult) -> &'static str {
    StatusCode::try_from(result.code)
        .map(|code| code.as_str_name().trim_start_matches("STATUS_CODE_"))
        .unwrap_or("UNKNOWN")
}

fn millis(result: &ForwardResult) -> f64 {
    result.latency.map_or(0.0, |latency| {
        latency.seconds as f64 * 1e3 + f64::from(latency.nanos) / 1e6
    })
}

fn print_forwarded(response: &ForwardResponse, targets: &[String], depth: usize) {
    let indent = "  ".repeat(depth * 2);
    out!(
        "{indent}{} (seeing peer {}) called {}:",
        response.instance,
        response.peer,
        targets.first().map_or("?", String::as_str)
    );
    for (index, result) in response.results.iter().enumerate() {
        let mut line = format!(
            "{indent}  {}. {} in {:.2} ms",
            index + 1,
            code(result),
            millis(result)
        );
        if result.code == StatusCode::Ok as i32 {
            line += &format!(
                " · instance {} · peer {} · hops {}",
                result.instance,
                result.peer,
                result.hops.join(" -> ")
            );
        } else {
            line += &format!(": {}", result.message);
        }
        out!("{line}");
        if let Some(nested) = &result.forwarded {
            print_forwarded(nested, targets.get(1..).unwrap_or_default(), depth + 1);
        }
    }
}

fn forwarded_json(response: &ForwardResponse) -> Value {
    json!({
        "instance": response.instance,
        "peer": response.peer,
        "results": response.results.iter().map(|result| json!({
            "code": code(result),
            "message": result.message,
            "latency_ms": millis(result),
            "instance": result.instance,
            "peer": result.peer,
            "hops": result.hops,
            "echo": result.echo.as_ref().map(|echo| json!({
                "message": echo.message,
                "instance": echo.instance,
                "peer": echo.peer,
            })),
            "forwarded": result.forwarded.as_ref().map(forwarded_json),
        })).collect::<Vec<_>>(),
    })
}
