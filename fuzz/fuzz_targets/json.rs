//! Proto3 JSON into the dynamic messages of every served type, and back; and
//! protobuf bytes into JSON. The first line names the message type (an
//! unknown name picks one by its length), the rest is the input.
#![no_main]

use echo_server::fuzzing::{json_to_proto_and_back, message_types, proto_to_json_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (name, input) = match data.iter().position(|&byte| byte == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (&b""[..], data),
    };
    let types = message_types();
    let message = types
        .iter()
        .find(|message| message.full_name().as_bytes() == name)
        .unwrap_or(&types[name.len() % types.len()]);
    if let Ok(json) = json_to_proto_and_back(message, input) {
        // What the server writes, it reads back.
        json_to_proto_and_back(message, &json).expect("the server's own JSON is read back");
    }
    let _ = proto_to_json_text(message, input);
});
