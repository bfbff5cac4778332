//! The report printed from what a load measured: text or JSON, CSV, and the
//! percentile summary the other reports share.

use std::fmt::Write;
use std::time::Duration;

use echo_client::CallStats;
use hdrhistogram::Histogram;
use serde_json::json;

use super::args::BenchArgs;
use super::gate::{self, Measure, Verdict};
use super::schedule::Rate;
use super::tally::{CallDetail, Tally};

/// Successful calls per second: `measured` calls in `elapsed`, less those
/// that failed.
pub(super) fn successful_rate(tally: &Tally, measured: u64, elapsed: Duration) -> f64 {
    (measured - tally.errors.values().sum::<u64>()) as f64 / elapsed.as_secs_f64()
}

/// The load shape, in words.
pub(super) fn describe(args: &BenchArgs) -> String {
    describe_over(args, &args.wire)
}

/// The load shape, in words, over `wire` (a protocol and HTTP version, or
/// a matrix's "each").
pub(super) fn describe_over(args: &BenchArgs, wire: &str) -> String {
    let what = match (&args.call, &args.method) {
        (Some(call), _) => call.clone(),
        (None, Some(path)) => format!("{:?} {path}", args.rpc),
        (None, None) => format!("{:?}", args.rpc),
    };
    let every = humantime::format_duration(args.step_interval);
    let concurrency = match (args.concurrency_step, args.concurrency_max) {
        (Some(step), Some(max)) => format!("{} (+{step} every {every} to {max})", args.concurrency),
        _ => args.concurrency.to_string(),
    };
    let schedule = match args.rate() {
        None => "closed loop".to_owned(),
        Some(Rate::Constant(rps)) => format!("open loop at {rps}/s"),
        Some(Rate::Steps {
            start, step, max, ..
        }) => format!("open loop at {start}/s, +{step}/s every {every} up to {max}/s"),
        Some(Rate::Ramp { from, to, .. }) => format!("open loop ramping from {from}/s to {to}/s"),
    };
    format!(
        "{what} over {} connection(s) x {concurrency} concurrent, {schedule}, {wire}",
        args.connections,
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

/// How a report is given: as text, as a JSON line, or as JSON kept for a
/// report of several runs.
pub(super) enum Json<'a> {
    Off,
    Print,
    Into(&'a mut Vec<serde_json::Value>),
}

/// The `--assert` verdicts of a run of `measured` calls in `elapsed`, and of
/// each of its steps.
pub(super) fn verdicts(
    args: &BenchArgs,
    tally: &Tally,
    measured: u64,
    elapsed: Duration,
) -> Vec<Verdict> {
    if args.assertions.is_empty() {
        return Vec::new();
    }
    let errors = tally.errors.values().sum::<u64>();
    let run = Measure {
        latency: &tally.latency,
        calls: measured,
        errors_by_code: Some(&tally.errors),
        errors: Some(errors),
        rps: successful_rate(tally, measured, elapsed),
    };
    let steps: Vec<(usize, Measure<'_>)> = step_rows(args, tally, elapsed)
        .into_iter()
        .map(|step| {
            let measure = Measure {
                latency: step.latency,
                calls: step.calls,
                errors_by_code: None,
                errors: Some(step.errors),
                rps: step.calls_per_second,
            };
            (step.number, measure)
        })
        .collect();
    gate::check(&args.assertions, &run, &steps)
}

/// One step of a stepped schedule, as reported.
pub(super) struct StepRow<'a> {
    /// From 1.
    pub(super) number: usize,
    /// Seconds into the measured part.
    pub(super) start: f64,
    pub(super) end: f64,
    /// The open loop's rate during the step.
    pub(super) target_rps: Option<f64>,
    /// Concurrent calls in all (every connection's).
    pub(super) concurrency: usize,
    pub(super) calls: u64,
    pub(super) errors: u64,
    pub(super) calls_per_second: f64,
    pub(super) latency: &'a Histogram<u64>,
}

/// The steps `tally` measured, over `elapsed` of measured time.
pub(super) fn step_rows<'a>(
    args: &BenchArgs,
    tally: &'a Tally,
    elapsed: Duration,
) -> Vec<StepRow<'a>> {
    let every = args.step_interval.as_secs_f64();
    let rate = args.rate();
    tally
        .steps
        .iter()
        .map(|(&index, step)| {
            let start = every * index as f64;
            // The last step may be cut short by the end of the run.
            let end = (start + every).min(elapsed.as_secs_f64().max(start + 0.001));
            StepRow {
                number: index + 1,
                start,
                end,
                target_rps: rate.map(|rate| rate.of_step(index)),
                concurrency: args.connections * args.concurrency_of_step(index),
                calls: step.calls,
                errors: step.errors,
                calls_per_second: (step.calls - step.errors) as f64 / (end - start),
                latency: &step.latency,
            }
        })
        .collect()
}

