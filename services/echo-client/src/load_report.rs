//! ORCA load reports (gRFC A51) as servers send them, in the
//! `endpoint-load-metrics-bin` trailer of each call, and the weights that
//! weighted round robin (gRFC A58) makes of them.
//!
//! ```
//! use echo_client::load_report;
//! # fn demo(trailers: &tonic::metadata::MetadataMap) {
//! if let Some(report) = load_report::from_metadata(trailers) {
//!     println!("cpu {} at {} qps", report.cpu_utilization, report.rps_fractional);
//! }
//! # }
//! ```

use std::time::{Duration, Instant};

use base64::Engine as _;
use echo_wire::headers::LOAD_REPORT;
pub use grpc_echo::xds::data::orca::v3::OrcaLoadReport;
use http::HeaderMap;
use prost::Message as _;

/// The load report in `metadata` (a call's trailers; for a unary call
/// tonic merges them into its response's metadata), if it has one that
/// decodes.
pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<OrcaLoadReport> {
    from_headers(metadata.as_ref())
}

/// The load report in `headers` (trailers, or a trailers-only answer's
/// headers), if they have one that decodes.
pub fn from_headers(headers: &HeaderMap) -> Option<OrcaLoadReport> {
    let value = headers.get(LOAD_REPORT)?.as_bytes();
    // gRPC sends binary values unpadded; some senders pad.
    let value = value
        .strip_suffix(b"==")
        .or(value.strip_suffix(b"="))
        .unwrap_or(value);
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value)
        .ok()?;
    OrcaLoadReport::decode(bytes.as_slice()).ok()
}

/// The settings of weighted round robin, as gRFC A58 names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightedConfig {
    /// How long an address must report before its weight counts (A58's
    /// `blackout_period`: a new address's first reports come from little
    /// load); default 10 s.
    pub blackout_period: Duration,
    /// How long a weight holds without a new report (A58's
    /// `weight_expiration_period`); default 3 minutes.
    pub weight_expiration_period: Duration,
    /// How much errors weigh against an address (A58's
    /// `error_utilization_penalty`); default 1.0.
    pub error_utilization_penalty: f64,
    /// Weights from reports out of band, each server's
    /// `OpenRcaService/StreamCoreMetrics` at this interval, in place of
    /// those in each call's trailers (A58's `enable_oob_load_report` and
    /// `oob_reporting_period`); default none: per call.
    pub out_of_band: Option<Duration>,
}

impl Default for WeightedConfig {
    fn default() -> Self {
        Self {
            blackout_period: Duration::from_secs(10),
            weight_expiration_period: Duration::from_secs(180),
            error_utilization_penalty: 1.0,
            out_of_band: None,
        }
    }
}

/// What weighted round robin knows of one address: its weight, from its
/// latest usable report, and since when it has reported without a break.
#[derive(Debug, Clone, Default)]
pub(crate) struct Weight {
    weight: f64,
    /// When its reports began (reset after the weight expires).
    reporting_since: Option<Instant>,
    last_update: Option<Instant>,
    /// The latest report, usable or not.
    pub(crate) last_report: Option<OrcaLoadReport>,
}

impl Weight {
    /// Takes `report`, received at `now`: A58's weight is the rate of
    /// queries over the utilization (the application's, else CPU's) plus
    /// errors' share times the penalty; a report without either tells
    /// nothing and is skipped.
    pub(crate) fn update(&mut self, report: OrcaLoadReport, now: Instant, config: &WeightedConfig) {
        let qps = report.rps_fractional;
        let mut utilization = if report.application_utilization > 0.0 {
            report.application_utilization
        } else {
            report.cpu_utilization
        };
        if qps > 0.0 {
            utilization += report.eps / qps * config.error_utilization_penalty;
        }
        self.last_report = Some(report);
        if qps <= 0.0 || utilization <= 0.0 {
            return;
        }
        if self.expired(now, config) {
            self.reporting_since = None;
        }
        self.reporting_since.get_or_insert(now);
        self.last_update = Some(now);
        self.weight = qps / utilization;
    }

    /// The weight at `now`, if it counts: reported for longer than the
    /// blackout period, and not expired.
    pub(crate) fn current(&self, now: Instant, config: &WeightedConfig) -> Option<f64> {
        let since = self.reporting_since?;
        (!self.expired(now, config)
            && now.saturating_duration_since(since) >= config.blackout_period)
            .then_some(self.weight)
    }

