//! The grammar of ORCA load reports (`--load-report`, the `x-echo-load-report`
//! header, a chaos `load` window), parsed once into a [`LoadReportSpec`];
//! `ops/load_report.rs` turns it into the `OrcaLoadReport` each answer carries.
//!
//! A report is `KEY=VALUE` pairs separated by commas, each key at most once:
//!
//! - `cpu`, `mem`, `app`: CPU, memory and application utilization
//!   (`cpu_utilization`, `mem_utilization`, `application_utilization`);
//! - `qps`, `eps`: requests and errors per second (`rps_fractional`, `eps`);
//! - `util.NAME`, `named.NAME`, `req.NAME`: an entry of `utilization`,
//!   `named_metrics` or `request_cost`.
//!
//! A value is a number, at least 0 (`mem` and `util.NAME` at most 1, as the
//! report's contract says); `cpu=auto` follows the process's CPU use and
//! `qps=auto` the rate of calls the server answers.

use std::str::FromStr;

/// Why a load report does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadReportError {
    /// Nothing to report.
    #[error("an empty load report (give e.g. cpu=0.5,qps=100)")]
    Empty,
    /// A setting is not `KEY=VALUE`.
    #[error("`{0}` is not KEY=VALUE")]
    NotKeyValue(String),
    /// A key names no field of the report.
    #[error(
        "unknown load report key `{0}` (known: cpu, mem, app, qps, eps, util.NAME, named.NAME, req.NAME)"
    )]
    UnknownKey(String),
    /// A key is given twice.
    #[error("`{0}` is given twice")]
    Twice(String),
    /// A value is not a number (or `auto` where that is allowed).
    #[error("{key}: `{value}` is not a number{auto}")]
    NotANumber {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// What else the key takes, if anything.
        auto: &'static str,
    },
    /// A value is outside what the report allows.
    #[error("{key}: {value} is outside {range}")]
    OutOfRange {
        /// The key.
        key: String,
        /// Its value.
        value: f64,
        /// The allowed range.
        range: &'static str,
    },
}

/// One field of `OrcaLoadReport`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LoadField {
    Cpu,
    Mem,
    App,
    Qps,
    Eps,
    Utilization(String),
    Named(String),
    RequestCost(String),
}

/// A field's value: fixed, or measured as the server runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LoadValue {
    Fixed(f64),
    /// The process's CPU use (`cpu`) or the rate of calls answered (`qps`).
    Auto,
}

/// A load report as given: each field and its value, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReportSpec {
    pub(crate) fields: Vec<(LoadField, LoadValue)>,
}

impl LoadReportSpec {
    /// Whether a value follows the server's measurements.
    pub(crate) fn measured(&self) -> bool {
        self.fields
            .iter()
            .any(|(_, value)| *value == LoadValue::Auto)
    }
}

impl FromStr for LoadReportSpec {
    type Err = LoadReportError;

    fn from_str(text: &str) -> Result<Self, LoadReportError> {
        let mut fields: Vec<(LoadField, LoadValue)> = Vec::new();
        for pair in text
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
        {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| LoadReportError::NotKeyValue(pair.to_owned()))?;
            let (key, value) = (key.trim(), value.trim());
            let named = |prefix: &str| {
                key.strip_prefix(prefix)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
            };
            let field = match key {
                "cpu" => LoadField::Cpu,
                "mem" => LoadField::Mem,
                "app" => LoadField::App,
                "qps" => LoadField::Qps,
                "eps" => LoadField::Eps,
                _ => {
                    if let Some(name) = named("util.") {
                        LoadField::Utilization(name)
                    } else if let Some(name) = named("named.") {
                        LoadField::Named(name)
                    } else if let Some(name) = named("req.") {
                        LoadField::RequestCost(name)
                    } else {
                        return Err(LoadReportError::UnknownKey(key.to_owned()));
                    }
                }
            };
            if fields.iter().any(|(known, _)| *known == field) {
                return Err(LoadReportError::Twice(key.to_owned()));
            }
            let measurable = matches!(field, LoadField::Cpu | LoadField::Qps);
            let value = if value == "auto" && measurable {
                LoadValue::Auto
            } else {
                let number = value
                    .parse::<f64>()
                    .ok()
                    .filter(|number| number.is_finite())
                    .ok_or_else(|| LoadReportError::NotANumber {
                        key: key.to_owned(),
                        value: value.to_owned(),
                        auto: if measurable { " or auto" } else { "" },
                    })?;
                let fraction = matches!(field, LoadField::Mem | LoadField::Utilization(_));
                let out_of = |range| LoadReportError::OutOfRange {
                    key: key.to_owned(),
                    value: number,
                    range,
                };
                let named_metric = matches!(field, LoadField::Named(_) | LoadField::RequestCost(_));
                if fraction && !(0.0..=1.0).contains(&number) {
                    return Err(out_of("0 to 1"));
                }
                if !named_metric && number < 0.0 {
                    return Err(out_of("0 and up"));
                }
                LoadValue::Fixed(number)
            };
            fields.push((field, value));
        }
        if fields.is_empty() {
            return Err(LoadReportError::Empty);
        }
        Ok(Self { fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_parses_in_order() {
        let spec: LoadReportSpec =
            "cpu=0.5, mem=0.25,app=0.3,qps=100,eps=2,util.gpu=0.8,named.queue=7,req.db=-1.5"
                .parse()
                .unwrap();
        assert_eq!(
            spec.fields,
            [
                (LoadField::Cpu, LoadValue::Fixed(0.5)),
                (LoadField::Mem, LoadValue::Fixed(0.25)),
                (LoadField::App, LoadValue::Fixed(0.3)),
                (LoadField::Qps, LoadValue::Fixed(100.0)),
                (LoadField::Eps, LoadValue::Fixed(2.0)),
                (LoadField::Utilization("gpu".into()), LoadValue::Fixed(0.8)),
                (LoadField::Named("queue".into()), LoadValue::Fixed(7.0)),
                (LoadField::RequestCost("db".into()), LoadValue::Fixed(-1.5)),
            ]
        );
        assert!(!spec.measured());
        assert!(
            "cpu=auto,qps=auto"
                .parse::<LoadReportSpec>()
                .unwrap()
                .measured()
        );
    }

    #[test]
    fn bad_reports_name_their_cause() {
        let error = |text: &str| text.parse::<LoadReportSpec>().unwrap_err().to_string();
        assert_eq!(
            error(""),
            "an empty load report (give e.g. cpu=0.5,qps=100)"
        );
        assert_eq!(error("cpu"), "`cpu` is not KEY=VALUE");
        assert!(error("gpu=1").starts_with("unknown load report key `gpu`"));
        assert!(error("util.=1").starts_with("unknown load report key `util.`"));
        assert_eq!(error("cpu=1,cpu=2"), "`cpu` is given twice");
        assert_eq!(error("cpu=lots"), "cpu: `lots` is not a number or auto");
        assert_eq!(error("mem=auto"), "mem: `auto` is not a number");
        assert_eq!(error("mem=1.5"), "mem: 1.5 is outside 0 to 1");
        assert_eq!(error("util.gpu=2"), "util.gpu: 2 is outside 0 to 1");
        assert_eq!(error("qps=-1"), "qps: -1 is outside 0 and up");
        assert_eq!(error("cpu=NaN"), "cpu: `NaN` is not a number or auto");
    }
}
