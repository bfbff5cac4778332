//! `--assert EXPR`: pass/fail thresholds checked after a run (and per step of
//! a stepped schedule), so that a load run can gate CI: `p99<20ms`,
//! `error_rate<0.1%`, `rps>=1000`, `errors[UNAVAILABLE]<=5`. Parsed when the
//! command line is, so a malformed one is a usage error before any load.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Exit status of a run whose assertions did not all hold.
const FAILED: u8 = 3;

/// What an assertion measures.
#[derive(Debug, Clone, PartialEq)]
enum Metric {
    /// A latency: a percentile (0-100), or the mean or max.
    Latency(Latency),
    /// Failed calls over measured calls.
    ErrorRate,
    /// Successful calls per second.
    Rps,
    /// Calls that failed with a code, by its name in the report (`Unavailable`).
    Errors(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Latency {
    Percentile(f64),
    Mean,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn holds(self, measured: f64, bound: f64) -> bool {
        match self {
            Self::Lt => measured < bound,
            Self::Le => measured <= bound,
            Self::Gt => measured > bound,
            Self::Ge => measured >= bound,
        }
    }
}

/// One `--assert`: as written, and parsed (latency bounds in milliseconds,
/// the error rate as a fraction).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assertion {
    text: String,
    metric: Metric,
    op: Op,
    bound: f64,
}

impl fmt::Display for Assertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Assertion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (at, op, width) = ["<=", ">=", "<", ">"]
            .iter()
            .find_map(|symbol| text.find(symbol).map(|at| (at, *symbol, symbol.len())))
            .ok_or_else(|| {
                format!(
                    "`{text}` has no comparison: write METRIC<VALUE, <=, > or >= (e.g. p99<20ms)"
                )
            })?;
        let op = match op {
            "<=" => Op::Le,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            _ => Op::Gt,
        };
        let (name, value) = (text[..at].trim(), text[at + width..].trim());
        let metric = match name {
            "p50" | "p90" | "p99" | "p99.9" => Metric::Latency(Latency::Percentile(
                name[1..].parse().expect("a percentile"),
            )),
            "mean" => Metric::Latency(Latency::Mean),
            "max" => Metric::Latency(Latency::Max),
            "error_rate" => Metric::ErrorRate,
            "rps" => Metric::Rps,
            _ => match name
                .strip_prefix("errors[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                Some(code) => {
                    let code = echo_wire::codes::parse(code.trim())
                        .map_err(|err| format!("`{text}`: {err}"))?;
                    Metric::Errors(format!("{:?}", tonic::Code::from(code)))
                }
                None => {
                    return Err(format!(
                        "`{text}`: unknown metric `{name}` (known: p50, p90, p99, p99.9, mean, max, error_rate, rps, errors[CODE])"
                    ));
                }
            },
        };
        let bound = match metric {
            Metric::Latency(_) => milliseconds(value),
            Metric::ErrorRate => fraction(value),
            Metric::Rps | Metric::Errors(_) => value
                .parse::<f64>()
                .ok()
                .filter(|number| number.is_finite() && *number >= 0.0)
                .ok_or_else(|| "not a number, 0 or more".to_owned()),
        }
        .map_err(|reason| format!("`{text}`: `{value}` is {reason}"))?;
        Ok(Self {
            text: text.to_owned(),
            metric,
            op,
            bound,
        })
    }
}

/// `20ms`, `1.5s`, `250us` in milliseconds.
fn milliseconds(value: &str) -> Result<f64, String> {
    let (number, scale) = [("ms", 1.0), ("us", 1e-3), ("µs", 1e-3), ("s", 1e3)]
        .iter()
        .find_map(|(unit, scale)| value.strip_suffix(unit).map(|number| (number, *scale)))
        .ok_or_else(|| "not a duration (e.g. 20ms, 1.5s, 250us)".to_owned())?;
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite() && *number >= 0.0)
        .map(|number| number * scale)
        .ok_or_else(|| "not a duration (e.g. 20ms, 1.5s, 250us)".to_owned())
}

/// `0.1%` or `0.001`.
fn fraction(value: &str) -> Result<f64, String> {
    let parsed = match value.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|percent| percent / 100.0),
        None => value.parse::<f64>(),
    };
    parsed
        .ok()
        .filter(|fraction| (0.0..=1.0).contains(fraction))
        .ok_or_else(|| "not a rate (e.g. 0.1% or 0.001)".to_owned())
}

