//! The Connect protocol's names (connectrpc.com/docs/protocol): its headers,
//! envelope flags and error codes, for the server's translation and the
//! client's alike.

use http::HeaderName;

/// `Connect-Protocol-Version`: the version this pair speaks, [`PROTOCOL_VERSION`].
pub const PROTOCOL_VERSION_HEADER: HeaderName = HeaderName::from_static("connect-protocol-version");
/// The Connect protocol version this pair speaks.
pub const PROTOCOL_VERSION: &str = "1";
/// `Connect-Timeout-Ms`: the call's deadline, in milliseconds.
pub const TIMEOUT_HEADER: HeaderName = HeaderName::from_static("connect-timeout-ms");
/// `Connect-Content-Encoding`: a stream's message compression.
pub const CONTENT_ENCODING_HEADER: HeaderName = HeaderName::from_static("connect-content-encoding");
/// `Connect-Accept-Encoding`: the compressions a stream's peer accepts.
pub const ACCEPT_ENCODING_HEADER: HeaderName = HeaderName::from_static("connect-accept-encoding");
/// The prefix of a unary answer's trailers, sent as headers.
pub const TRAILER_PREFIX: &str = "trailer-";
/// Envelope flag: the end-of-stream message (a JSON object with the error and trailers).
pub const FLAG_END_STREAM: u8 = 0x02;

/// Connect's name of each gRPC status code, indexed by the code's number.
pub const CODE_NAMES: [&str; 17] = [
    "ok",
    "canceled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// Connect's name of the gRPC status code `code` (`unknown` for one out of range).
pub fn code_name(code: i32) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|code| CODE_NAMES.get(code))
        .copied()
        .unwrap_or("unknown")
}

/// The gRPC status code Connect's `name` stands for.
pub fn code_of(name: &str) -> Option<i32> {
    CODE_NAMES
        .iter()
        .position(|known| *known == name)
        .map(|code| code as i32)
}

/// The gRPC status code a Connect error without a body means, by its HTTP status
/// (Connect's table for errors that did not come from a Connect server).
pub fn code_of_http_status(status: u16) -> i32 {
    match status {
        400 => 13,             // internal: a malformed request is the client's bug
        401 => 16,             // unauthenticated
        403 => 7,              // permission_denied
        404 => 12,             // unimplemented
        429 | 502..=504 => 14, // unavailable
        _ => 2,                // unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_agree() {
        for (code, name) in CODE_NAMES.iter().enumerate() {
            assert_eq!(code_of(name), Some(code as i32));
            assert_eq!(code_name(code as i32), *name);
        }
        assert_eq!(code_of("cancelled"), None, "Connect spells it canceled");
    }
}
