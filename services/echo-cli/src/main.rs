//! `echo-client`: calls every RPC of a grpc-echo server from the command line,
//! lists, describes and calls any method of any gRPC server (through its
//! reflection, or `.proto` files), runs the gRPC interop cases against any
//! server, and loads servers.
//!
//! # Layout
//!
//! - `cli`: the global flags, and the [`echo_client::ClientBuilder`] they make.
//! - `output`: how answers, metadata and failed calls are printed (text or JSON).
//! - `commands`: one module per command: `echo`, `server_stream`,
//!   `client_stream`, `bidi`, `health`, `interop`, `bench`, `raw_echo`
//!   (`tcp-echo`, `udp-echo`), and `any` (`list`, `describe`, `call`: any
//!   service, with dynamic messages in proto3 JSON).

/// `println!` that ends the program quietly when stdout is closed (as by
/// `| head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match echo_wire::runtime::build(None) {
        Ok(runtime) => runtime.block_on(cli::run(cli)),
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}
