//! The client's reading of a server's Connect answers, which it must survive
//! whatever the server sends: the first byte picks the decoder, the rest is
//! its input.
//!
//! - 0: an error answer (two bytes of HTTP status, then the body) as a status;
//! - 1: an end-of-stream message as trailers;
//! - 2: a stream's answer, fed in chunks of the size the next byte says: its
//!   messages, then trailers or an error, never a panic.
#![no_main]

use bytes::Bytes;
use echo_client::fuzzing::{connect_end_stream, connect_error, connect_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, input)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            let Some((status, body)) = input.split_first_chunk::<2>() else {
                return;
            };
            let http_status = 100 + u16::from_be_bytes(*status) % 500;
            let status = connect_error(http_status, body);
            assert_ne!(
                status.code(),
                tonic::Code::Ok,
                "an error answer is an error"
            );
            let _ = status.into_http::<tonic::body::Body>();
        }
        1 => {
            let _ = connect_end_stream(input);
        }
        _ => {
            let Some((&chunk, body)) = input.split_first() else {
                return;
            };
            let chunks = body
                .chunks(usize::from(chunk).max(1))
                .map(Bytes::copy_from_slice)
                .collect();
            let _ = echo_fuzz::block_on(connect_stream(200, chunks));
        }
    }
});
