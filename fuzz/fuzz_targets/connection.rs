//! Any bytes on a served connection (HTTP/2 after the preface, HTTP/1.1, or
//! neither): the connection ends, without a panic, within bounded time and
//! memory. An input that starts with a zero byte has it replaced by the
//! HTTP/2 preface and an empty SETTINGS frame.
#![no_main]

use echo_wire::h2_frames::{PREFACE, SETTINGS, frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest)) => {
            let mut bytes = PREFACE.to_vec();
            bytes.extend(frame(SETTINGS, 0, 0, &[]));
            bytes.extend_from_slice(rest);
            echo_fuzz::exchange(&bytes);
        }
        _ => {
            echo_fuzz::exchange(data);
        }
    }
});
