//! `grpc-timeout` values: parsed or refused; a parsed one survives encoding.
#![no_main]

use echo_wire::grpc_timeout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    if let Some(timeout) = grpc_timeout::parse(&value) {
        let encoded = grpc_timeout::encode(timeout);
        let again = grpc_timeout::parse(&encoded).expect("an encoded timeout parses");
        // Encoding rounds up, never down: a peer never sees a shorter timeout.
        assert!(again >= timeout, "{value:?} -> {encoded:?}");
    }
});
