//! What a failed call's transport error means, the way the gRPC spec and
//! grpc-go/grpc-java read it: its status, and whether the server provably
//! never processed the call (so that sending it again is safe whatever the
//! method).
//!
//! | ending | status | never processed |
//! | --- | --- | --- |
//! | GOAWAY naming a last stream below the call's (any code) | UNAVAILABLE | yes |
//! | RST_STREAM(REFUSED_STREAM) before the response headers | UNAVAILABLE | yes |
//! | cannot connect, or the connection closed before the call was sent | UNAVAILABLE | yes |
//! | the connection breaks after the call was sent | UNAVAILABLE | no |
//! | RST_STREAM(CANCEL) | CANCELLED | no |
//! | RST_STREAM(ENHANCE_YOUR_CALM) | RESOURCE_EXHAUSTED | no |
//! | RST_STREAM(INADEQUATE_SECURITY) | PERMISSION_DENIED | no |
//! | RST_STREAM with any other code, or a protocol violation | INTERNAL | no |
//!
//! A RST_STREAM(NO_ERROR) after a complete answer ends nothing: the answer
//! stands.

use tonic::{Code, ConnectError, Status};

/// An error from a transport, boxed.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a call's failure is.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The status the caller sees.
    pub(crate) status: Status,
    /// Whether the server provably never processed the call.
    pub(crate) never_processed: bool,
}

impl Failure {
    fn refused(message: String) -> Self {
        Self {
            status: Status::unavailable(message),
            never_processed: true,
        }
    }

    fn processed(status: Status) -> Self {
        Self {
            status,
            never_processed: false,
        }
    }
}

/// A call that failed before any response headers arrived.
pub(crate) fn before_response(error: &(dyn std::error::Error + 'static)) -> Failure {
    // The transport's own error decides, wherever it is in the chain: tonic
    // wraps it in a status of its own making.
    for cause in causes(error) {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            if h2.is_go_away() && h2.is_remote() {
                let reason = h2.reason().unwrap_or(h2::Reason::NO_ERROR);
                return Failure::refused(format!(
                    "the server refused the call before processing it (GOAWAY, {reason})"
                ));
            }
            if h2.is_reset() && h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Failure::refused(
                    "the server refused the call before processing it (REFUSED_STREAM)".to_owned(),
                );
            }
            return Failure::processed(from_h2(h2));
        }
        if cause.downcast_ref::<ConnectError>().is_some() {
            return Failure::refused(format!("cannot connect: {}", chain_text(cause)));
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return Failure::refused("the connection closed before the call was sent".to_owned());
        }
    }
    Failure::processed(status_or_lost(error))
}

/// A call whose response broke off after its headers.
pub(crate) fn in_body(error: &(dyn std::error::Error + 'static)) -> Status {
    causes(error)
        .find_map(|cause| cause.downcast_ref::<h2::Error>())
        .map_or_else(|| status_or_lost(error), from_h2)
}

/// The status in `error`, if one says more than that something failed;
/// otherwise UNAVAILABLE, as for a lost connection.
fn status_or_lost(error: &(dyn std::error::Error + 'static)) -> Status {
    causes(error)
        .find_map(|cause| cause.downcast_ref::<Status>())
        .filter(|status| !matches!(status.code(), Code::Unknown | Code::Cancelled))
        .map_or_else(
            || Status::unavailable(format!("connection lost: {}", chain_text(error))),
            status_clone,
        )
}

/// The status of an HTTP/2 error that ended a call the server may have processed.
fn from_h2(error: &h2::Error) -> Status {
    if error.is_io() {
        return Status::unavailable(format!("connection lost: {error}"));
    }
    if error.is_go_away() && error.is_remote() {
        let reason = error.reason().unwrap_or(h2::Reason::NO_ERROR);
        return Status::unavailable(format!(
            "the server closed the connection during the call (GOAWAY, {reason})"
        ));
    }
    let Some(reason) = error.reason() else {
        return Status::internal(format!("HTTP/2: {error}"));
    };
    let code = match reason {
        h2::Reason::REFUSED_STREAM => Code::Unavailable,
        h2::Reason::CANCEL => Code::Cancelled,
        h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        _ => Code::Internal,
    };
    let by = if error.is_remote() {
        "the server"
    } else {
        "this client"
    };
    Status::new(code, format!("stream reset by {by}: {reason}"))
}

/// `error` and its sources, outermost first.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |err| err.source())
}

/// Every cause's text once (transport errors repeat their sources).
pub(crate) fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    for cause in causes(error) {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// A copy of `status` with its code, message, details and metadata.
fn status_clone(status: &Status) -> Status {
    Status::with_details_and_metadata(
        status.code(),
        status.message(),
        status.details().to_vec().into(),
        status.metadata().clone(),
    )
}
