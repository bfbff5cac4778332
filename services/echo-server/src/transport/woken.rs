//! An answer body polled again only once something it waits on has woken it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// `inner`, passed over while nothing it waits on has woken it since it
    /// last returned `Pending`.
    ///
    /// hyper's HTTP/2 stream task polls the answer body whenever h2 wakes it,
    /// on the send side too (hyper waits there for send capacity with the
    /// task's waker). Each poll went down the whole chain of bodies, to the
    /// handler and the request body: three times per message of a bidi
    /// stream, of which one found a request (BENCHMARKS.md). From its first
    /// `Pending` on, `inner` is polled with a waker of its own, which records
    /// that it was woken; a body that is never pending, as a unary answer,
    /// never makes one.
    pub(crate) struct WokenBody<B> {
        #[pin]
        inner: B,
        gate: Option<Gate>,
    }
}

/// The waker `inner` is polled with, and what it records.
struct Gate {
    wakeups: Arc<Wakeups>,
    // `wakeups` as a waker, made once rather than cloned into one per poll.
    waker: Waker,
}

/// Whether `inner` was woken since its last poll.
struct Wakeups {
    woken: AtomicBool,
    /// The task polling the body, woken in turn.
    task: AtomicWaker,
}

impl Wake for Wakeups {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Gate {
    fn new() -> Self {
        let wakeups = Arc::new(Wakeups {
            // Until `inner` has been polled with this gate's waker, whatever
            // it waits on holds the task's own: the next poll goes through.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&wakeups));
        Self { wakeups, waker }
    }
}

impl<B> WokenBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self { inner, gate: None }
    }
}

impl<B: Body> Body for WokenBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let Some(gate) = this.gate else {
            let frame = this.inner.poll_frame(cx);
            if frame.is_pending() {
                *this.gate = Some(Gate::new());
            }
            return frame;
        };
        // Registered before the record is read: a wake-up after the read wakes the task.
        gate.wakeups.task.register(cx.waker());
        if !gate.wakeups.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let frame = this.inner.poll_frame(&mut Context::from_waker(&gate.waker));
        if frame.is_ready() {
            // It may have more at once, with no wake-up to tell.
            gate.wakeups.woken.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::pin;
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::test_wakers::Woken;

    /// What a [`Fed`] body has to give, and what it saw.
    #[derive(Default)]
    struct Feed {
        frames: VecDeque<Bytes>,
        polls: usize,
        // The waker of its last pending poll.
        waker: Option<Waker>,
    }

    /// A body that gives the frames the test feeds it, pending in between.
    struct Fed(Arc<Mutex<Feed>>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let mut feed = self.0.lock().unwrap();
            feed.polls += 1;
            match feed.frames.pop_front() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => {
                    feed.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    #[test]
    fn an_answer_body_is_polled_again_once_woken_or_after_a_frame() {
        let feed = Arc::new(Mutex::new(Feed::default()));
        let mut body = pin!(WokenBody::new(Fed(Arc::clone(&feed))));
        let task = Arc::new(Woken::default());
        let task_waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&task_waker);
        let polls = || feed.lock().unwrap().polls;
        let body_waker = || feed.lock().unwrap().waker.clone().unwrap();

        // The first poll, pending, leaves the task's own waker with the body...
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(polls(), 1);
        assert!(body_waker().will_wake(&task_waker));
        // ...so the next goes through, and the body gets a waker of its own.
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(polls(), 2);
        assert!(!body_waker().will_wake(&task_waker));
        // Polls the body did not wake for pass it over.
        for _ in 0..3 {
            assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        }
        assert_eq!(polls(), 2);

        // A frame, and the body's wake-up: the task is woken, and the next
        // poll takes the frame.
        feed.lock()
            .unwrap()
            .frames
            .push_back(Bytes::from_static(b"one"));
        body_waker().wake();
        assert_eq!(task.count(), 1);
        let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
            panic!("the frame fed");
        };
        assert_eq!(frame.into_data().unwrap(), "one");
        assert_eq!(polls(), 3);
        // After a frame the body may have another at once: polled with no wake-up.
        feed.lock()
            .unwrap()
            .frames
            .push_back(Bytes::from_static(b"two"));
        assert!(body.as_mut().poll_frame(&mut cx).is_ready());
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(polls(), 5);
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(polls(), 5);
    }
}
