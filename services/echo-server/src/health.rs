//! The health the server reports, for itself (`""`) and each service it
//! serves: set by the server at start and shutdown, by the chaos schedules'
//! `unhealthy` windows and by the admin service. A leaf, shared by all three.

use std::sync::Arc;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Sets what `grpc.health.v1.Health` reports; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    reporter: HealthReporter,
    served: Arc<[&'static str]>,
}

impl Health {
    /// Reports through `reporter` for the `served` services.
    pub(crate) fn new(reporter: HealthReporter, served: &[&'static str]) -> Self {
        Self {
            reporter,
            served: served.into(),
        }
    }

    /// The full names of the services served.
    pub(crate) fn served(&self) -> &[&'static str] {
        &self.served
    }

    /// Sets the health of the server as a whole and of every served service.
    pub(crate) async fn set_all(&self, status: ServingStatus) {
        for service in std::iter::once("").chain(self.served.iter().copied()) {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Sets the health of one `service` (`""`: the server as a whole).
    pub(crate) async fn set(&self, service: &str, status: ServingStatus) {
        self.reporter.set_service_status(service, status).await;
    }
}
