//! The `echo-client` command, as a library its binary calls: every RPC of a
//! grpc-echo server from the command line; any method of any gRPC server
//! listed, described and called (through its reflection, or `.proto` files);
//! the gRPC interop cases against any server; and [`mod@bench`], a load
//! generator for any of them.
//!
//! # Layout
//!
//! - `cli`: the global flags, and the [`echo_client::ClientBuilder`] they make.
//! - `output`: how answers, metadata and failed calls are printed (text or
//!   JSON), with hints for common mistakes.
//! - `suggest`: the known name closest to a mistyped one.
//! - `commands`: one module per command: `echo`, `server_stream`,
//!   `client_stream`, `bidi`, `health`, `interop`, `raw_echo` (`tcp-echo`,
//!   `udp-echo`), `forward`, and `any` (`list`, `describe`, `call`: any
//!   service, with dynamic messages in proto3 JSON).
//! - `bench`: the load generator (`echo-client bench`), in steps a module
//!   each: arguments, targets, schedule, tally, reports.
#![forbid(unsafe_code)]

/// `println!` that ends the program quietly when stdout is closed (as by
/// `| head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

pub mod bench;
mod cli;
mod commands;
mod output;
mod suggest;

pub use cli::{Cli, run};
pub use output::Output;
