//! ORCA load reports (gRFC A51): the load this instance says it carries, as
//! `--load-report` gives it, a chaos `load` window replaces it, or a call's
//! `x-echo-load-report` header asks; `auto` values measured as the server
//! runs. The `LoadReportLayer` puts a report on every answer, the
//! `OpenRcaService` streams it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use grpc_echo::xds::data::orca::v3::OrcaLoadReport;
use http::HeaderValue;
use prost::Message as _;

use crate::config::load_report::{LoadField, LoadReportSpec, LoadValue};
use crate::ops::chaos::Windows;

/// How long a measurement of `auto` values holds before the next one.
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// Linux's clock ticks per second in `/proc` (`USER_HZ`: 100 on every
/// architecture's user-space ABI).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// The instance's load reports; one per server.
#[derive(Debug)]
pub(crate) struct LoadReports {
    configured: Option<Arc<LoadReportSpec>>,
    /// The chaos schedules' windows, when there are schedules.
    windows: Option<Arc<Windows>>,
    /// Calls to the services under test since start.
    calls: AtomicU64,
    measured: Mutex<Measured>,
}

/// The latest measurement of the `auto` values, what it was taken from, and
/// the trailer last encoded from it.
#[derive(Debug)]
struct Measured {
    at: Instant,
    cpu_seconds: f64,
    calls: u64,
    /// The process's CPU use, as a fraction of the CPUs it may use.
    cpu: f64,
    /// Calls answered per second.
    qps: f64,
    /// The trailer of the report of the moment, and that report: encoded
    /// once per report and sample, not per answer.
    trailer: Option<(Arc<LoadReportSpec>, HeaderValue)>,
}

impl Measured {
    /// Measures again when the sample is a period old (which drops the
    /// trailer encoded from it).
    fn refresh(&mut self, calls: u64) {
        let elapsed = self.at.elapsed();
        if elapsed < SAMPLE_PERIOD {
            return;
        }
        let cpu_seconds = process_cpu_seconds();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let seconds = elapsed.as_secs_f64();
        self.cpu = ((cpu_seconds - self.cpu_seconds) / seconds / cpus).max(0.0);
        self.qps = calls.saturating_sub(self.calls) as f64 / seconds;
        self.at = Instant::now();
        self.cpu_seconds = cpu_seconds;
        self.calls = calls;
        self.trailer = None;
    }
}

impl LoadReports {
    /// Reports of `configured`, replaced while a chaos load window in
    /// `windows` is open.
    pub(crate) fn new(configured: Option<LoadReportSpec>, windows: Option<Arc<Windows>>) -> Self {
        Self {
            configured: configured.map(Arc::new),
            windows,
            calls: AtomicU64::new(0),
            measured: Mutex::new(Measured {
                at: Instant::now(),
                cpu_seconds: process_cpu_seconds(),
                calls: 0,
                cpu: 0.0,
                qps: 0.0,
                trailer: None,
            }),
        }
    }

    /// Whether the instance reports load at all (without a call's header):
    /// with `--load-report` or a chaos load window.
    pub(crate) fn reporting(&self) -> bool {
        self.configured.is_some() || self.windows.is_some()
    }

    /// One more call to a service under test (the rate `qps=auto` reports).
    pub(crate) fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The report given now: a load window's, else the configured one.
    fn spec(&self) -> Option<Arc<LoadReportSpec>> {
        self.windows
            .as_ref()
            .and_then(|windows| windows.load())
            .or_else(|| self.configured.clone())
    }

    /// The report of the moment, its `auto` values measured.
    pub(crate) fn current(&self) -> Option<OrcaLoadReport> {
        self.spec().map(|spec| self.report(&spec))
    }