/// What assertions are checked against: a run's, or one step's.
pub(super) struct Measure<'a> {
    /// Successful calls' latencies, in microseconds.
    pub(super) latency: &'a Histogram<u64>,
    /// Measured calls, failed ones included.
    pub(super) calls: u64,
    /// Failed calls, by code (`None`: not known, as for a step or a merge).
    pub(super) errors_by_code: Option<&'a BTreeMap<String, u64>>,
    /// Failed calls (`None`: not known, as in a merge).
    pub(super) errors: Option<u64>,
    /// Successful calls per second.
    pub(super) rps: f64,
}

/// What a measured value counts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    Milliseconds,
    /// Of the calls measured (shown as a percentage).
    Fraction,
    PerSecond,
    Calls,
}

impl Unit {
    /// As the JSON report names it.
    fn name(self) -> &'static str {
        match self {
            Self::Milliseconds => "ms",
            Self::Fraction => "fraction",
            Self::PerSecond => "/s",
            Self::Calls => "calls",
        }
    }
}

/// One assertion checked: where (a step, or the run), what was measured.
#[derive(Debug, Clone)]
pub(super) struct Verdict {
    pub(super) assertion: String,
    /// The step it was checked on, from 1 (`None`: the whole run).
    pub(super) step: Option<usize>,
    /// What was measured (`None`: nothing to measure, e.g. no successful call).
    pub(super) measured: Option<f64>,
    unit: Unit,
    pub(super) held: bool,
}

impl Verdict {
    /// The measured value with its unit, or that there is none.
    pub(super) fn measured_text(&self) -> String {
        match (self.measured, self.unit) {
            (None, _) => "nothing to measure".to_owned(),
            (Some(value), Unit::Fraction) => format!("{:.3}%", value * 100.0),
            (Some(value), Unit::Milliseconds) => format!("{value:.3}ms"),
            (Some(value), Unit::PerSecond) => format!("{value:.1}/s"),
            (Some(value), Unit::Calls) => format!("{value}"),
        }
    }

    /// As the JSON reports give it.
    pub(super) fn json(&self) -> Value {
        json!({
            "assertion": self.assertion,
            "step": self.step,
            "measured": self.measured,
            "unit": self.unit.name(),
            "held": self.held,
        })
    }

    /// As the text report gives it.
    pub(super) fn line(&self) -> String {
        let place = self
            .step
            .map_or(String::new(), |step| format!("step {step}: "));
        format!(
            "{} {place}{}: {}",
            if self.held { "ok  " } else { "FAIL" },
            self.assertion,
            self.measured_text()
        )
    }
}

impl Assertion {
    /// Whether the assertion can be checked per step (by-code counts are
    /// kept for the whole run only).
    fn per_step(&self) -> bool {
        !matches!(self.metric, Metric::Errors(_))
    }

    /// What it needs that a merge of histograms lacks, if anything.
    pub(super) fn needs_errors(&self) -> bool {
        matches!(self.metric, Metric::ErrorRate | Metric::Errors(_))
    }

    fn check(&self, measure: &Measure<'_>, step: Option<usize>) -> Verdict {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let h = measure.latency;
        let (measured, unit) = match &self.metric {
            Metric::Latency(latency) => (
                (!h.is_empty()).then(|| match latency {
                    Latency::Percentile(q) => ms(h.value_at_quantile(q / 100.0)),
                    Latency::Mean => h.mean() / 1000.0,
                    Latency::Max => ms(h.max()),
                }),
                Unit::Milliseconds,
            ),
            Metric::ErrorRate => (
                measure
                    .errors
                    .filter(|_| measure.calls > 0)
                    .map(|errors| errors as f64 / measure.calls as f64),
                Unit::Fraction,
            ),
            Metric::Rps => (Some(measure.rps), Unit::PerSecond),
            Metric::Errors(code) => (
                measure
                    .errors_by_code
                    .map(|errors| errors.get(code).copied().unwrap_or_default() as f64),
                Unit::Calls,
            ),
        };
        Verdict {
            assertion: self.text.clone(),
            step,
            measured,
            unit,
            held: measured.is_some_and(|measured| self.op.holds(measured, self.bound)),
        }
    }
}

