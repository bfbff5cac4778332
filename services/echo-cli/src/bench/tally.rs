//! What a load measured: [`Tally`] (an HDR latency histogram, errors by
//! code, answers by instance, per step), and the [`Answer`] each call adds
//! to it. A leaf that the schedule, the callers and the reports share.

use std::collections::BTreeMap;
use std::time::Duration;

use echo_client::load_report::OrcaLoadReport;
use hdrhistogram::Histogram;
use tonic::Status;

/// What a successful call (or bidi message) brought back.
pub(super) struct Answer {
    /// Messages each way that the call carried.
    pub(super) messages: u64,
    /// The instance that answered, when the answer says (echo.v1 only).
    pub(super) instance: String,
    /// The load the instance reported with its answer (ORCA), if it did.
    pub(super) load: Option<Box<OrcaLoadReport>>,
}

impl Answer {
    pub(super) fn one(instance: String) -> Self {
        Self {
            messages: 1,
            instance,
            load: None,
        }
    }
}

/// Largest latency recorded, in microseconds; longer ones count as this.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// What one worker (or, merged, the whole run) measured.
pub(super) struct Tally {
    /// Microseconds per call (per message for bidi).
    pub(super) latency: Histogram<u64>,
    /// Messages each way that measured calls carried.
    pub(super) messages: u64,
    pub(super) errors: BTreeMap<String, u64>,
    /// Answered calls (bidi: messages) per server instance that answered.
    pub(super) instances: BTreeMap<String, u64>,
    /// The latest load each instance reported, of those that report.
    pub(super) loads: BTreeMap<String, OrcaLoadReport>,
    /// Stepped schedules: what each step measured, by step from 0.
    pub(super) steps: BTreeMap<usize, StepTally>,
    /// The worker this tally is of (merged: the first's).
    worker: usize,
    /// Every measured call, when kept (`--csv-calls`).
    pub(super) calls: Option<Vec<CallDetail>>,
}

/// One measured call, for `--csv-calls`.
pub(super) struct CallDetail {
    pub(super) worker: usize,
    /// Its scheduled start, from the start of the measured part.
    pub(super) at: Duration,
    pub(super) latency: Duration,
    pub(super) code: tonic::Code,
}

/// What one step of a stepped schedule measured.
pub(super) struct StepTally {
    /// Measured calls, failed ones included.
    pub(super) calls: u64,
    pub(super) errors: u64,
    /// Microseconds per successful call.
    pub(super) latency: Histogram<u64>,
}

pub(super) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).expect("valid histogram bounds")
}

impl Tally {
    /// An empty tally of `worker`, that keeps every call when `keep_calls`.
    pub(super) fn new(worker: usize, keep_calls: bool) -> Self {
        Self {
            worker,
            calls: keep_calls.then(Vec::new),
            latency: latency_histogram(),
            messages: 0,
            errors: BTreeMap::new(),
            instances: BTreeMap::new(),
            loads: BTreeMap::new(),
            steps: BTreeMap::new(),
        }
    }

    /// Counts one measured call that took `latency`, in `step` of a stepped
    /// schedule.
    pub(super) fn record(
        &mut self,
        latency: Duration,
        result: Result<Answer, Status>,
        step: Option<usize>,
        at: Duration,
    ) {
        if let Some(calls) = &mut self.calls {
            calls.push(CallDetail {
                worker: self.worker,
                at,
                latency,
                code: result
                    .as_ref()
                    .map_or_else(Status::code, |_| tonic::Code::Ok),
            });
        }
        let micros = latency.as_micros().clamp(1, u128::from(MAX_LATENCY_MICROS)) as u64;
        if let Some(step) = step {
            let step = self.steps.entry(step).or_insert_with(|| StepTally {
                calls: 0,
                errors: 0,
                latency: latency_histogram(),
            });
            step.calls += 1;
            match &result {
                Ok(_) => step
                    .latency
                    .record(micros)
                    .expect("clamped into the bounds"),
                Err(_) => step.errors += 1,
            }
        }
        match result {
            Ok(answer) => {
                self.latency
                    .record(micros)
                    .expect("clamped into the bounds");
                self.messages += answer.messages;
                if let Some(load) = answer.load {
                    self.loads.insert(answer.instance.clone(), *load);
                }
                // Looked up before inserting: the key is allocated once per instance.
                match self.instances.get_mut(&answer.instance) {
                    Some(count) => *count += 1,
                    None => {
                        self.instances.insert(answer.instance, 1);
                    }
                }
            }
            Err(status) => {
                *self
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
        }
    }

    pub(super) fn merge(&mut self, other: Tally) {
        self.latency.add(other.latency).expect("same bounds");
        self.messages += other.messages;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        for (instance, count) in other.instances {
            *self.instances.entry(instance).or_default() += count;
        }
        self.loads.extend(other.loads);
        if let (Some(calls), Some(others)) = (&mut self.calls, other.calls) {
            calls.extend(others);
        }
        for (index, step) in other.steps {
            match self.steps.get_mut(&index) {
                Some(mine) => {
                    mine.calls += step.calls;
                    mine.errors += step.errors;
                    mine.latency.add(step.latency).expect("same bounds");
                }
                None => {
                    self.steps.insert(index, step);
                }
            }
        }
    }
}