/// The report as CSV: a row per step of a stepped schedule, then one for the
/// whole run (`measured` calls in `elapsed`).
/// With assertions, a second table follows after a blank line: each
/// verdict (`assertion,step,measured,held`).
pub(super) fn csv(
    args: &BenchArgs,
    tally: &Tally,
    measured: u64,
    elapsed: Duration,
    verdicts: &[Verdict],
) -> String {
    let mut out = String::from(
        "step,start_s,end_s,target_rps,concurrency,calls,errors,calls_per_second,\
         p50_ms,p90_ms,p99_ms,p99.9_ms,max_ms\n",
    );
    let mut row = |step: &str,
                   start: f64,
                   end: f64,
                   target: Option<f64>,
                   concurrency: usize,
                   calls: u64,
                   errors: u64,
                   rate: f64,
                   h: &Histogram<u64>| {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{step},{start:.3},{end:.3},{},{concurrency},{calls},{errors},{rate:.1},{},{},{},{},{}",
            target.map_or(String::new(), |rate| format!("{rate}")),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
        );
    };
    for step in step_rows(args, tally, elapsed) {
        row(
            &step.number.to_string(),
            step.start,
            step.end,
            step.target_rps,
            step.concurrency,
            step.calls,
            step.errors,
            step.calls_per_second,
            step.latency,
        );
    }
    let errors = tally.errors.values().sum::<u64>();
    let seconds = elapsed.as_secs_f64();
    let constant_rate = match args.rate() {
        Some(Rate::Constant(rate)) => Some(rate),
        _ => None,
    };
    row(
        "all",
        0.0,
        seconds,
        constant_rate,
        args.connections * args.concurrency,
        measured,
        errors,
        successful_rate(tally, measured, elapsed),
        &tally.latency,
    );
    if !verdicts.is_empty() {
        out.push_str("\nassertion,step,measured,held\n");
        for verdict in verdicts {
            let _ = writeln!(
                out,
                "\"{}\",{},{},{}",
                verdict.assertion.replace('"', "\"\""),
                verdict
                    .step
                    .map_or("all".to_owned(), |step| step.to_string()),
                verdict
                    .measured
                    .map_or(String::new(), |value| value.to_string()),
                verdict.held,
            );
        }
    }
    out
}

/// Every measured call as CSV, in the order they were scheduled.
pub(super) fn calls_csv(calls: &[CallDetail]) -> String {
    let mut sorted: Vec<&CallDetail> = calls.iter().collect();
    sorted.sort_by_key(|call| call.at);
    let mut out = String::from("worker,scheduled_ms,latency_ms,status\n");
    for call in sorted {
        let _ = writeln!(
            out,
            "{},{:.3},{:.3},{}",
            call.worker,
            call.at.as_secs_f64() * 1000.0,
            call.latency.as_secs_f64() * 1000.0,
            echo_wire::codes::name(call.code as i32),
        );
    }
    out
}

/// The mean attempts per call under a retry policy (none without one).
fn mean_attempts(stats: &CallStats) -> Option<f64> {
    let attempts = stats.attempts();
    let calls: u64 = attempts.iter().map(|&(_, calls)| calls).sum();
    let made: u64 = attempts
        .iter()
        .map(|&(attempts, calls)| u64::from(attempts) * calls)
        .sum();
    (calls > 0).then(|| made as f64 / calls as f64)
}

/// What a run measured besides its calls, when asked to.
pub(super) struct Extra {
    /// Each phase's summary (`--timing`): as JSON, and as text lines.
    pub(super) phases: Option<(serde_json::Value, Vec<String>)>,
    /// Bytes sent and received on the wire.
    pub(super) wire_bytes: Option<(u64, u64)>,
}

