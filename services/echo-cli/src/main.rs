//! `echo-client`: parses the command line and runs it (the `echo_cli` library).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = echo_cli::Cli::parse();
    match echo_wire::runtime::build(None) {
        Ok(runtime) => runtime.block_on(echo_cli::run(cli)),
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}
