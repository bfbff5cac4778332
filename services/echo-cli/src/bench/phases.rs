//! `bench --timing`: each connection's phases (resolve, TCP connect, TLS
//! handshake, HTTP setup) and each call's time to its response headers and
//! first message, as histograms beside the total latency.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use echo_client::timing::{CallTiming, Phase, Timeline};
use hdrhistogram::Histogram;
use serde_json::{Map, Value};

use super::report::latency_summary;
use super::tally::latency_histogram;

/// The call phases measured from the call's start.
const CALL_PHASES: [&str; 2] = ["response headers", "first message"];

/// Histograms (microseconds) of each phase, in the order the phases come.
#[derive(Debug, Default)]
pub(super) struct Phases {
    connection: Vec<(&'static str, Histogram<u64>)>,
    call: Vec<(&'static str, Histogram<u64>)>,
}

fn record(
    histograms: &mut Vec<(&'static str, Histogram<u64>)>,
    name: &'static str,
    took: Duration,
) {
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
    let at = match histograms.iter().position(|(known, _)| *known == name) {
        Some(at) => at,
        None => {
            histograms.push((name, latency_histogram()));
            histograms.len() - 1
        }
    };
    histograms[at].1.saturating_record(micros);
}

/// A timeline whose every call goes into the returned phases.
pub(super) fn timeline() -> (Timeline, Arc<Mutex<Phases>>) {
    let phases = Arc::new(Mutex::new(Phases::default()));
    let sink = Arc::clone(&phases);
    let timeline = Timeline::with_sink(move |call: CallTiming| {
        let mut phases = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for name in CALL_PHASES {
            if let Some(took) = call.since_call_start(name) {
                record(&mut phases.call, name, took);
            }
        }
    });
    (timeline, phases)
}

impl Phases {
    /// Adds every connection `timeline` opened.
    pub(super) fn add_connections(&mut self, connections: &[Vec<Phase>]) {
        for phase in connections.iter().flatten() {
            record(&mut self.connection, phase.name, phase.duration());
        }
    }

    /// `{"connection": {PHASE: summary}, "call": {PHASE: summary}}`, in ms.
    pub(super) fn json(&self) -> Value {
        let summaries = |histograms: &[(&'static str, Histogram<u64>)]| {
            histograms
                .iter()
                .map(|(name, histogram)| {
                    let mut summary = latency_summary(histogram).0;
                    summary.insert("count".to_owned(), histogram.len().into());
                    ((*name).to_owned(), Value::Object(summary))
                })
                .collect::<Map<_, _>>()
        };
        serde_json::json!({
            "connection": summaries(&self.connection),
            "call": summaries(&self.call),
        })
    }

    /// One text line per phase: count, p50, p99 and max in ms.
    pub(super) fn lines(&self) -> Vec<String> {
        let line = |scope: &str, name: &str, h: &Histogram<u64>| {
            let ms = |micros: u64| micros as f64 / 1000.0;
            format!(
                "{scope} {name:<17} {:>6}x  p50 {:.3}  p99 {:.3}  max {:.3} ms",
                h.len(),
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max())
            )
        };
        let connection = self
            .connection
            .iter()
            .map(|(name, h)| line("connection", name, h));
        let call = self.call.iter().map(|(name, h)| line("call to", name, h));
        connection.chain(call).collect()
    }
}
