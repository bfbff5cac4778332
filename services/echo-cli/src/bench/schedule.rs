//! When calls start: closed loop (each worker calls again as soon as it is
//! answered) or open loop (calls start on a schedule, at a [`Rate`] that may
//! step or ramp, and latency counts from the scheduled time, so a stalled
//! server cannot hide its queue), which calls are measured, and in which step
//! of a stepped schedule each falls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;

use super::pacer::Pacer;
use super::tally::{Answer, Tally};

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
    /// Open loop: how fast calls start.
    rate: Option<Rate>,
    /// Stepped schedules: how long each step lasts, from the measured start.
    step_every: Option<Duration>,
    /// Whether every measured call is kept (`--csv-calls`).
    keep_calls: bool,
    origin: Instant,
    /// Ends the waits for scheduled starts.
    pacer: Pacer,
}

/// How fast an open loop starts calls (per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Rate {
    /// The same rate all along.
    Constant(f64),
    /// `start`, then `step` more every `every` of the measured time, up to `max`.
    Steps {
        start: f64,
        step: f64,
        every: Duration,
        max: f64,
    },
    /// From `from` to `to`, linearly over `over` (the measured time).
    Ramp { from: f64, to: f64, over: Duration },
}

impl Rate {
    /// The rate the warmup runs at, and the schedule starts from.
    fn start(&self) -> f64 {
        match *self {
            Self::Constant(rate) => rate,
            Self::Steps { start, .. } => start,
            Self::Ramp { from, .. } => from,
        }
    }

    /// The rate during step `step` (from 0) of a stepped rate.
    pub(super) fn of_step(&self, step: usize) -> f64 {
        match *self {
            Self::Steps {
                start,
                step: by,
                max,
                ..
            } => (start + by * step as f64).min(max),
            _ => self.start(),
        }
    }

    /// Seconds from the start of the measured part to the `n`th call after
    /// it (not an integer: the warmup's calls leave a fraction); infinite when
    /// a falling ramp never gets there.
    fn offset(&self, n: f64) -> f64 {
        match *self {
            Self::Constant(rate) => n / rate,
            Self::Steps {
                start,
                step,
                every,
                max,
            } => {
                let every = every.as_secs_f64();
                let (mut left, mut elapsed, mut index) = (n, 0.0, 0);
                loop {
                    let rate = (start + step * f64::from(index)).min(max);
                    if left < rate * every || rate >= max {
                        return elapsed + left / rate;
                    }
                    left -= rate * every;
                    elapsed += every;
                    index += 1;
                }
            }
            Self::Ramp { from, to, over } => {
                // Calls by time t: from * t + slope * t^2 / 2.
                let slope = (to - from) / over.as_secs_f64();
                if slope.abs() < f64::EPSILON {
                    return n / from;
                }
                let discriminant = from * from + 2.0 * slope * n;
                if discriminant < 0.0 {
                    return f64::INFINITY;
                }
                (discriminant.sqrt() - from) / slope
            }
        }
    }
}

impl Schedule {
    /// Starting now: `warmup` not measured, then `duration` (or `total` calls)
    /// measured; open loop at `rate` when given; the measured part cut into
    /// steps of `step_every` for the report when given; every call kept when
    /// `keep_calls`.
    pub(super) fn new(
        warmup: Duration,
        duration: Duration,
        total: Option<u64>,
        rate: Option<Rate>,
        step_every: Option<Duration>,
        keep_calls: bool,
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
            rate,
            step_every,
            keep_calls,
            origin,
            pacer: Pacer::new(rate.is_some()),
        }
    }

    /// Returns at `at` (a call's scheduled start, or a worker's join), at
    /// once when it is due.
    pub(super) async fn wait_until(&self, at: Instant) {
        self.pacer.wait_until(at).await;
    }

    /// The next call's scheduled start, or `None` when the run is over.
    pub(super) fn next(&self) -> Option<Instant> {
        let ticket = self.started.fetch_add(1, Ordering::Relaxed) as f64;
        let at = match &self.rate {
            Some(rate) => {
                // The warmup runs at the starting rate.
                let warmup = self.measure_from - self.origin;
                let warmup_calls = rate.start() * warmup.as_secs_f64();
                let seconds = if ticket < warmup_calls {
                    ticket / rate.start()
                } else {
                    warmup.as_secs_f64() + rate.offset(ticket - warmup_calls)
                };
                if !seconds.is_finite() {
                    return None;
                }
                self.origin + Duration::from_secs_f64(seconds)
            }
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
        let step = self.step_every.map(|every| {
            let into = scheduled.saturating_duration_since(self.measure_from);
            (into.as_secs_f64() / every.as_secs_f64()) as usize
        });
        let at = scheduled.saturating_duration_since(self.measure_from);
        tally.record(scheduled.elapsed(), result, step, at);
    }

    /// Whether every measured call is kept.
    pub(super) fn keeps_calls(&self) -> bool {
        self.keep_calls
    }

    /// When the measured part starts.
    pub(super) fn measure_from(&self) -> Instant {
        self.measure_from
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rate_schedules_the_calls_it_promises() {
        let constant = Rate::Constant(200.0);
        assert_eq!(constant.offset(400.0), 2.0);

        // 100/s for a second, then 200/s, then 250/s (the max) from then on.
        let steps = Rate::Steps {
            start: 100.0,
            step: 100.0,
            every: Duration::from_secs(1),
            max: 250.0,
        };
        assert_eq!(steps.offset(50.0), 0.5);
        assert_eq!(steps.offset(100.0), 1.0);
        assert_eq!(steps.offset(200.0), 1.5);
        assert_eq!(steps.offset(300.0 + 250.0), 3.0);
        assert_eq!(steps.of_step(0), 100.0);
        assert_eq!(steps.of_step(5), 250.0);

        // 100/s rising to 300/s over 2 s: 400 calls in all.
        let ramp = Rate::Ramp {
            from: 100.0,
            to: 300.0,
            over: Duration::from_secs(2),
        };
        assert!((ramp.offset(400.0) - 2.0).abs() < 1e-9);
        // After 1 s (the rate rising from 100/s to 200/s): 150 calls.
        assert!((ramp.offset(150.0) - 1.0).abs() < 1e-9);
        // A falling ramp that never reaches a call.
        let falling = Rate::Ramp {
            from: 100.0,
            to: 0.0,
            over: Duration::from_secs(1),
        };
        assert!(falling.offset(60.0).is_infinite());
    }
}
