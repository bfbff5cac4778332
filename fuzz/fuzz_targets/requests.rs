//! One HTTP request of any protocol (gRPC, gRPC-Web binary and text, Connect
//! unary, GET and streams, JSON), from a request file (`echo_fuzz::request`),
//! sent by hyper's client over HTTP/1.1 or HTTP/2 on an in-memory connection
//! to the server with its default layers. Every answer ends; a gRPC call
//! answered whole with HTTP 200 carries a status (other HTTP statuses, such
//! as h2's 431 for a header list over the limit, are mapped by clients),
//! unless it asked for its stream to be reset.
#![no_main]

use echo_fuzz::request::{parse, send};
use grpc_echo::echo::v1::{ConnectionAction, EchoRequest};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some(file) = parse(data) else {
        return;
    };
    let grpc = file.http2
        && !asks_for_a_reset(file.request.body())
        && file.request.method() == http::Method::POST
        && file
            .request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|content_type| content_type == "application/grpc");
    let answer = send(file);
    let answered = answer
        .response
        .as_ref()
        .filter(|response| response.status() == http::StatusCode::OK);
    if let (true, true, Some(response)) = (grpc, answer.complete, answered) {
        let status = response
            .headers()
            .get("grpc-status")
            .or_else(|| answer.trailers.as_ref()?.get("grpc-status"));
        assert!(
            status.is_some(),
            "a whole gRPC answer without grpc-status: {response:?} {:?}",
            answer.trailers
        );
    }
});

/// Whether a message of `body` asks the server to end its stream with
/// RST_STREAM in place of trailers (`connection` control): a reset with
/// NO_ERROR ends the answer cleanly for the client, without a status.
fn asks_for_a_reset(mut body: &[u8]) -> bool {
    while let Some((flags, len)) = echo_wire::framing::header(body) {
        let end = (5 + len).min(body.len());
        if flags == 0
            && let Ok(request) = EchoRequest::decode(&body[5..end])
            && request
                .connection
                .is_some_and(|c| c.action == ConnectionAction::ResetStream as i32)
        {
            return true;
        }
        body = &body[end..];
    }
    false
}
