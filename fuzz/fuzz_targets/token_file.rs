//! `--auth-token-file` text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let tokens = echo_server::fuzzing::parse_tokens(&text);
    assert!(tokens <= text.lines().count());
});
