//! The run's latency histogram on disk (or stdout), losslessly, for `bench
//! merge`: HdrHistogram's standard interval log (V2 deflate encoding, readable
//! by HdrHistogram's own tools), one interval per run, values in microseconds.
//! A merged file may hold other output around the log (a worker's report, as
//! `kubectl logs` gives both): only the log's lines are read.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use serde_json::json;

use super::args::MergeArgs;
use super::gate;
use super::report::latency_summary;
use crate::output::Output;

/// One run's interval: its histogram and how long it measured.
pub(super) struct Interval {
    pub(super) latency: Histogram<u64>,
    pub(super) duration: Duration,
}

/// Writes `latency` (measured over `elapsed`, from `started`) to `path`, or
/// to stdout for `-`.
pub(super) fn write(
    path: &Path,
    latency: &Histogram<u64>,
    started: SystemTime,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let mut log = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    IntervalLogWriterBuilder::new()
        .add_comment(
            "echo-client bench --histogram-out: latency of successful calls, in microseconds",
        )
        .with_start_time(started)
        .begin_log_with(&mut log, &mut serializer)?
        .write_histogram(latency, Duration::ZERO, elapsed, None)
        .map_err(|err| anyhow::anyhow!("cannot encode the histogram: {err:?}"))?;
    if path == Path::new("-") {
        use std::io::Write;
        return std::io::stdout()
            .lock()
            .write_all(&log)
            .context("cannot write the histogram to stdout");
    }
    std::fs::write(path, log).with_context(|| format!("cannot write {}", path.display()))
}

/// Whether `line` belongs to an interval log: a comment or header (`#`), the
/// legend, or an interval (`Tag=...` or a start time).
fn is_log_line(line: &str) -> bool {
    line.starts_with('#')
        || line.starts_with("\"StartTimestamp\"")
        || line.starts_with("Tag=")
        || line.starts_with(|c: char| c.is_ascii_digit())
}

/// Every interval in the log at `path`.
pub(super) fn read(path: &Path) -> anyhow::Result<Vec<Interval>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let log: String = text
        .lines()
        .filter(|line| is_log_line(line))
        .flat_map(|line| [line, "\n"])
        .collect();
    let mut intervals = Vec::new();
    for entry in IntervalLogIterator::new(log.as_bytes()) {
        let entry = entry
            .map_err(|err| anyhow::anyhow!("{} is not a histogram log: {err:?}", path.display()))?;
        if let LogEntry::Interval(interval) = entry {
            let encoded = base64::engine::general_purpose::STANDARD
                .decode(interval.encoded_histogram())
                .with_context(|| format!("{}: a histogram is not base64", path.display()))?;
            let latency = Deserializer::new()
                .deserialize(&mut encoded.as_slice())
                .map_err(|err| {
                    anyhow::anyhow!("{}: a histogram does not decode: {err:?}", path.display())
                })?;
            intervals.push(Interval {
                latency,
                duration: interval.duration(),
            });
        }
    }
    if intervals.is_empty() {
        bail!("{} holds no histogram", path.display());
    }
    Ok(intervals)
}

/// `echo-client bench merge FILE...`: one report of every worker's calls,
/// with exact percentiles. Workers run side by side, so their rates add up.
pub(super) fn merge(args: &MergeArgs, out: Output) -> anyhow::Result<std::process::ExitCode> {
    if let Some(assertion) = args
        .assertions
        .iter()
        .find(|assertion| assertion.needs_errors())
    {
        eprintln!(
            "error: --assert {assertion}: the histograms hold successful calls only; check error rates and codes on each worker's run"
        );
        return Ok(std::process::ExitCode::from(2));
    }
    let mut merged: Option<Histogram<u64>> = None;
    let mut rate = 0.0;
    let mut intervals = 0;
    for path in &args.files {
        for interval in read(path)? {
            intervals += 1;
            let seconds = interval.duration.as_secs_f64();
            if seconds > 0.0 {
                rate += interval.latency.len() as f64 / seconds;
            }
            match &mut merged {
                Some(merged) => merged
                    .add(&interval.latency)
                    .with_context(|| format!("{} does not fit the others", path.display()))?,
                None => merged = Some(interval.latency),
            }
        }
    }
    let merged = merged.context("no histogram to merge")?;
    let (latency_json, latency_text) = latency_summary(&merged);
    let measure = gate::Measure {
        latency: &merged,
        calls: merged.len(),
        errors_by_code: None,
        errors: None,
        rps: rate,
    };
    let verdicts = gate::check(&args.assertions, &measure, &[]);
    if out.json {
        let mut report = json!({
            "histograms": intervals,
            "calls": merged.len(),
            "calls_per_second": rate,
            "latency_ms": latency_json,
        });
        if !verdicts.is_empty() {
            report["assertions"] = verdicts.iter().map(gate::Verdict::json).collect();
            report["passed"] = verdicts.iter().all(|verdict| verdict.held).into();
        }
        out!("{report}");
    } else {
        out!(
            "{intervals} histogram(s) merged: {} successful calls, {rate:.0} calls/s",
            merged.len()
        );
        out!("  {latency_text}");
        for line in gate::lines(&verdicts) {
            out!("  {line}");
        }
    }
    Ok(std::process::ExitCode::from(gate::status(&verdicts)))
}
