//! When calls start: closed loop (each worker calls again as soon as it is
//! answered) or open loop (calls start on a fixed schedule and latency counts
//! from the scheduled time, so a stalled server cannot hide its queue), and
//! which calls are measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;

use super::report::Tally;
use super::targets::Answer;

/// The run's schedule, shared by every worker.
pub(super) struct Schedule {
    measure_from: Instant,
    measure_until: Option<Instant>,
    total: Option<u64>,
    /// Calls started so far, measured or not.
    started: AtomicU64,
    /// Measured calls started so far (with `total`, no more than it).
    started_measured: AtomicU64,
    /// Measured calls finished so far.
    measured: AtomicU64,
    /// Open loop: the interval between scheduled starts.
    interval: Option<Duration>,
    origin: Instant,
}

impl Schedule {
    /// Starting now: `warmup` not measured, then `duration` (or `total` calls)
    /// measured; open loop at `rps` calls per second when given.
    pub(super) fn new(
        warmup: Duration,
        duration: Duration,
        total: Option<u64>,
        rps: Option<f64>,
    ) -> Self {
        let origin = Instant::now();
        let measure_from = origin + warmup;
        Self {
            measure_from,
            measure_until: total.is_none().then(|| measure_from + duration),
            total,
            started: AtomicU64::new(0),
            started_measured: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            interval: rps.map(|rps| Duration::from_secs_f64(1.0 / rps)),
            origin,
        }
    }

    /// The next call's scheduled start, or `None` when the run is over.
    pub(super) fn next(&self) -> Option<Instant> {
        let ticket = self.started.fetch_add(1, Ordering::Relaxed);
        let at = match self.interval {
            Some(interval) => self.origin + interval.mul_f64(ticket as f64),
            None => Instant::now(),
        };
        if self.measure_until.is_some_and(|until| at >= until) {
            return None;
        }
        // Exactly `total` measured calls: a ticket past it ends the worker,
        // whatever the calls still in flight do.
        if let Some(total) = self.total
            && at >= self.measure_from
            && self.started_measured.fetch_add(1, Ordering::Relaxed) >= total
        {
            return None;
        }
        Some(at)
    }

    /// Counts the outcome of the call scheduled at `scheduled`, if measured.
    pub(super) fn record(
        &self,
        tally: &mut Tally,
        scheduled: Instant,
        result: Result<Answer, Status>,
    ) {
        if scheduled < self.measure_from {
            return;
        }
        self.measured.fetch_add(1, Ordering::Relaxed);
        tally.record(scheduled.elapsed(), result);
    }

    /// Measured calls finished so far.
    pub(super) fn measured(&self) -> u64 {
        self.measured.load(Ordering::Relaxed)
    }

    /// How long the measured part of the run has lasted (at least 1 ms).
    pub(super) fn measured_time(&self) -> Duration {
        let end = Instant::now().min(self.measure_until.unwrap_or_else(Instant::now));
        (end.saturating_duration_since(self.measure_from)).max(Duration::from_millis(1))
    }
}

/// Waits for a scheduled start; returns at once when it is due. tokio's
/// timer would wait for its next millisecond tick even then, which capped a
/// closed loop at one call per millisecond per worker.
pub(super) async fn wait_until(scheduled: Instant) {
    if scheduled > Instant::now() {
        tokio::time::sleep_until(scheduled).await;
    }
}

/// A live line on a terminal: calls measured and their rate.
pub(super) async fn progress(schedule: std::sync::Arc<Schedule>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut last = 0;
    loop {
        ticks.tick().await;
        let measured = schedule.measured();
        eprint!("\r\x1b[K{measured} measured, {} /s", measured - last);
        last = measured;
    }
}
