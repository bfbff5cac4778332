//! How often a client's calls were sent again, for a load generator's report.

use std::sync::atomic::{AtomicU64, Ordering};

/// How often calls were sent again, for a load generator's report.
#[derive(Debug, Default)]
pub struct CallStats {
    transparent_retries: AtomicU64,
    retries: AtomicU64,
    /// Calls under a retry policy by attempts made: index n counts calls
    /// that took n + 1 attempts; the last, that many or more.
    attempts: [AtomicU64; ATTEMPT_BUCKETS],
}

/// Attempt counts told apart in [`CallStats::attempts`]; more are counted
/// with the last.
const ATTEMPT_BUCKETS: usize = 16;

impl CallStats {
    /// Calls sent again because the server never processed them.
    pub fn transparent_retries(&self) -> u64 {
        self.transparent_retries.load(Ordering::Relaxed)
    }

    /// Calls sent again by a configured [`RetryPolicy`](crate::RetryPolicy).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Calls under a retry policy, by the attempts each made (`(attempts,
    /// calls)`, fewest first, only counts seen; the last count also holds
    /// calls that made more attempts). Empty without a retry policy.
    pub fn attempts(&self) -> Vec<(u32, u64)> {
        (1..)
            .zip(&self.attempts)
            .map(|(attempts, calls)| (attempts, calls.load(Ordering::Relaxed)))
            .filter(|&(_, calls)| calls > 0)
            .collect()
    }

    /// A call under a retry policy ended after `attempts` attempts.
    pub(crate) fn ended_after(&self, attempts: u32) {
        let bucket = (attempts.max(1) as usize - 1).min(ATTEMPT_BUCKETS - 1);
        self.attempts[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn transparently_retried(&self) {
        self.transparent_retries.fetch_add(1, Ordering::Relaxed);
    }
}
