//! `xds.service.orca.v3.OpenRcaService`: the instance's load report, out of
//! band, every interval the caller asks for (never more often than
//! `--orca-min-interval`), until the caller goes or shutdown begins.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use grpc_echo::xds::data::orca::v3::OrcaLoadReport;
use grpc_echo::xds::service::orca::v3::OrcaLoadReportRequest;
use grpc_echo::xds::service::orca::v3::open_rca_service_server::OpenRcaService;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::ops::load_report::LoadReports;

/// The report streams of one server.
#[derive(Debug)]
pub(crate) struct OrcaService {
    reports: Arc<LoadReports>,
    min_interval: Duration,
    /// Cancelled when shutdown begins: every stream then ends with OK.
    shutdown: CancellationToken,
}

impl OrcaService {
    pub(crate) fn new(
        reports: Arc<LoadReports>,
        min_interval: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            reports,
            min_interval,
            shutdown,
        }
    }
}

type ReportStream = Pin<Box<dyn Stream<Item = Result<OrcaLoadReport, Status>> + Send>>;

#[tonic::async_trait]
impl OpenRcaService for OrcaService {
    type StreamCoreMetricsStream = ReportStream;

    async fn stream_core_metrics(
        &self,
        request: Request<OrcaLoadReportRequest>,
    ) -> Result<Response<ReportStream>, Status> {
        let request = request.into_inner();
        let asked = match request.report_interval {
            Some(interval) => Duration::try_from(interval).map_err(|_| {
                Status::invalid_argument("report_interval is negative or out of range")
            })?,
            None => Duration::ZERO,
        };
        let interval = asked.max(self.min_interval);
        let names = request.request_cost_names;
        let reports = Arc::clone(&self.reports);
        let shutdown = self.shutdown.clone();
        let stream = async_stream::stream! {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let mut report = reports.current().unwrap_or_default();
                if !names.is_empty() {
                    report.request_cost.retain(|name, _| names.contains(name));
                }
                yield Ok(report);
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
