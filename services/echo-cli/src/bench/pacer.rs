//! Starts an open loop's calls on time: within 0.1 ms of their schedule
//! (`timer::RESOLUTION`), not tokio's millisecond tick.
//!
//! tokio's timer rounds every wait up to its next millisecond tick. Waiting
//! on it alone, an open loop started each call up to a millisecond late, and
//! since latency counts from the scheduled start, that delay of the load
//! generator's own went into every latency it reported. So the last stretch
//! of each wait ends on a Linux timerfd in the runtime's own epoll: one timer,
//! armed for the earliest wait, whose expiry wakes every wait due by then. (A
//! thread of the pacer's own, tried first, took twice the client's CPU at
//! 60,000 calls/s: a context switch and a wake-up across threads per batch.)
//! Elsewhere, or without a timerfd, waits end on tokio's timer.

/// Ends the waits of one run's schedule.
pub(super) struct Pacer {
    /// The timer and the task that fires it; `None`: waits end on tokio's timer.
    #[cfg(target_os = "linux")]
    timer: Option<(std::sync::Arc<timer::Timer>, tokio::task::AbortHandle)>,
}

impl Pacer {
    /// With `precise` (an open loop's calls), a timer on the current runtime;
    /// otherwise waits (a stepped concurrency's joins) end on tokio's timer.
    pub(super) fn new(precise: bool) -> Self {
        #[cfg(target_os = "linux")]
        return Self {
            timer: precise.then(timer::Timer::start).flatten(),
        };
        #[cfg(not(target_os = "linux"))]
        {
            let _ = precise;
            Self {}
        }
    }

    /// Returns at `at`, late by up to [`timer::RESOLUTION`] and the runtime's
    /// turn, never early; at once when it is due (tokio's timer would still
    /// wait for its next tick, which capped a closed loop at a call per
    /// millisecond per worker).
    pub(super) async fn wait_until(&self, at: tokio::time::Instant) {
        let now = tokio::time::Instant::now();
        if at <= now {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some((timer, _)) = &self.timer {
            if at - now > timer::COARSE_MARGIN {
                tokio::time::sleep_until(at - timer::COARSE_MARGIN).await;
            }
            if timer.wait_until(at.into_std()).await {
                return;
            }
        }
        tokio::time::sleep_until(at).await;
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some((_, expiries)) = &self.timer {
            expiries.abort();
        }
    }
}

/// The timerfd, and the waits it ends.
#[cfg(target_os = "linux")]
mod timer {
    use std::cmp::{Ordering, Reverse};
    use std::collections::BinaryHeap;
    use std::os::fd::OwnedFd;
    use std::sync::{Arc, Mutex, PoisonError};
    use std::task::{Poll, Waker};
    use std::time::{Duration, Instant};

    use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
    use tokio::io::unix::AsyncFd;

    /// A wait longer than this sleeps on tokio's timer until about this much
    /// is left, so the timerfd is armed for the last stretch only.
    pub(super) const COARSE_MARGIN: Duration = Duration::from_millis(2);

    /// The timer fires at most this often: a call starts at most this late
    /// (besides the runtime's turn). Finer costs the client more CPU per call
    /// (at 60,000 calls/s, 50 µs: p50 0.25 ms and 0.83 of a CPU; 100 µs: 0.31
    /// ms and 0.71; 200 µs: 0.46 ms and 0.59; tokio's tick: 1.84 ms and 0.45).
    pub(super) const RESOLUTION: Duration = Duration::from_micros(100);

    /// The waits, and the timer armed for the earliest.
    pub(super) struct Timer {
        waits: Mutex<Waits>,
        fd: AsyncFd<OwnedFd>,
    }

    #[derive(Default)]
    struct Waits {
        /// The earliest first.
        due: BinaryHeap<Reverse<Due>>,
        /// When the timer fires next; `None` when it is not armed.
        fires_at: Option<Instant>,
        /// The timer failed (it could not be armed or read): waits end on
        /// tokio's timer.
        failed: bool,
    }

    /// A wait: when it is due, and the task to wake then. Ordered by time
    /// alone: waits due at the same instant may end in any order.
    struct Due {
        at: Instant,
        waker: Waker,
    }

    impl PartialEq for Due {
        fn eq(&self, other: &Self) -> bool {
            self.at == other.at
        }
    }

    impl Eq for Due {}

    impl PartialOrd for Due {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }

    impl Ord for Due {
        fn cmp(&self, other: &Self) -> Ordering {
            self.at.cmp(&other.at)
        }
    }

    impl Timer {
        /// A timerfd on the monotonic clock (`Instant`'s) in the current
        /// runtime's epoll, and the task that fires it; `None` without one.
        pub(super) fn start() -> Option<(Arc<Self>, tokio::task::AbortHandle)> {
            let fd = rustix::time::timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )
            .ok()?;
            let timer = Arc::new(Self {
                waits: Mutex::default(),
                // tokio 1.54 deprecates this safe constructor for types that
                // might hand out another descriptor later (`register` is
                // `unsafe`); an `OwnedFd` cannot, and this crate forbids unsafe code.
                #[allow(deprecated)]
                fd: AsyncFd::new(fd).ok()?,
            });
            let expiries = tokio::spawn(Arc::clone(&timer).expire()).abort_handle();
            Some((timer, expiries))
        }

