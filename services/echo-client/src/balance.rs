//! Client-side balancing over several servers: every address the targets
//! resolve to (a DNS name may give several) gets a link of its own in one
//! [`Endpoints`] set; a watcher checks each address's health and keeps the
//! rotation to the ones that pass, and adds addresses that DNS adds. An
//! address that refuses a call leaves the rotation at once (`endpoints.rs`)
//! and comes back when its health check passes. Under weighted round robin
//! with reports out of band, it also streams each address's load reports.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc_echo::xds::service::orca::v3::OrcaLoadReportRequest;
use grpc_echo::xds::service::orca::v3::open_rca_service_client::OpenRcaServiceClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::endpoints::{BalancePolicy, Endpoints, WeakEndpoints};
use crate::error::ClientError;
use crate::load_report::WeightedConfig;
use crate::protocol::Link;
use crate::retry::Retrying;
use crate::stats::CallStats;

/// How often the watcher checks every address.
pub(crate) const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How long one health check may take before the address counts as down.
pub(crate) const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_millis(250);

/// A balanced set over every address of `targets` (`host:port`), and the
/// watcher that keeps its rotation current, which ends when the last clone
/// of the set is dropped. `link` turns an address into a (lazily connecting)
/// link with the builder's settings.
pub(crate) async fn balanced(
    targets: Vec<String>,
    link: impl Fn(SocketAddr) -> Result<Link, ClientError> + Send + Sync + 'static,
    policy: BalancePolicy,
    stats: Arc<CallStats>,
    retrying: Option<Arc<Retrying>>,
) -> Result<Endpoints, ClientError> {
    let addresses = resolve(&targets).await;
    if addresses.is_empty() {
        return Err(ClientError::NoAddress {
            targets: targets.join(", "),
        });
    }
    let mut members = Vec::new();
    for address in addresses {
        members.push((address, link(address)?));
    }
    let endpoints = Endpoints::balanced(members, policy, stats, retrying);
    tokio::spawn(watch(targets, endpoints.downgrade(), link));
    Ok(endpoints)
}

async fn resolve(targets: &[String]) -> HashSet<SocketAddr> {
    let mut addresses = HashSet::new();
    for target in targets {
        match tokio::net::lookup_host(target.as_str()).await {
            Ok(found) => addresses.extend(found),
            Err(err) => tracing::debug!(%target, cause = %err, "cannot resolve"),
        }
    }
    addresses
}

async fn watch(
    targets: Vec<String>,
    endpoints: WeakEndpoints,
    link: impl Fn(SocketAddr) -> Result<Link, ClientError>,
) {
    let mut ticks = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    // The addresses whose reports out of band are streamed.
    let mut reporting = HashSet::new();
    loop {
        ticks.tick().await;
        let Some(set) = endpoints.upgrade() else {
            return; // every client is gone
        };
        let known: HashSet<SocketAddr> = set.members().into_iter().map(|(addr, _)| addr).collect();
        for address in resolve(&targets).await {
            if !known.contains(&address)
                && let Ok(link) = link(address)
            {
                set.add(address, link);
            }
        }
        if let BalancePolicy::Weighted(config) = set.policy()
            && let Some(interval) = config.out_of_band
        {
            for (address, link) in set.members() {
                if reporting.insert(address) {
                    tokio::spawn(report_out_of_band(
                        set.downgrade(),
                        address,
                        link,
                        interval,
                        config,
                    ));
                }
            }
        }
        for (address, link) in set.members() {
            let healthy = check(link).await;
            if set.set_in_rotation(address, healthy) {
                tracing::info!(%address, healthy, "balanced endpoint changed");
            }
        }
    }
}

/// Streams `address`'s load reports (`OpenRcaService/StreamCoreMetrics`)
/// into its weight, every `interval`, again after [`HEALTH_CHECK_INTERVAL`]
/// whenever the stream ends, until the set is gone or the server says it
/// does not report.
async fn report_out_of_band(
    endpoints: WeakEndpoints,
    address: SocketAddr,
    link: Link,
    interval: Duration,
    config: WeightedConfig,
) {
    let request = OrcaLoadReportRequest {
        report_interval: interval.try_into().ok(),
        request_cost_names: Vec::new(),
    };
    loop {
        let Some(weight) = endpoints.upgrade().and_then(|set| set.weight_of(address)) else {
            return;
        };
        match OpenRcaServiceClient::new(link.clone())
            .stream_core_metrics(request.clone())
            .await
        {
            Ok(reports) => {
                let mut reports = reports.into_inner();
                while let Ok(Some(report)) = reports.message().await {
                    if endpoints.upgrade().is_none() {
                        return;
                    }
                    weight
                        .lock()
                        .expect("weight lock")
                        .update(report, Instant::now(), &config);
                }
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::warn!(%address, "the server reports no load out of band");
                return;
            }
            Err(status) => tracing::debug!(%address, %status, "no load reports out of band"),
        }
        tokio::time::sleep(HEALTH_CHECK_INTERVAL).await;
    }
}

async fn check(link: Link) -> bool {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, HealthClient::new(link).check(request)).await {
        Ok(Ok(response)) => response.get_ref().status() == ServingStatus::Serving,
        _ => false,
    }
}
