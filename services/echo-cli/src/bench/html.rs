//! `bench --html`: the report as one self-contained page (no script, no
//! outside resource, so it opens offline): summary, latency percentile plot,
//! latency histogram, steps and errors by code.

use std::fmt::Write;
use std::time::Duration;

use super::args::BenchArgs;
use super::gate::Verdict;
use super::plot;
use super::report;
use super::tally::Tally;

/// The start of a page titled `title` (escaped), through its heading: no
/// script, nothing fetched, so that it opens offline.
pub(super) fn head(title: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>echo-client bench: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th {{ background: #f3f3f3; }}
</style></head><body>
<h1>{title}</h1>
"#
    )
}

/// The page of a run: `measured` calls in `elapsed`.
pub(super) fn page(
    args: &BenchArgs,
    tally: &Tally,
    measured: u64,
    elapsed: Duration,
    verdicts: &[Verdict],
) -> String {
    let title = plot::escape(&report::describe(args));
    let seconds = elapsed.as_secs_f64();
    let errors = tally.errors.values().sum::<u64>();
    let h = &tally.latency;
    let ms = |micros: u64| format!("{:.3}", micros as f64 / 1000.0);
    let mut out = String::new();
    out.push_str(&head(&title));
    let _ = write!(
        out,
        r#"<h2>Summary</h2>
<table id="summary">
<tr><th>calls</th><td>{measured}</td></tr>
<tr><th>seconds</th><td>{seconds:.2}</td></tr>
<tr><th>successful calls/s</th><td>{:.1}</td></tr>
<tr><th>errors</th><td>{errors}</td></tr>
<tr><th>latency ms: min / mean / max</th><td>{} / {:.3} / {}</td></tr>
<tr><th>p50 / p90 / p99 / p99.9</th><td>{} / {} / {} / {}</td></tr>
</table>
<h2>Latency by percentile</h2>
{}
<h2>Latency histogram</h2>
{}
"#,
        report::successful_rate(tally, measured, elapsed),
        ms(h.min()),
        h.mean() / 1000.0,
        ms(h.max()),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        plot::svg(h, &title),
        plot::histogram_svg(h),
    );
    if !verdicts.is_empty() {
        let failed = verdicts.iter().filter(|verdict| !verdict.held).count();
        let _ = writeln!(
            out,
            "<h2>Assertions</h2>\n<p id=\"gate\">{}</p>\n<table id=\"assertions\"><tr><th>assertion</th><th>step</th><th>measured</th><th>held</th></tr>",
            if failed == 0 {
                "all held".to_owned()
            } else {
                format!("{failed} of {} failed", verdicts.len())
            }
        );
        for verdict in verdicts {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                plot::escape(&verdict.assertion),
                verdict
                    .step
                    .map_or("all".to_owned(), |step| step.to_string()),
                verdict.measured_text(),
                if verdict.held {
                    "yes"
                } else {
                    "<strong>no</strong>"
                },
            );
        }
        out.push_str("</table>\n");
    }
    let steps = report::step_rows(args, tally, elapsed);
    if !steps.is_empty() {
        out.push_str("<h2>Steps</h2>\n<table id=\"steps\"><tr><th>step</th><th>seconds</th><th>target calls/s</th><th>concurrency</th><th>calls</th><th>calls/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th></tr>\n");
        for step in steps {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{:.0}-{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                step.number,
                step.start,
                step.end,
                step.target_rps
                    .map_or(String::new(), |rate| format!("{rate:.0}")),
                step.concurrency,
                step.calls,
                step.calls_per_second,
                step.errors,
                ms(step.latency.value_at_quantile(0.5)),
                ms(step.latency.value_at_quantile(0.99)),
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("<h2>Errors by code</h2>\n");
    if tally.errors.is_empty() {
        out.push_str("<p id=\"errors\">none</p>\n");
    } else {
        out.push_str("<table id=\"errors\"><tr><th>code</th><th>calls</th></tr>\n");
        for (code, count) in &tally.errors {
            let _ = writeln!(out, "<tr><td>{code}</td><td>{count}</td></tr>");
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}
