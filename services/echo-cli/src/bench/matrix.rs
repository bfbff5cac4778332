//! A protocol matrix's comparison: one row per protocol and HTTP version
//! (rate, p50 and p99, errors, assertions), as a text table, one JSON object
//! (`runs`: each run's own report; `skipped`: what could not run, and why)
//! and an HTML page.

use std::fmt::Write;

use serde_json::{Value, json};

use super::args::BenchArgs;
use super::gate::Verdict;
use super::{Measured, plot, report};
use crate::output::Output;

/// One combination of the matrix.
pub(super) struct Row {
    wire: String,
    outcome: Outcome,
}

enum Outcome {
    Ran {
        calls: u64,
        calls_per_second: f64,
        p50_ms: f64,
        p99_ms: f64,
        errors: u64,
        /// Whether every assertion held (`None`: none given).
        passed: Option<bool>,
        /// The latency percentile plot of the run.
        plot: String,
    },
    /// It could not run (an invalid combination), or its load failed.
    NotRun { reason: String, failed: bool },
}

impl Row {
    pub(super) fn ran(wire: String, measured: &Measured, verdicts: &[Verdict]) -> Self {
        let h = &measured.tally.latency;
        let errors = measured.tally.errors.values().sum::<u64>();
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let outcome = Outcome::Ran {
            calls: measured.calls,
            calls_per_second: (measured.calls - errors) as f64 / measured.elapsed.as_secs_f64(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            errors,
            passed: (!verdicts.is_empty()).then(|| verdicts.iter().all(|verdict| verdict.held)),
            plot: plot::svg(h, &wire),
        };
        Self { wire, outcome }
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
                Outcome::Ran { .. } => None,
            })
            .collect();
        out!("{}", json!({ "runs": reports, "skipped": not_run }));
        return;
    }
    let ran = rows
        .iter()
        .filter(|row| matches!(row.outcome, Outcome::Ran { .. }))
        .count();
    out!("protocol matrix: {ran} of {} combinations ran", rows.len());
    out!(
        "  {:<26} {:>8} {:>10} {:>9} {:>9} {:>7}",
        "protocol and HTTP",
        "calls",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "errors"
    );
    for row in rows {
        match &row.outcome {
            Outcome::Ran {
                calls,
                calls_per_second,
                p50_ms,
                p99_ms,
                errors,
                passed,
                ..
            } => {
                let gate = match passed {
                    Some(true) => "  assertions held",
                    Some(false) => "  ASSERTIONS FAILED",
                    None => "",
                };
                out!(
                    "  {:<26} {calls:>8} {calls_per_second:>10.1} {p50_ms:>9.3} {p99_ms:>9.3} {errors:>7}{gate}",
                    row.wire
                );
            }
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
    let mut args_shown = args.clone();
    args_shown.wire = "each protocol and HTTP version".to_owned();
    let title = plot::escape(&report::describe(&args_shown));
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>echo-client bench: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th {{ background: #f3f3f3; }}
td:first-child {{ text-align: left; }}
</style></head><body>
<h1>{title}</h1>
<h2>Protocol matrix</h2>
<table id="matrix"><tr><th>protocol and HTTP</th><th>calls</th><th>calls/s</th><th>p50 ms</th><th>p99 ms</th><th>errors</th><th>assertions</th></tr>
"#
    );
    for row in rows {
        let wire = plot::escape(&row.wire);
        match &row.outcome {
            Outcome::Ran {
                calls,
                calls_per_second,
                p50_ms,
                p99_ms,
                errors,
                passed,
                ..
            } => {
                let gate = match passed {
                    Some(true) => "held",
                    Some(false) => "<strong>failed</strong>",
                    None => "",
                };
                let _ = writeln!(
                    out,
                    "<tr><td>{wire}</td><td>{calls}</td><td>{calls_per_second:.1}</td><td>{p50_ms:.3}</td><td>{p99_ms:.3}</td><td>{errors}</td><td>{gate}</td></tr>"
                );
            }
            Outcome::NotRun { reason, failed } => {
                let what = if *failed { "failed" } else { "skipped" };
                let _ = writeln!(
                    out,
                    "<tr class=\"{what}\"><td>{wire}</td><td colspan=\"6\">{what}: {}</td></tr>",
                    plot::escape(reason)
                );
            }
        }
    }
    out.push_str("</table>\n");
    for row in rows {
        if let Outcome::Ran { plot, .. } = &row.outcome {
            let _ = writeln!(out, "<h2>{}</h2>\n{plot}", plot::escape(&row.wire));
        }
    }
    out.push_str("</body></html>\n");
    out
}
