//! `echo.v1.EchoRequest` bytes turned into a plan for each RPC: a plan or a
//! status (INVALID_ARGUMENT for what the server refuses), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for planned in echo_server::fuzzing::plan_controls(data) {
        if let Err(status) = planned {
            assert_ne!(status.code(), tonic::Code::Ok, "{status:?}");
        }
    }
});
