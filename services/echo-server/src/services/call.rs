//! What a handler knows about its call beyond the request message, and how it
//! copies request metadata into its answer.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::context::{
    Arrival, ConnectionAction, ConnectionControl, Deadline, ExtraTrailers, PeerInfo, ResetStream,
    ResponseSize,
};
use crate::error::EchoError;

/// The peer, the deadline and (for streams) the end of the shutdown grace period.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) peer: String,
    /// The verified client certificate's subject (mTLS), or empty.
    pub(crate) peer_identity: String,
    deadline: Option<Instant>,
    /// The payload size a behaviour header asks of every answer.
    pub(crate) response_size: Option<u32>,
    /// Set for streams, which end when the shutdown grace period does.
    streams_end: Option<CancellationToken>,
}

impl Call {
    pub(crate) fn unary<T>(request: &Request<T>) -> Self {
        let peer = request
            .extensions()
            .get::<Arrival>()
            .map(|arrival| &arrival.peer);
        Self {
            peer: peer
                .map(|peer| peer.addr_text.to_string())
                .unwrap_or_default(),
            peer_identity: peer
                .and_then(PeerInfo::identity)
                .unwrap_or_default()
                .to_owned(),
            deadline: request.extensions().get::<Deadline>().map(|d| d.0),
            response_size: request
                .extensions()
                .get::<ResponseSize>()
                .map(|size| size.0),
            streams_end: None,
        }
    }

    pub(crate) fn stream<T>(request: &Request<T>, streams_end: &CancellationToken) -> Self {
        Self {
            streams_end: Some(streams_end.clone()),
            ..Self::unary(request)
        }
    }

    /// When the caller's deadline passes, if it set one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Runs `work` unless the caller's deadline or the server's grace period ends first.
    pub(crate) async fn race<F: Future>(&self, work: F) -> Result<F::Output, EchoError> {
        let deadline = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let streams_end = async {
            match &self.streams_end {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            output = work => Ok(output),
            () = deadline => Err(EchoError::DeadlineExceeded),
            () = streams_end => Err(EchoError::ShuttingDown),
        }
    }

    /// The next message of `inbound`, unless the deadline or grace period ends first.
    pub(crate) async fn next_message<T, S>(&self, inbound: &mut S) -> Result<Option<T>, Status>
    where
        S: Stream<Item = Result<T, Status>> + Unpin,
    {
        self.race(inbound.next()).await?.transpose()
    }

    pub(crate) async fn sleep(&self, duration: Duration) -> Result<(), EchoError> {
        if duration.is_zero() {
            return Ok(());
        }
        self.race(tokio::time::sleep(duration)).await
    }
}

/// Carries out a `connection` control where the call would end. A stream
/// reset is left to the response (see [`reset_stream`]); closing never
/// returns, as the connection's end drops the call.
pub(crate) async fn end_call(
    action: Option<ConnectionAction>,
    control: Option<&ConnectionControl>,
) {
    match (action, control) {
        (Some(ConnectionAction::GoAway), Some(control)) => control.go_away(),
        (Some(ConnectionAction::Close), Some(control)) => {
            control.close();
            std::future::pending::<()>().await;
        }
        _ => {}
    }
}

/// Marks `response` for a stream reset in place of its trailers, if `action` asks.
pub(crate) fn reset_stream<T>(response: &mut Response<T>, action: Option<ConnectionAction>) {
    if let Some(ConnectionAction::ResetStream(code)) = action {
        response.extensions_mut().insert(ResetStream(code));
    }
}

/// The connection control of `request`'s connection, when `action` needs it.
pub(crate) fn connection_control<T>(
    request: &Request<T>,
    action: Option<ConnectionAction>,
) -> Option<ConnectionControl> {
    action.and_then(|_| {
        request
            .extensions()
            .get::<Arrival>()
            .map(|arrival| arrival.control.clone())
    })
}

/// Request metadata to copy into the response's headers and trailers.
#[derive(Debug, Default)]
pub(crate) struct EchoedMetadata {
    pub(crate) headers: HeaderMap,
    pub(crate) trailers: HeaderMap,
}

impl EchoedMetadata {
    /// The handler's answer, carrying the echoed metadata.
    pub(crate) fn respond<T>(self, result: Result<T, Status>) -> Result<Response<T>, Status> {
        match result {
            Ok(message) => {
                let mut response = Response::new(message);
                if !self.headers.is_empty() {
                    *response.metadata_mut() = MetadataMap::from_headers(self.headers);
                }
                if !self.trailers.is_empty() {
                    response
                        .extensions_mut()
                        .insert(ExtraTrailers(self.trailers));
                }
                Ok(response)
            }
            Err(mut status) => {
                // An error before any response is one trailers-only frame: headers
                // and trailers both travel in the status metadata.
                if !self.headers.is_empty() || !self.trailers.is_empty() {
                    let mut merged = std::mem::take(status.metadata_mut()).into_headers();
                    merged.extend(self.headers);
                    merged.extend(self.trailers);
                    *status.metadata_mut() = MetadataMap::from_headers(merged);
                }
                Err(status)
            }
        }
    }
}