    /// The `endpoint-load-metrics-bin` value of an answer: the report
    /// `requested` (a call's own), else the one of the moment.
    pub(crate) fn trailer(&self, requested: Option<&LoadReportSpec>) -> Option<HeaderValue> {
        if let Some(spec) = requested {
            return Some(encode(&self.report(spec)));
        }
        let spec = self.spec()?;
        let mut measured = self.measured();
        if spec.measured() {
            measured.refresh(self.calls.load(Ordering::Relaxed));
        }
        if let Some((encoded_spec, value)) = &measured.trailer
            && Arc::ptr_eq(encoded_spec, &spec)
        {
            return Some(value.clone());
        }
        let value = encode(&report(&spec, measured.cpu, measured.qps));
        measured.trailer = Some((spec, value.clone()));
        Some(value)
    }

    /// `spec` with its `auto` values measured.
    fn report(&self, spec: &LoadReportSpec) -> OrcaLoadReport {
        let mut measured = self.measured();
        if spec.measured() {
            measured.refresh(self.calls.load(Ordering::Relaxed));
        }
        report(spec, measured.cpu, measured.qps)
    }

    fn measured(&self) -> std::sync::MutexGuard<'_, Measured> {
        self.measured.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The report `spec` gives, with `cpu` and `qps` for its `auto` values.
fn report(spec: &LoadReportSpec, cpu: f64, qps: f64) -> OrcaLoadReport {
    let mut report = OrcaLoadReport::default();
    for (field, value) in &spec.fields {
        let value = match (value, field) {
            (LoadValue::Fixed(value), _) => *value,
            (LoadValue::Auto, LoadField::Qps) => qps,
            (LoadValue::Auto, _) => cpu,
        };
        match field {
            LoadField::Cpu => report.cpu_utilization = value,
            LoadField::Mem => report.mem_utilization = value,
            LoadField::App => report.application_utilization = value,
            LoadField::Qps => report.rps_fractional = value,
            LoadField::Eps => report.eps = value,
            LoadField::Utilization(name) => {
                report.utilization.insert(name.clone(), value);
            }
            LoadField::Named(name) => {
                report.named_metrics.insert(name.clone(), value);
            }
            LoadField::RequestCost(name) => {
                report.request_cost.insert(name.clone(), value);
            }
        }
    }
    report
}

/// `report` as a binary header's value (base64, unpadded, as gRPC sends them).
fn encode(report: &OrcaLoadReport) -> HeaderValue {
    let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(report.encode_to_vec());
    HeaderValue::try_from(text).expect("base64 is a valid header value")
}

/// CPU time the process has used, user and system, in seconds (0 where
/// `/proc` does not say).
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces; the fields after its `)`
    // start at field 3, so utime and stime (14 and 15) are the 12th and 13th.
    let ticks: f64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|field| field.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or_default();
    ticks / CLOCK_TICKS_PER_SECOND
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_has_exactly_the_values_given() {
        let spec: LoadReportSpec =
            "cpu=0.5,mem=0.25,qps=100,eps=2,app=0.3,util.gpu=0.8,named.queue=7,req.db=3"
                .parse()
                .unwrap();
        let reports = LoadReports::new(Some(spec), None);
        let trailer = reports.trailer(None).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trailer.as_bytes())
            .unwrap();
        let report = OrcaLoadReport::decode(bytes.as_slice()).unwrap();
        assert_eq!(report.cpu_utilization, 0.5);
        assert_eq!(report.mem_utilization, 0.25);
        assert_eq!(report.rps_fractional, 100.0);
        assert_eq!(report.eps, 2.0);
        assert_eq!(report.application_utilization, 0.3);
        assert_eq!(report.utilization["gpu"], 0.8);
        assert_eq!(report.named_metrics["queue"], 7.0);
        assert_eq!(report.request_cost["db"], 3.0);
        assert_eq!(reports.current(), Some(report));
    }

    #[test]
    fn the_process_has_used_some_cpu() {
        if cfg!(target_os = "linux") {
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_millis(30) {}
            assert!(process_cpu_seconds() > 0.0);
        }
    }
}
