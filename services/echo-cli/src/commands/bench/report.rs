//! What the load measured ([`Tally`]: an HDR latency histogram, errors by
//! code, answers by instance) and the report printed from it.

use std::collections::BTreeMap;
use std::time::Duration;

use echo_client::CallStats;
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::Status;

use super::BenchArgs;
use super::targets::Answer;

/// Largest latency recorded, in microseconds; longer ones count as this.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// What one worker (or, merged, the whole run) measured.
pub(super) struct Tally {
    /// Microseconds per call (per message for bidi).
    pub(super) latency: Histogram<u64>,
    /// Messages each way that measured calls carried.
    messages: u64,
    pub(super) errors: BTreeMap<String, u64>,
    /// Answered calls (bidi: messages) per server instance that answered.
    instances: BTreeMap<String, u64>,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
                .expect("valid histogram bounds"),
            messages: 0,
            errors: BTreeMap::new(),
            instances: BTreeMap::new(),
        }
    }

    /// Counts one measured call that took `latency`.
    pub(super) fn record(&mut self, latency: Duration, result: Result<Answer, Status>) {
        match result {
            Ok(answer) => {
                let micros = latency.as_micros().clamp(1, u128::from(MAX_LATENCY_MICROS)) as u64;
                self.latency
                    .record(micros)
                    .expect("clamped into the bounds");
                self.messages += answer.messages;
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
    }
}

/// The load shape, in words.
pub(super) fn describe(args: &BenchArgs) -> String {
    let what = match (&args.call, &args.method) {
        (Some(call), _) => call.clone(),
        (None, Some(path)) => format!("{:?} {path}", args.rpc),
        (None, None) => format!("{:?}", args.rpc),
    };
    format!(
        "{what} over {} connection(s) x {} concurrent, {}",
        args.connections,
        args.concurrency,
        args.rps.map_or("closed loop".to_owned(), |rps| format!(
            "open loop at {rps}/s"
        )),
    )
}

/// The latency of `h` (microseconds) in milliseconds, min, mean, max and
/// percentiles: as JSON, and as the report's text line.
pub(super) fn latency_summary(
    h: &Histogram<u64>,
) -> (serde_json::Map<String, serde_json::Value>, String) {
    let ms = |micros: u64| micros as f64 / 1000.0;
    let percentiles = [50.0, 90.0, 99.0, 99.9].map(|q| (q, ms(h.value_at_quantile(q / 100.0))));
    let json = [
        ("min".to_owned(), json!(ms(h.min()))),
        ("mean".to_owned(), json!(h.mean() / 1000.0)),
        ("max".to_owned(), json!(ms(h.max()))),
    ]
    .into_iter()
    .chain(percentiles.iter().map(|(q, v)| (format!("p{q}"), json!(v))))
    .collect();
    let text = format!(
        "latency ms: min {:.3}  mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(h.min()),
        h.mean() / 1000.0,
        percentiles[0].1,
        percentiles[1].1,
        percentiles[2].1,
        percentiles[3].1,
        ms(h.max()),
    );
    (json, text)
}

/// Prints the report: `measured` calls in `elapsed` (and the retries `stats`
/// counted), as text or one JSON object.
pub(super) fn print(
    args: &BenchArgs,
    tally: &Tally,
    measured: u64,
    elapsed: Duration,
    stats: &CallStats,
    json: bool,
) {
    let seconds = elapsed.as_secs_f64();
    let rate = (measured - tally.errors.values().sum::<u64>()) as f64 / seconds;
    let message_rate = tally.messages as f64 / seconds;
    let (latency, latency_text) = latency_summary(&tally.latency);
    if json {
        out!(
            "{}",
            json!({
                "rpc": format!("{:?}", args.rpc),
                "call": args.call,
                "connections": args.connections,
                "concurrency": args.concurrency,
                "open_loop_rps": args.rps,
                "calls": measured,
                "seconds": seconds,
                "calls_per_second": rate,
                "messages_per_second": message_rate,
                "errors": tally.errors,
                "transparent_retries": stats.transparent_retries(),
                "retries": stats.retries(),
                "instances": tally.instances,
                "latency_ms": latency,
            })
        );
        return;
    }
    out!("{}: {measured} calls in {seconds:.2}s", describe(args));
    out!("  {rate:.0} calls/s, {message_rate:.0} messages/s");
    out!("  {latency_text}");
    if !tally.errors.is_empty() {
        out!("  errors: {:?}", tally.errors);
    }
    if stats.transparent_retries() + stats.retries() > 0 {
        out!(
            "  sent again: {} transparently (never processed by the server), {} by the retry policy",
            stats.transparent_retries(),
            stats.retries()
        );
    }
    if tally.instances.len() > 1 {
        out!("  answered by: {:?}", tally.instances);
    }
}
