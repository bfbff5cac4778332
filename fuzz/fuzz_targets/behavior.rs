//! `x-echo-behavior` and `rpc-behavior` headers (and the headers they read:
//! `grpc-previous-rpc-attempts`, `x-request-id`), one `name: value` per line:
//! a fault, none, or INVALID_ARGUMENT.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    for line in data.split(|&byte| byte == b'\n') {
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(line[..colon].trim_ascii()),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    if let Err(status) = echo_server::fuzzing::behavior_fault(&headers) {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
});