/// The exit status of a run with assertions: 0 when every one held, 3 when one did not.
pub(super) fn status(verdicts: &[Verdict]) -> u8 {
    if verdicts.iter().all(|verdict| verdict.held) {
        0
    } else {
        FAILED
    }
}

/// The assertions' lines of the text report: a heading, then each verdict.
pub(super) fn lines(verdicts: &[Verdict]) -> Vec<String> {
    if verdicts.is_empty() {
        return Vec::new();
    }
    let failed = verdicts.iter().filter(|verdict| !verdict.held).count();
    let mut lines = vec![match failed {
        0 => format!("assertions: all {} held", verdicts.len()),
        failed => format!("assertions: {failed} of {} failed", verdicts.len()),
    }];
    lines.extend(
        verdicts
            .iter()
            .map(|verdict| format!("  {}", verdict.line())),
    );
    lines
}

/// Checks every assertion on the run, and (but by-code counts) on each of
/// `steps`, numbered from 1.
pub(super) fn check(
    assertions: &[Assertion],
    run: &Measure<'_>,
    steps: &[(usize, Measure<'_>)],
) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = assertions
        .iter()
        .map(|assertion| assertion.check(run, None))
        .collect();
    for (number, step) in steps {
        for assertion in assertions.iter().filter(|assertion| assertion.per_step()) {
            verdicts.push(assertion.check(step, Some(*number)));
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertions_parse_and_bad_ones_say_why() {
        let parsed: Assertion = "p99<20ms".parse().unwrap();
        assert_eq!((parsed.op, parsed.bound), (Op::Lt, 20.0));
        let parsed: Assertion = "p99.9 <= 1.5s".parse().unwrap();
        assert_eq!(parsed.metric, Metric::Latency(Latency::Percentile(99.9)));
        assert_eq!((parsed.op, parsed.bound), (Op::Le, 1500.0));
        let parsed: Assertion = "error_rate<0.1%".parse().unwrap();
        assert_eq!((parsed.metric, parsed.bound), (Metric::ErrorRate, 0.001));
        let parsed: Assertion = "errors[UNAVAILABLE]<=5".parse().unwrap();
        assert_eq!(parsed.metric, Metric::Errors("Unavailable".to_owned()));
        let parsed: Assertion = "rps>=1000".parse().unwrap();
        assert_eq!((parsed.metric, parsed.op), (Metric::Rps, Op::Ge));

        let error = |text: &str| text.parse::<Assertion>().unwrap_err();
        assert!(error("p99 20ms").contains("has no comparison"));
        assert!(error("p42<20ms").contains("unknown metric `p42`"));
        assert!(error("p99<20").contains("`20` is not a duration"));
        assert!(error("error_rate<5").contains("not a rate"));
        assert!(error("errors[NOPE]<1").contains("unknown status code"));
        assert!(error("rps>=lots").contains("not a number"));
    }

    #[test]
    fn verdicts_measure_the_run_and_each_step() {
        let mut latency = Histogram::<u64>::new(3).unwrap();
        for micros in [1_000, 2_000, 30_000] {
            latency.record(micros).unwrap();
        }
        let errors = BTreeMap::from([("Unavailable".to_owned(), 1)]);
        let run = Measure {
            latency: &latency,
            calls: 4,
            errors_by_code: Some(&errors),
            errors: Some(1),
            rps: 40.0,
        };
        let assertions: Vec<Assertion> = ["max<=31ms", "error_rate<10%", "errors[UNAVAILABLE]<=1"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        let empty = Histogram::<u64>::new(3).unwrap();
        let step = Measure {
            latency: &empty,
            calls: 1,
            errors_by_code: None,
            errors: Some(1),
            rps: 0.0,
        };
        let verdicts = check(&assertions, &run, &[(2, step)]);
        let held: Vec<bool> = verdicts.iter().map(|verdict| verdict.held).collect();
        // The run: max 30 ms (within the histogram's precision) holds, 25% errors fails, one UNAVAILABLE holds;
        // step 2 (no successful call): nothing to measure fails, 100% fails.
        assert_eq!(held, [true, false, true, false, false]);
        assert_eq!(verdicts[1].line(), "FAIL error_rate<10%: 25.000%");
        assert_eq!(
            verdicts[3].line(),
            "FAIL step 2: max<=31ms: nothing to measure"
        );
    }
}