        /// Returns at `at`, or `false` once the timer has failed.
        pub(super) async fn wait_until(&self, at: Instant) -> bool {
            std::future::poll_fn(|cx| {
                if Instant::now() >= at {
                    return Poll::Ready(true);
                }
                let mut waits = self.waits.lock().unwrap_or_else(PoisonError::into_inner);
                if waits.failed {
                    return Poll::Ready(false);
                }
                // Again at each early poll, so that the latest waker is the one woken.
                waits.due.push(Reverse(Due {
                    at,
                    waker: cx.waker().clone(),
                }));
                // Calls are scheduled in time order, so a new wait is seldom
                // the earliest and the timer seldom needs arming again.
                if waits.fires_at.is_none_or(|fires_at| at < fires_at) {
                    self.arm(&mut waits, at.saturating_duration_since(Instant::now()));
                }
                Poll::Pending
            })
            .await
        }

        /// Fires the timer `after` from now (its soonest: a nanosecond, as
        /// zero would disarm it). Should that fail, every wait is woken to
        /// end on tokio's timer.
        fn arm(&self, waits: &mut Waits, after: Duration) {
            let after = after.max(Duration::from_nanos(1));
            let expiry = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: Timespec::try_from(after).unwrap_or(Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                }),
            };
            match rustix::time::timerfd_settime(
                self.fd.get_ref(),
                TimerfdTimerFlags::empty(),
                &expiry,
            ) {
                Ok(_) => waits.fires_at = Some(Instant::now() + after),
                Err(_) => Self::fail(waits),
            }
        }

        /// The timer is out of use: every wait is woken to end on tokio's
        /// timer, and so are those that come later.
        fn fail(waits: &mut Waits) {
            waits.failed = true;
            waits.fires_at = None;
            waits.due.drain().for_each(|Reverse(due)| due.waker.wake());
        }

        /// The task: at each expiry, wakes the waits due and arms the timer
        /// for the next, no sooner than [`RESOLUTION`] on.
        async fn expire(self: Arc<Self>) {
            let mut wake = Vec::new();
            loop {
                // Clearing forgets only the readiness this guard saw: an
                // expiry after the read marks the timer ready anew.
                let expired = match self.fd.readable().await {
                    Ok(mut ready) => match ready.try_io(|fd| {
                        let mut expirations = [0; 8];
                        rustix::io::read(fd.get_ref(), &mut expirations)
                            .map_err(std::io::Error::from)
                    }) {
                        Ok(Ok(_)) => {
                            ready.clear_ready();
                            true
                        }
                        Ok(Err(_)) => false,
                        Err(_would_block) => continue,
                    },
                    Err(_) => false,
                };
                {
                    let mut waits = self.waits.lock().unwrap_or_else(PoisonError::into_inner);
                    if !expired {
                        return Self::fail(&mut waits);
                    }
                    let now = Instant::now();
                    while let Some(Reverse(due)) = waits.due.peek()
                        && due.at <= now
                    {
                        if let Some(Reverse(due)) = waits.due.pop() {
                            wake.push(due.waker);
                        }
                    }
                    waits.fires_at = None;
                    if let Some(next) = waits.due.peek().map(|Reverse(due)| due.at) {
                        self.arm(
                            &mut waits,
                            next.saturating_duration_since(now).max(RESOLUTION),
                        );
                    }
                }
                // Woken outside the lock.
                wake.drain(..).for_each(Waker::wake);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Waits a fraction of a millisecond apart, registered out of order: each
    /// ends at or after its time, and in the order of their times (on tokio's
    /// timer alone they end together, at one tick, in the order they began).
    #[tokio::test(flavor = "current_thread")]
    async fn each_wait_ends_at_its_time_in_time_order() {
        let pacer = Arc::new(Pacer::new(true));
        // All within the coarse margin: each goes to the timer at its first poll.
        let start = tokio::time::Instant::now() + Duration::from_millis(1);
        let offsets_us = [900, 100, 700, 300, 500];
        let waits = offsets_us.map(|offset| {
            let at = start + Duration::from_micros(offset);
            let pacer = Arc::clone(&pacer);
            tokio::spawn(async move {
                pacer.wait_until(at).await;
                (at, tokio::time::Instant::now())
            })
        });
        let mut ended = Vec::new();
        for wait in waits {
            ended.push(wait.await.expect("the wait ran"));
        }
        for &(at, ended_at) in &ended {
            assert!(ended_at >= at, "ended {:?} early", at - ended_at);
        }
        ended.sort_by_key(|&(_, ended_at)| ended_at);
        let order: Vec<_> = ended.iter().map(|&(at, _)| at).collect();
        let mut by_time = order.clone();
        by_time.sort();
        assert_eq!(order, by_time, "the waits ended out of their order");
    }
}
