//! What a handler knows about its call beyond the request message, and how it
//! copies request metadata into its answer.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
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
    /// What ends the call before its work, made at its first use and kept,
    /// so that a stream's messages share one timer and one wait for the
    /// grace period rather than registering and dropping both for each
    /// message (7.6% of the server's CPU in a bidi ping-pong, BENCHMARKS.md).
    ends: Option<Pin<Box<Ends>>>,
    /// The waker `ends` last registered. While the call's task polls with
    /// it, that registration stands (either end wakes the task), so a poll
    /// only looks whether an end has come. Polling both waits again, about
    /// three times per message of a bidi stream, took 838 of its 12,266
    /// instructions (BENCHMARKS.md).
    ends_waker: Option<Waker>,
    /// The timer of `sleep`, made at its first use and reset after.
    delay: Option<Pin<Box<Sleep>>>,
}

pin_project! {
    /// Ends a call before its work: the caller's deadline, then the shutdown
    /// grace period's end. Ready again when polled after it ended.
    #[derive(Debug)]
    struct Ends {
        #[pin]
        deadline: Option<Sleep>,
        #[pin]
        streams_end: Option<WaitForCancellationFutureOwned>,
    }
}

impl Future for Ends {
    type Output = EchoError;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<EchoError> {
        let this = self.project();
        if let Some(deadline) = this.deadline.as_pin_mut()
            && deadline.poll(cx).is_ready()
        {
            return Poll::Ready(EchoError::DeadlineExceeded);
        }
        if let Some(streams_end) = this.streams_end.as_pin_mut()
            && streams_end.poll(cx).is_ready()
        {
            return Poll::Ready(EchoError::ShuttingDown);
        }
        Poll::Pending
    }
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
            ends: None,
            ends_waker: None,
            delay: None,
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

    /// The next message of `inbound`, unless the deadline or grace period ends
    /// first. This and [`Call::sleep`] poll the call's own timers in place: a
    /// stream waits for each message, and a future that holds its own timer
    /// would be built and copied for every one.
    pub(crate) fn next_message<'a, T, S>(
        &'a mut self,
        inbound: &'a mut S,
    ) -> impl Future<Output = Result<Option<T>, Status>> + 'a
    where
        S: Stream<Item = Result<T, Status>> + Unpin,
    {
        std::future::poll_fn(move |cx| {
            if let Poll::Ready(message) = inbound.poll_next_unpin(cx) {
                return Poll::Ready(message.transpose());
            }
            self.poll_ends(cx).map(|end| Err(end.into()))
        })
    }

    /// Waits `duration`, unless the deadline or grace period ends first.
    pub(crate) fn sleep(
        &mut self,
        duration: Duration,
    ) -> impl Future<Output = Result<(), EchoError>> + '_ {
        let waits = !duration.is_zero();
        if waits {
            let until = Instant::now() + duration;
            match &mut self.delay {
                Some(delay) => delay.as_mut().reset(until),
                None => self.delay = Some(Box::pin(tokio::time::sleep_until(until))),
            }
        }
        std::future::poll_fn(move |cx| {
            let slept = match &mut self.delay {
                Some(delay) if waits => delay.as_mut().poll(cx).is_ready(),
                _ => true,
            };
            if slept {
                return Poll::Ready(Ok(()));
            }
            self.poll_ends(cx).map(Err)
        })
    }

    /// Ready when the deadline or the grace period has ended the call; pending
    /// forever when neither applies.
    fn poll_ends(&mut self, cx: &mut Context<'_>) -> Poll<EchoError> {
        if self.deadline.is_none() && self.streams_end.is_none() {
            return Poll::Pending;
        }
        if self
            .ends_waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
            && !self.an_end_came()
        {
            return Poll::Pending;
        }
        let (deadline, streams_end) = (self.deadline, &self.streams_end);
        let ended = self
            .ends
            .get_or_insert_with(|| {
                Box::pin(Ends {
                    deadline: deadline.map(tokio::time::sleep_until),
                    streams_end: streams_end.clone().map(CancellationToken::cancelled_owned),
                })
            })
            .as_mut()
            .poll(cx);
        if ended.is_pending() {
            self.ends_waker = Some(cx.waker().clone());
        }
        ended
    }

    /// Whether the deadline's timer has fired or the grace period has
    /// ended: either wakes the task that `ends` registered.
    fn an_end_came(&self) -> bool {
        self.ends
            .as_ref()
            .is_some_and(|ends| ends.deadline.as_ref().is_some_and(Sleep::is_elapsed))
            || self
                .streams_end
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tonic::Code;

    use super::*;
    use crate::test_wakers::Woken;

    /// A stream call, with `deadline`, waiting for a message that never
    /// comes: polled once with a fresh waker (as in its connection's task),
    /// then three times with a second (as in a task of its own), each pending.
    /// `end` then ends it, given the grace period's token and the second
    /// waker's count. Returns the code the next poll ends the call with,
    /// once `end` has woken the second waker exactly once.
    async fn end_a_waiting_stream(
        deadline: Duration,
        end: impl AsyncFnOnce(&CancellationToken, &Woken),
    ) -> Code {
        let streams_end = CancellationToken::new();
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(Deadline(Instant::now() + deadline));
        let mut call = Call::stream(&request, &streams_end);
        let mut inbound = futures_util::stream::pending::<Result<(), Status>>();
        let mut next = Box::pin(call.next_message(&mut inbound));
        let first = Waker::from(Arc::new(Woken::default()));
        assert!(
            next.as_mut()
                .poll(&mut Context::from_waker(&first))
                .is_pending()
        );
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(Arc::clone(&woken));
        for _ in 0..3 {
            assert!(
                next.as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
        }
        end(&streams_end, &woken).await;
        assert_eq!(woken.count(), 1, "the end woke the task that polled last");
        match next.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Err(status)) => status.code(),
            other => panic!("the call did not end: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_for_a_message_ends_at_its_deadline_whatever_its_polls() {
        let code = end_a_waiting_stream(Duration::from_secs(1), async |_, woken| {
            tokio::time::advance(Duration::from_millis(999)).await;
            assert_eq!(woken.count(), 0, "woken before the deadline");
            tokio::time::advance(Duration::from_millis(2)).await;
        })
        .await;
        assert_eq!(code, Code::DeadlineExceeded);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_for_a_message_ends_with_the_grace_period_whatever_its_polls() {
        let code = end_a_waiting_stream(Duration::from_secs(60), async |streams_end, _| {
            streams_end.cancel();
        })
        .await;
        assert_eq!(code, Code::Unavailable);
    }
}
