//! The two bodies the memory budgets count: a request body whose unfinished
//! messages are reserved ([`BudgetedRequest`]), and an answer body counted
//! until hyper takes each chunk ([`BudgetedAnswer`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use echo_wire::framing::{Advance, Framing};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::codegen::StdError;

use super::{ConnectionBudgets, Holds, Waiting};

pin_project! {
    /// A request body whose unfinished messages are reserved in the budgets.
    pub(crate) struct BudgetedRequest<B> {
        #[pin]
        inner: B,
        budgets: Arc<ConnectionBudgets>,
        framing: Framing,
        // Bytes reserved for the message in progress.
        reserved: usize,
        // A chunk whose new message waits for its reservation.
        held: Option<(Bytes, usize)>,
        waiting: Option<Waiting>,
        // Ends a reservation that makes no progress.
        stall: Option<Pin<Box<Sleep>>>,
    }

    impl<B> PinnedDrop for BudgetedRequest<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.budgets.release(Holds::Requests, *this.reserved);
        }
    }
}

impl<B> BudgetedRequest<B> {
    pub(crate) fn new(inner: B, budgets: Arc<ConnectionBudgets>) -> Self {
        Self {
            inner,
            budgets,
            framing: Framing::default(),
            reserved: 0,
            held: None,
            waiting: None,
            stall: None,
        }
    }
}

impl<B> Body for BudgetedRequest<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<StdError>,
{
    type Data = Bytes;
    /// The inner body's errors as tonic maps them, or RESOURCE_EXHAUSTED.
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        let timeout = this.budgets.timeout();
        // A chunk whose message waits for room: yield it once there is room.
        if let Some((_, length)) = this.held {
            let length = *length;
            loop {
                if this.budgets.try_take(Holds::Requests, length) {
                    *this.reserved = length;
                    *this.waiting = None;
                    *this.stall = None;
                    let (chunk, _) = this.held.take().expect("checked above");
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Waiting::new(this.budgets, Holds::Requests));
                if waiting.poll_released(cx).is_pending() {
                    break;
                }
            }
            let stall = this
                .stall
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            ready!(stall.as_mut().poll(cx));
            this.budgets.pair(Holds::Requests).2.rejections.inc();
            return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                "no room for a {length}-byte request message within {}",
                humantime::format_duration(timeout)
            )))));
        }

        let frame = match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // A reservation that makes no progress is given back in time.
                if *this.reserved > 0 {
                    let stall = this
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if stall.as_mut().poll(cx).is_ready() {
                        this.budgets.pair(Holds::Requests).2.rejections.inc();
                        return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                            "a request message made no progress for {}",
                            humantime::format_duration(timeout)
                        )))));
                    }
                }
                return Poll::Pending;
            }
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Poll::Ready(Some(Err(Status::from_error(err.into())))),
            None => return Poll::Ready(None),
        };
        let Some(chunk) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        // Progress: the stall clock starts again.
        if let Some(stall) = this.stall.as_mut() {
            stall.as_mut().reset(Instant::now() + timeout);
        }
        let was_reserved = *this.reserved > 0;
        match this.framing.advance(chunk) {
            Advance::Between | Advance::InHeader => {
                this.budgets.release(Holds::Requests, *this.reserved);
                *this.reserved = 0;
                *this.stall = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Advance::Continues => Poll::Ready(Some(Ok(frame))),
            Advance::Started(length) => {
                // The message before it, if reserved, ended in this chunk.
                if was_reserved {
                    this.budgets.release(Holds::Requests, *this.reserved);
                    *this.reserved = 0;
                }
                if length > this.budgets.largest(Holds::Requests) {
                    this.budgets.pair(Holds::Requests).2.rejections.inc();
                    return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                        "a {length}-byte request message is larger than the server's buffer budget"
                    )))));
                }
                if this.budgets.try_take(Holds::Requests, length) {
                    *this.reserved = length;
                    return Poll::Ready(Some(Ok(frame)));
                }
                let chunk = frame.into_data().expect("a data frame");
                *this.held = Some((chunk, length));
                *this.stall = None;
                // Poll again now: the wait registers for the next release.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// An answer body whose produced bytes are counted in the budgets until
    /// hyper takes them for HTTP/2, and which waits before producing more
    /// while a budget is used up.
    pub(crate) struct BudgetedAnswer<B> {
        #[pin]
        inner: B,
        budgets: Arc<ConnectionBudgets>,
        // The size of the last chunk, until hyper asks for the next one:
        // it does so once it has handed the last to h2.
        counted: usize,
        waiting: Option<Waiting>,
    }

    impl<B> PinnedDrop for BudgetedAnswer<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.budgets.release(Holds::Answers, *this.counted);
        }
    }
}

impl<B> BudgetedAnswer<B> {
    pub(crate) fn new(inner: B, budgets: Arc<ConnectionBudgets>) -> Self {
        Self {
            inner,
            budgets,
            counted: 0,
            waiting: None,
        }
    }
}

impl<B> Body for BudgetedAnswer<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        // Asked again: the last chunk has been handed to h2.
        this.budgets
            .release(Holds::Answers, std::mem::take(this.counted));
        while !this.budgets.has_room(Holds::Answers) {
            let waiting = this
                .waiting
                .get_or_insert_with(|| Waiting::new(this.budgets, Holds::Answers));
            ready!(waiting.poll_released(cx));
        }
        *this.waiting = None;
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let bytes = data.remaining();
            this.budgets.take(Holds::Answers, bytes);
            *this.counted = bytes;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
