//! Server configuration: one clap struct, every flag also an `ECHO_*` variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Default `--listen`: loopback only, so a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default `--shutdown-grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default `--max-delay`.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(60);
/// Default `--max-stream-count`.
pub const DEFAULT_MAX_STREAM_COUNT: u32 = 10_000;
/// Default `--max-payload-size` (1 MiB: well under gRPC's usual 4 MiB message limit).
pub const DEFAULT_MAX_PAYLOAD_SIZE: u32 = 1024 * 1024;
/// Default `--max-summary-messages`.
pub const DEFAULT_MAX_SUMMARY_MESSAGES: u32 = 100;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// Everything `echo-server` can be told, from flags or `ECHO_*` variables.
#[derive(Debug, Clone, Parser)]
#[command(name = "echo-server", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "ECHO_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Instance id reported in every response [default: the host name].
    #[arg(long, env = "ECHO_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "ECHO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// After SIGINT/SIGTERM, how long open streams may go on before they end with UNAVAILABLE.
    #[arg(long, env = "ECHO_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE.into())]
    pub shutdown_grace: humantime::Duration,

    /// Largest `delay` and `stream.interval` a request may ask for.
    #[arg(long, env = "ECHO_MAX_DELAY", default_value_t = DEFAULT_MAX_DELAY.into())]
    pub max_delay: humantime::Duration,

    /// Largest `stream.count` a request may ask for.
    #[arg(long, env = "ECHO_MAX_STREAM_COUNT", default_value_t = DEFAULT_MAX_STREAM_COUNT)]
    pub max_stream_count: u32,

    /// Largest `response_size` (bytes) a request may ask for.
    #[arg(long, env = "ECHO_MAX_PAYLOAD_SIZE", default_value_t = DEFAULT_MAX_PAYLOAD_SIZE)]
    pub max_payload_size: u32,

    /// Serve the gRPC interop service `grpc.testing.TestService` (`true` or `false`).
    #[arg(long, env = "ECHO_INTEROP", default_value_t = true, action = clap::ArgAction::Set)]
    pub interop: bool,

    /// How many messages a ClientStream summary lists before truncating.
    #[arg(long, env = "ECHO_MAX_SUMMARY_MESSAGES", default_value_t = DEFAULT_MAX_SUMMARY_MESSAGES)]
    pub max_summary_messages: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a socket address"),
            instance_id: None,
            log_format: LogFormat::Human,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE.into(),
            max_delay: DEFAULT_MAX_DELAY.into(),
            max_stream_count: DEFAULT_MAX_STREAM_COUNT,
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            max_summary_messages: DEFAULT_MAX_SUMMARY_MESSAGES,
            interop: true,
        }
    }
}

impl Config {
    /// The instance id to report: the configured one, else the host name.
    pub fn instance(&self) -> String {
        self.instance_id
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_constants() {
        let parsed = Config::try_parse_from(["echo-server"]).unwrap();
        let default = Config::default();
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(*parsed.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(*parsed.max_delay, DEFAULT_MAX_DELAY);
        assert_eq!(parsed.max_stream_count, default.max_stream_count);
        assert_eq!(parsed.max_payload_size, default.max_payload_size);
    }

    #[test]
    fn durations_take_human_units() {
        let parsed = Config::try_parse_from(["echo-server", "--shutdown-grace", "1m 30s"]).unwrap();
        assert_eq!(*parsed.shutdown_grace, Duration::from_secs(90));
    }
}
