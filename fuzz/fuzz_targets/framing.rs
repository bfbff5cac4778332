//! gRPC message framing and compression: the first byte picks the parser,
//! the rest is its input.
//!
//! - 0: the message splitter, fed in chunks of the sizes the next bytes say;
//! - 1 and 2: gzip and zstd decompression inside the message size limit (a
//!   bomb stops at the limit);
//! - 3: a whole body of envelopes (Connect and gRPC-Web).
#![no_main]

use bytes::Bytes;
use echo_server::fuzzing::{decompress, split_envelopes};
use echo_wire::framing::MessageSplitter;
use libfuzzer_sys::fuzz_target;

/// The default `--max-message-size`.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, input)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => split(input),
        zstd @ (1 | 2) => {
            if let Ok(message) = decompress(zstd == 2, input, MAX_MESSAGE) {
                assert!(message.len() <= MAX_MESSAGE);
            }
        }
        _ => {
            if let Ok(messages) = split_envelopes(Bytes::copy_from_slice(input)) {
                let total: usize = messages.iter().map(|(_, bytes)| 5 + bytes.len()).sum();
                assert_eq!(total, input.len(), "every byte is in one envelope");
            }
        }
    }
});

/// Splits `input` fed in chunks: its first byte is the chunk size.
fn split(input: &[u8]) {
    let Some((&chunk, rest)) = input.split_first() else {
        return;
    };
    let mut splitter = MessageSplitter::default();
    let mut taken = 0;
    for piece in rest.chunks(usize::from(chunk).max(1)) {
        splitter.push(piece);
        while let Some(message) = splitter.next_message() {
            taken += 5 + message.bytes.len();
        }
    }
    let left = splitter.take_rest().len();
    assert_eq!(taken + left, rest.len(), "no byte lost or made up");
}
