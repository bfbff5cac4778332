//! Live counters of the server's streams, readable while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every call; cheap to read at any time.
#[derive(Debug, Default)]
pub struct Stats {
    open_streams: AtomicU64,
    stream_messages_sent: AtomicU64,
}

impl Stats {
    /// Streaming calls (any of the three kinds) open right now.
    pub fn open_streams(&self) -> u64 {
        self.open_streams.load(Ordering::Relaxed)
    }

    /// Responses produced by ServerStream and BidiStream calls since start.
    pub fn stream_messages_sent(&self) -> u64 {
        self.stream_messages_sent.load(Ordering::Relaxed)
    }

    pub(crate) fn open_stream(self: &Arc<Self>) -> OpenStream {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(Arc::clone(self))
    }
}

/// Counts one open stream until dropped, which happens as soon as the call ends
/// or its caller goes away.
#[derive(Debug)]
pub(crate) struct OpenStream(Arc<Stats>);

impl OpenStream {
    pub fn message_sent(&self) {
        self.0.stream_messages_sent.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}
