//! The arguments of `echo-client bench`, checked before any load.

use std::time::Duration;

use clap::{Args, ValueEnum};
use http::uri::PathAndQuery;

use super::gate::Assertion;
use super::schedule::Rate;
use crate::commands::any::call::RequestData;
use crate::commands::any::source::SourceArgs;

/// Which RPC the load calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchRpc {
    /// Unary Echo.
    Unary,
    /// ServerStream with `--messages` responses per call.
    ServerStream,
    /// ClientStream with `--messages` requests per call.
    ClientStream,
    /// BidiStream ping-pong: one long-lived stream per worker, one message at a time.
    Bidi,
    /// The interop `grpc.testing.TestService/UnaryCall`, asking for a payload
    /// of `--payload-size` back.
    InteropUnary,
}

/// Arguments of `echo-client bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The protocol and HTTP version of the calls, for the reports (from
    /// the global flags).
    #[arg(skip)]
    pub(crate) wire: String,
    /// Histograms of each phase (the global `--timing`).
    #[arg(skip)]
    pub(crate) timing: bool,
    /// Count the bytes on the wire (a matrix's runs do).
    #[arg(skip)]
    pub(crate) wire_bytes: bool,
    /// The RPC to load.
    #[arg(long, value_enum, default_value = "unary")]
    pub(crate) rpc: BenchRpc,
    /// Connections to open.
    #[arg(long, default_value_t = 1)]
    pub(crate) connections: usize,
    /// Concurrent calls per connection.
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: usize,
    /// How long to measure (after the warmup).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", conflicts_with = "total")]
    pub(crate) duration: Duration,
    /// Stop after this many measured calls instead of after `--duration`.
    #[arg(long)]
    pub(crate) total: Option<u64>,
    /// Calls during this first period are not counted.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub(crate) warmup: Duration,
    /// Open loop: start this many calls per second, whatever the answers do.
    #[arg(long)]
    pub(crate) rps: Option<f64>,
    /// Stepped open loop: add this many calls per second to `--rps` every
    /// `--step-interval` (up to `--rps-max`).
    #[arg(long, requires = "rps", conflicts_with = "rps_ramp_to")]
    pub(crate) rps_step: Option<f64>,
    /// The rate a stepped open loop stops rising at [default: no limit].
    #[arg(long, requires = "rps_step")]
    pub(crate) rps_max: Option<f64>,
    /// Ramped open loop: from `--rps` to this rate, linearly over `--duration`.
    #[arg(long, requires = "rps", conflicts_with = "total")]
    pub(crate) rps_ramp_to: Option<f64>,
    /// Stepped concurrency: add this many concurrent calls per connection
    /// every `--step-interval`, from `--concurrency` up to `--concurrency-max`.
    #[arg(long, requires = "concurrency_max")]
    pub(crate) concurrency_step: Option<usize>,
    /// Where `--concurrency-step` stops.
    #[arg(long, requires = "concurrency_step")]
    pub(crate) concurrency_max: Option<usize>,
    /// How long each step of `--rps-step` or `--concurrency-step` lasts; the
    /// report is broken down per step.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub(crate) step_interval: Duration,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    pub(crate) payload_size: usize,
    /// Messages per call for the streaming RPCs.
    #[arg(long, default_value_t = 10)]
    pub(crate) messages: u32,
    /// Call this method (`/package.Service/Method`, unary or bidi per `--rpc`)
    /// of any server instead of `echo.v1`: each message is field `--field`
    /// holding `--payload-size` bytes of `*`, and answers are counted, not
    /// decoded.
    #[arg(long, value_parser = parse_method, conflicts_with = "call")]
    pub(crate) method: Option<PathAndQuery>,
    /// `--method`'s field number (a `string` or `bytes` field); 2 is
    /// echo.v1's `payload`, bytes echoed without a UTF-8 check.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=536_870_911), requires = "method")]
    pub(crate) field: u32,
    /// Call this method of any server (`package.Service/Method`, any shape)
    /// with the messages of `--data`, its descriptors from the server's
    /// reflection, `--proto` or `--protoset`. Client-streaming calls send
    /// `--messages` requests; bidi calls ping-pong the first message.
    #[arg(long, conflicts_with = "rpc")]
    pub(crate) call: Option<String>,
    /// `--call`'s request messages: JSON (several, one after another, are
    /// sent in turn), `@FILE`, or `@-` for stdin [default: an empty message].
    /// With `{{...}}` actions it is one request's template, made per request
    /// (`{{.RequestNumber}}`, `{{.WorkerID}}`, `{{.ConnectionID}}`,
    /// `{{.Timestamp}}`, `{{.TimestampUnix}}`, `{{.TimestampUnixMilli}}`,
    /// `{{.TimestampUnixNano}}`, `{{.UUID}}`, `{{randomString N}}`,
    /// `{{randomInt MIN MAX}}`); so can `-H` values be.
    #[arg(short = 'd', long = "data", value_parser = RequestData::parse, requires = "call")]
    pub(crate) data: Option<RequestData>,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Also draw the latency percentile curve (log-scale tail) in this file,
    /// as SVG or PNG by its extension.
    #[arg(long, value_parser = parse_plot_path)]
    pub(crate) plot: Option<std::path::PathBuf>,
    /// Also write the latency histogram to this file (`-`: stdout, after the
    /// report), losslessly (an HdrHistogram interval log), for `bench merge`
    /// to combine with other workers'.
    #[arg(long)]
    pub(crate) histogram_out: Option<std::path::PathBuf>,
    /// Also write the report as CSV to this file: a row per step of a stepped
    /// schedule, and one for the whole run.
    #[arg(long)]
    pub(crate) csv: Option<std::path::PathBuf>,
    /// Also write every measured call as CSV to this file: worker, scheduled
    /// start and latency (ms), status.
    #[arg(long)]
    pub(crate) csv_calls: Option<std::path::PathBuf>,
    /// Also write the report as one self-contained HTML page to this file:
    /// summary, latency percentile plot, histogram, steps, errors.
    #[arg(long)]
    pub(crate) html: Option<std::path::PathBuf>,
    /// A threshold the run must meet, repeatable: `p50`, `p90`, `p99`,
    /// `p99.9`, `max` or `mean` against a duration (`p99<20ms`),
    /// `error_rate` against a rate (`error_rate<0.1%`), `rps` against
    /// successful calls per second (`rps>=1000`), `errors[CODE]` against a
    /// count (`errors[UNAVAILABLE]<=5`); with `<`, `<=`, `>` or `>=`. Checked
    /// on the run and on each step of a stepped schedule; the run exits 3 when
    /// one fails, 0 when all hold (failed calls included).
    #[arg(long = "assert", value_name = "EXPR")]
    pub(crate) assertions: Vec<Assertion>,
    #[command(subcommand)]
    pub(crate) command: Option<BenchCommand>,
}

