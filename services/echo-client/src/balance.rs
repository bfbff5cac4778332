//! Client-side load balancing over several servers: every address the
//! endpoints resolve to (a DNS name may give several) joins one balanced
//! channel; a watcher checks each address's health and takes failing ones out
//! until they recover, and picks up addresses that DNS adds.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::error::ClientError;

/// How often the watcher checks every address.
pub(crate) const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How long one health check may take before the address counts as down.
pub(crate) const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_millis(250);

/// Aborts the watcher when the last client clone is dropped.
#[derive(Debug)]
pub(crate) struct Watcher(JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A balanced channel over every address of `targets` (`host:port`), and the
/// watcher that keeps its membership current. `endpoint` turns an address into
/// an endpoint with the builder's settings.
pub(crate) async fn balanced_channel(
    targets: Vec<String>,
    endpoint: impl Fn(SocketAddr) -> Result<Endpoint, ClientError> + Send + 'static,
) -> Result<(Channel, Watcher), ClientError> {
    let addresses = resolve(&targets).await;
    if addresses.is_empty() {
        return Err(ClientError::NoAddress {
            targets: targets.join(", "),
        });
    }
    let (channel, changes) = Channel::balance_channel(64);
    let mut members = HashMap::new();
    for address in addresses {
        let endpoint = endpoint(address)?;
        members.insert(
            address,
            Member {
                endpoint: endpoint.clone(),
                checker: None,
                in_rotation: true,
            },
        );
        let _ = changes.send(Change::Insert(address, endpoint)).await;
    }
    let watcher = tokio::spawn(watch(targets, members, changes, endpoint));
    Ok((channel, Watcher(watcher)))
}

struct Member {
    endpoint: Endpoint,
    /// A connection of its own for health checks, made on first use.
    checker: Option<HealthClient<Channel>>,
    in_rotation: bool,
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
    mut members: HashMap<SocketAddr, Member>,
    changes: Sender<Change<SocketAddr, Endpoint>>,
    endpoint: impl Fn(SocketAddr) -> Result<Endpoint, ClientError>,
) {
    let mut ticks = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    loop {
        ticks.tick().await;
        for address in resolve(&targets).await {
            if !members.contains_key(&address)
                && let Ok(endpoint) = endpoint(address)
            {
                members.insert(
                    address,
                    Member {
                        endpoint,
                        checker: None,
                        in_rotation: false,
                    },
                );
            }
        }
        for (address, member) in &mut members {
            let healthy = check(member).await;
            let change = match (healthy, member.in_rotation) {
                (true, false) => Change::Insert(*address, member.endpoint.clone()),
                (false, true) => Change::Remove(*address),
                _ => continue,
            };
            tracing::info!(%address, healthy, "balanced endpoint changed");
            member.in_rotation = healthy;
            if changes.send(change).await.is_err() {
                return; // the channel is gone
            }
        }
    }
}

async fn check(member: &mut Member) -> bool {
    let checker = member
        .checker
        .get_or_insert_with(|| HealthClient::new(member.endpoint.clone().connect_lazy()));
    let request = HealthCheckRequest {
        service: String::new(),
    };
    match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, checker.check(request)).await {
        Ok(Ok(response)) => response.get_ref().status() == ServingStatus::Serving,
        _ => false,
    }
}
