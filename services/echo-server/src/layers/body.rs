//! A response body that shows its data to a hook and hands it its trailers,
//! or its early end.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Called once per body: with the trailers before they are sent, or when the
/// body ends or is dropped without any; before that, with each data chunk.
pub(crate) trait TrailersHook {
    fn on_trailers(self, trailers: &mut HeaderMap);
    fn on_no_trailers(self);
    fn on_data(&mut self, _data: &[u8]) {}
}

pin_project! {
    /// `inner`, with `hook` told how it ended. Without a hook it only passes frames on.
    pub(crate) struct HookedBody<B, H: TrailersHook> {
        #[pin]
        inner: B,
        hook: Option<H>,
    }

    impl<B, H: TrailersHook> PinnedDrop for HookedBody<B, H> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(hook) = this.project().hook.take() {
                hook.on_no_trailers();
            }
        }
    }
}

impl<B, H: TrailersHook> HookedBody<B, H> {
    pub(crate) fn new(inner: B, hook: Option<H>) -> Self {
        Self { inner, hook }
    }
}

// Data is seen a chunk at a time (`Buf::chunk`): every body here is `Bytes`.
impl<B: Body<Data: Buf>, H: TrailersHook> Body for HookedBody<B, H> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut frame = ready!(this.inner.poll_frame(cx));
        match &mut frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some(hook)) = (frame.data_ref(), this.hook.as_mut()) {
                    hook.on_data(data.chunk());
                }
                if let Some(trailers) = frame.trailers_mut()
                    && let Some(hook) = this.hook.take()
                {
                    hook.on_trailers(trailers);
                }
            }
            Some(Err(_)) | None => {
                if let Some(hook) = this.hook.take() {
                    hook.on_no_trailers();
                }
            }
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