    fn expired(&self, now: Instant, config: &WeightedConfig) -> bool {
        self.last_update.is_none_or(|last| {
            now.saturating_duration_since(last) >= config.weight_expiration_period
        })
    }
}

/// Picks among weights as smooth weighted round robin does (nginx's):
/// every pick adds each candidate's weight to its credit and takes the one
/// with the most, which then pays the total; so picks follow the weights
/// evenly spread, not in bursts. Candidates without a weight get the mean
/// of those with one (A58), all alike when none has one.
pub(crate) fn pick(
    credits: &mut [f64],
    weights: &[Option<f64>],
    candidate: impl Fn(usize) -> bool,
) -> Option<usize> {
    let known: Vec<f64> = weights
        .iter()
        .enumerate()
        .filter(|(index, _)| candidate(*index))
        .filter_map(|(_, weight)| *weight)
        .collect();
    let mean = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let mut total = 0.0;
    let mut best: Option<usize> = None;
    for (index, weight) in weights.iter().enumerate() {
        if !candidate(index) {
            continue;
        }
        let weight = weight.unwrap_or(mean);
        credits[index] += weight;
        total += weight;
        if best.is_none_or(|best| credits[index] > credits[best]) {
            best = Some(index);
        }
    }
    if let Some(best) = best {
        credits[best] -= total;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(qps: f64, cpu: f64, eps: f64) -> OrcaLoadReport {
        OrcaLoadReport {
            rps_fractional: qps,
            cpu_utilization: cpu,
            eps,
            ..OrcaLoadReport::default()
        }
    }

    #[test]
    fn weights_follow_a58() {
        let config = WeightedConfig::default();
        let start = Instant::now();
        let mut weight = Weight::default();
        weight.update(report(100.0, 0.5, 0.0), start, &config);
        assert_eq!(
            weight.current(start, &config),
            None,
            "in its blackout period"
        );
        let later = start + config.blackout_period;
        assert_eq!(weight.current(later, &config), Some(200.0));
        // Errors weigh as utilization: 100 qps, 0.5 cpu, 50 eps -> 100 / 1.0.
        weight.update(report(100.0, 0.5, 50.0), later, &config);
        assert_eq!(weight.current(later, &config), Some(100.0));
        // The application's utilization comes before CPU's.
        let app = OrcaLoadReport {
            application_utilization: 0.25,
            ..report(100.0, 0.5, 0.0)
        };
        weight.update(app, later, &config);
        assert_eq!(weight.current(later, &config), Some(400.0));
        // A report without a rate tells nothing.
        weight.update(report(0.0, 0.5, 0.0), later, &config);
        assert_eq!(weight.current(later, &config), Some(400.0));
        let expired = later + config.weight_expiration_period;
        assert_eq!(weight.current(expired, &config), None);
    }

    #[test]
    fn picks_follow_the_weights_evenly() {
        let weights = [Some(1.0), Some(2.0), None];
        let mut credits = [0.0; 3];
        let picks: Vec<usize> = (0..9)
            .map(|_| pick(&mut credits, &weights, |_| true).unwrap())
            .collect();
        // The unknown one gets the mean, 1.5: shares 2:4:3 in 9 picks.
        let count = |index| picks.iter().filter(|pick| **pick == index).count();
        assert_eq!((count(0), count(1), count(2)), (2, 4, 3), "{picks:?}");
        let mut credits = [0.0; 3];
        assert_eq!(pick(&mut credits, &weights, |index| index == 0), Some(0));
        assert_eq!(pick(&mut credits, &weights, |_| false), None);
    }

    #[test]
    fn trailers_decode_padded_or_not() {
        let report = report(100.0, 0.5, 0.0);
        let encoded = base64::engine::general_purpose::STANDARD.encode(report.encode_to_vec());
        for value in [encoded.clone(), encoded.trim_end_matches('=').to_owned()] {
            let mut headers = HeaderMap::new();
            headers.insert(LOAD_REPORT, value.parse().unwrap());
            assert_eq!(from_headers(&headers), Some(report.clone()));
        }
        assert_eq!(from_headers(&HeaderMap::new()), None);
    }
}
