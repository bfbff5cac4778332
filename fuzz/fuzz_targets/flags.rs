//! The server's command line (durations, sizes, counts, `--fault`): parsed or
//! refused with a message; a command line that parses starts a server (on
//! in-memory connections) or is refused with a start-up error, never a panic.
#![no_main]

use clap::Parser as _;
use echo_server::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // One argument per line; the flags that name files to read are left out
    // (addresses are bound by the binary, not the server).
    let args = text.lines();
    if args
        .clone()
        .any(|arg| arg.contains("--tls") || arg.contains("--auth-token-file"))
    {
        return;
    }
    let Ok(config) = Config::try_parse_from(std::iter::once("echo-server").chain(args)) else {
        return;
    };
    let _ = echo_fuzz::block_on(echo_server::fuzzing::start_and_stop(config));
});