/// Prints the report: `measured` calls in `elapsed` (and the retries `stats`
/// counted), as text or one JSON object.
#[expect(clippy::too_many_arguments, reason = "one run's every measurement")]
pub(super) fn print(
    args: &BenchArgs,
    tally: &Tally,
    extra: Extra,
    measured: u64,
    elapsed: Duration,
    stats: &CallStats,
    verdicts: &[Verdict],
    json: Json<'_>,
) {
    let seconds = elapsed.as_secs_f64();
    let rate = successful_rate(tally, measured, elapsed);
    let message_rate = tally.messages as f64 / seconds;
    let (latency, latency_text) = latency_summary(&tally.latency);
    if let Json::Print | Json::Into(_) = json {
        let mut report = json!({
            "rpc": format!("{:?}", args.rpc),
            "call": args.call,
            "wire": args.wire,
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
            "attempts": stats
                .attempts()
                .iter()
                .map(|(attempts, calls)| (attempts.to_string(), json!(calls)))
                .collect::<serde_json::Map<_, _>>(),
            "attempts_per_call": mean_attempts(stats),
            "instances": tally.instances,
            "latency_ms": latency,
            "steps": step_rows(args, tally, elapsed)
                .iter()
                .map(|row| json!({
                    "step": row.number,
                    "start_s": row.start,
                    "end_s": row.end,
                    "target_rps": row.target_rps,
                    "concurrency": row.concurrency,
                    "calls": row.calls,
                    "errors": row.errors,
                    "calls_per_second": row.calls_per_second,
                    "latency_ms": latency_summary(row.latency).0,
                }))
                .collect::<Vec<_>>(),
        });
        if let Some((phases, _)) = extra.phases {
            report["phases_ms"] = phases;
        }
        if let Some((sent, received)) = extra.wire_bytes {
            report["wire_bytes"] = json!({ "sent": sent, "received": received });
        }
        if !verdicts.is_empty() {
            report["assertions"] = verdicts.iter().map(Verdict::json).collect();
            report["passed"] = verdicts.iter().all(|verdict| verdict.held).into();
        }
        // Only servers that report load (ORCA) add their reports.
        if !tally.loads.is_empty() {
            report["reported_load"] = tally
                .loads
                .iter()
                .map(|(instance, load)| (instance.clone(), crate::output::load_report_json(load)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        match json {
            Json::Into(reports) => reports.push(report),
            _ => out!("{report}"),
        }
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
    if let Some(mean) = mean_attempts(stats) {
        let counts: Vec<String> = stats
            .attempts()
            .iter()
            .map(|(attempts, calls)| format!("{attempts}: {calls}"))
            .collect();
        out!(
            "  attempts per call: {mean:.3} on average; calls by attempts made: {}",
            counts.join(", ")
        );
    }
    if tally.instances.len() > 1 {
        out!("  answered by: {:?}", tally.instances);
    }
    for (instance, report) in &tally.loads {
        let calls = tally.instances.get(instance).copied().unwrap_or_default();
        out!(
            "  {instance}: {calls} answers, reported load {}",
            crate::output::load_report_json(report)
        );
    }
    for row in step_rows(args, tally, elapsed) {
        let ms = |q: f64| row.latency.value_at_quantile(q) as f64 / 1000.0;
        out!(
            "  step {} ({:.0}-{:.0}s, {}concurrency {}): {} calls, {:.0} calls/s, {} errors, p50 {:.3} p99 {:.3} ms",
            row.number,
            row.start,
            row.end,
            row.target_rps
                .map_or(String::new(), |rate| format!("{rate:.0}/s, ")),
            row.concurrency,
            row.calls,
            row.calls_per_second,
            row.errors,
            ms(0.5),
            ms(0.99),
        );
    }
    if let Some((sent, received)) = extra.wire_bytes {
        let per_call = |bytes: u64| bytes as f64 / measured.max(1) as f64;
        out!(
            "  on the wire: {sent} bytes sent, {received} received ({:.0} and {:.0} per call, connecting and warmup included)",
            per_call(sent),
            per_call(received)
        );
    }
    for line in extra.phases.iter().flat_map(|(_, lines)| lines) {
        out!("  {line}");
    }
    for line in gate::lines(verdicts) {
        out!("  {line}");
    }
}
