//! Sequences of HTTP/2 frames (`echo_fuzz::frames`) on a served connection:
//! HEADERS for real methods, DATA with gRPC messages, resets, window
//! updates, settings, pings, GOAWAY. The connection ends, without a panic,
//! within bounded time and memory.
#![no_main]

use echo_fuzz::frames::{Session, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|session: Session| {
    echo_fuzz::exchange(&encode(&session));
});
