//! A protocol matrix's comparison: one row per protocol and HTTP version
//! (rate, p50 and p99, errors, bytes on the wire per call, assertions), as a text table, one JSON object
//! (`runs`: each run's own report; `skipped`: what could not run, and why)
//! and an HTML page.

use std::fmt::Write;

use serde_json::{Value, json};

use super::args::BenchArgs;
use super::gate::Verdict;
use super::{Measured, html, plot, report};
use crate::output::Output;

/// One combination of the matrix.
pub(super) struct Row {
    wire: String,
    outcome: Outcome,
}

enum Outcome {
    Ran(Summary),
    /// It could not run (an invalid combination), or its load failed.
    NotRun {
        reason: String,
        failed: bool,
    },
}

/// What a combination's run measured, as the comparison shows it.
struct Summary {
    calls: u64,
    calls_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// Bytes sent and received on the wire per call (connecting and warmup
    /// included).
    bytes_per_call: (f64, f64),
    /// Whether every assertion held (`None`: none given).
    passed: Option<bool>,
    /// The latency percentile plot, for the HTML page (when one is written).
    plot: Option<String>,
}

impl Summary {
    /// The assertions' column, marked up for HTML or not.
    fn gate(&self, html: bool) -> &'static str {
        match (self.passed, html) {
            (None, _) => "",
            (Some(true), false) => "  assertions held",
            (Some(false), false) => "  ASSERTIONS FAILED",
            (Some(true), true) => "held",
            (Some(false), true) => "<strong>failed</strong>",
        }
    }
}

impl Row {
    /// A combination that ran; its plot drawn when `plot` (for `--html`).
    pub(super) fn ran(wire: String, measured: &Measured, verdicts: &[Verdict], plot: bool) -> Self {
        let h = &measured.tally.latency;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let summary = Summary {
            calls: measured.calls,
            calls_per_second: report::successful_rate(
                &measured.tally,
                measured.calls,
                measured.elapsed,
            ),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            errors: measured.tally.errors.values().sum(),
            bytes_per_call: measured.wire_bytes.map_or((0.0, 0.0), |(sent, received)| {
                let calls = measured.calls.max(1) as f64;
                (sent as f64 / calls, received as f64 / calls)
            }),
            passed: (!verdicts.is_empty()).then(|| verdicts.iter().all(|verdict| verdict.held)),
            plot: plot.then(|| plot::svg(h, &wire)),
        };
        Self {
            wire,
            outcome: Outcome::Ran(summary),
        }
    }

    /// A combination that cannot run, and why.
    pub(super) fn skipped(wire: String, reason: String) -> Self {
        Self {
            wire,
            outcome: Outcome::NotRun {
                reason,
                failed: false,
            },
        }
    }

    /// A combination whose load failed (it could not connect), and why.
    pub(super) fn failed(wire: String, reason: String) -> Self {
        Self {
            wire,
            outcome: Outcome::NotRun {
                reason,
                failed: true,
            },
        }
    }
}

/// The comparison: a table after the runs' own reports, or (`--json`) one
/// object holding those reports.
pub(super) fn report(rows: &[Row], reports: Vec<Value>, out: Output) {
    if out.json {
        let not_run: Vec<Value> = rows
            .iter()
            .filter_map(|row| match &row.outcome {
                Outcome::NotRun { reason, failed } => Some(json!({
                    "wire": row.wire,
                    "reason": reason,
                    "failed": failed,
                })),
                Outcome::Ran(_) => None,
            })
            .collect();
        out!("{}", json!({ "runs": reports, "skipped": not_run }));
        return;
    }
    let ran = rows
        .iter()
        .filter(|row| matches!(row.outcome, Outcome::Ran(_)))
        .count();
    out!("protocol matrix: {ran} of {} combinations ran", rows.len());
    out!(
        "  {:<26} {:>8} {:>10} {:>9} {:>9} {:>7} {:>11} {:>11}",
        "protocol and HTTP",
        "calls",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "B/call out",
        "B/call in"
    );
    for row in rows {
        match &row.outcome {
            Outcome::Ran(run) => out!(
                "  {:<26} {:>8} {:>10.1} {:>9.3} {:>9.3} {:>7} {:>11.0} {:>11.0}{}",
                row.wire,
                run.calls,
                run.calls_per_second,
                run.p50_ms,
                run.p99_ms,
                run.errors,
                run.bytes_per_call.0,
                run.bytes_per_call.1,
                run.gate(false)
            ),
            Outcome::NotRun { reason, failed } => {
                let what = if *failed { "failed" } else { "skipped" };
                out!("  {:<26} {what}: {reason}", row.wire);
            }
        }
    }
}

/// One self-contained page comparing the runs: the table, and each run's
/// latency percentile plot.
pub(super) fn html(args: &BenchArgs, rows: &[Row]) -> String {
    let mut out = html::head(&plot::escape(&report::describe_over(
        args,
        "each protocol and HTTP version",
    )));
    out.push_str(
        "<h2>Protocol matrix</h2>\n<table id=\"matrix\"><tr><th>protocol and HTTP</th><th>calls</th><th>calls/s</th><th>p50 ms</th><th>p99 ms</th><th>errors</th><th>bytes/call out</th><th>bytes/call in</th><th>assertions</th></tr>\n",
    );
    for row in rows {
        let wire = plot::escape(&row.wire);
        match &row.outcome {
            Outcome::Ran(run) => {
                let _ = writeln!(
                    out,
                    "<tr><td>{wire}</td><td>{}</td><td>{:.1}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{}</td></tr>",
                    run.calls,
                    run.calls_per_second,
                    run.p50_ms,
                    run.p99_ms,
                    run.errors,
                    run.bytes_per_call.0,
                    run.bytes_per_call.1,
                    run.gate(true)
                );
            }
            Outcome::NotRun { reason, failed } => {
                let what = if *failed { "failed" } else { "skipped" };
                let _ = writeln!(
                    out,
                    "<tr class=\"{what}\"><td>{wire}</td><td colspan=\"8\">{what}: {}</td></tr>",
                    plot::escape(reason)
                );
            }
        }
    }
    out.push_str("</table>\n");
    for row in rows {
        if let Outcome::Ran(Summary {
            plot: Some(plot), ..
        }) = &row.outcome
        {
            let _ = writeln!(out, "<h2>{}</h2>\n{plot}", plot::escape(&row.wire));
        }
    }
    out.push_str("</body></html>\n");
    out
}
