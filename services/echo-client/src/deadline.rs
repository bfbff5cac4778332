//! A call's deadline, carried as a typed request extension from where it is
//! set (the call policy, or a retry policy across attempts) to the wire,
//! where the link writes it once, in its protocol's header, as the time left.
//!
//! A caller sets a call's own timeout with tonic's `Request::set_timeout`,
//! which writes `grpc-timeout`; [`CallDeadline::take_timeout`] reads that
//! header once and takes it out.

use std::time::Duration;

use echo_wire::grpc_timeout;
use http::HeaderMap;
use tokio::time::Instant;

/// Request extension: when the caller stops waiting for this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);

impl CallDeadline {
    /// The deadline `timeout` from now (none past the clock's range).
    pub fn after(timeout: Duration) -> Option<Self> {
        Instant::now().checked_add(timeout).map(Self)
    }

    /// The call's own timeout, taken out of `headers` (where
    /// `tonic::Request::set_timeout` put it).
    pub fn take_timeout(headers: &mut HeaderMap) -> Option<Duration> {
        headers
            .remove(grpc_timeout::HEADER)
            .and_then(|value| grpc_timeout::parse(&value))
    }

    /// The time left, zero once past.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn expired(self) -> bool {
        Instant::now() >= self.0
    }
}