/// What `bench` does besides loading a server.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Combine the `--histogram-out` files of several workers into one report
    /// with exact percentiles.
    Merge(MergeArgs),
}

fn parse_plot_path(path: &str) -> Result<std::path::PathBuf, String> {
    if !path.ends_with(".svg") && !path.ends_with(".png") {
        return Err("the plot is SVG or PNG: give a file name ending in .svg or .png".to_owned());
    }
    Ok(path.into())
}

fn parse_method(path: &str) -> Result<PathAndQuery, String> {
    if !path.starts_with('/') || path[1..].split('/').count() != 2 {
        return Err("expected /package.Service/Method".to_owned());
    }
    path.parse().map_err(|err| format!("{err}"))
}

impl BenchArgs {
    /// The open loop's rate, if open.
    pub(super) fn rate(&self) -> Option<Rate> {
        let start = self.rps?;
        Some(match (self.rps_step, self.rps_ramp_to) {
            (Some(step), _) => Rate::Steps {
                start,
                step,
                every: self.step_interval,
                max: self.rps_max.unwrap_or(f64::INFINITY),
            },
            (None, Some(to)) => Rate::Ramp {
                from: start,
                to,
                over: self.duration,
            },
            (None, None) => Rate::Constant(start),
        })
    }

    /// Whether the load changes in steps (and is reported per step).
    pub(super) fn stepped(&self) -> bool {
        self.rps_step.is_some() || self.concurrency_step.is_some()
    }

    /// Concurrent calls per connection during step `step` (from 0).
    pub(super) fn concurrency_of_step(&self, step: usize) -> usize {
        match (self.concurrency_step, self.concurrency_max) {
            (Some(by), Some(max)) => (self.concurrency + by * step).min(max),
            _ => self.concurrency,
        }
    }
}

/// Arguments of `echo-client bench merge`.
#[derive(Debug, Clone, Args)]
pub(crate) struct MergeArgs {
    /// The `--histogram-out` files of the workers.
    #[arg(required = true)]
    pub(super) files: Vec<std::path::PathBuf>,
    /// A threshold the merged calls must meet, as `bench --assert` takes it
    /// (latencies and `rps`: the histograms hold no failed calls); exits 3
    /// when one fails.
    #[arg(long = "assert", value_name = "EXPR")]
    pub(super) assertions: Vec<Assertion>,
}
