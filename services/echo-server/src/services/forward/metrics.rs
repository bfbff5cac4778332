//! The grpc-ecosystem client series (`grpc_client_*`) of Forward's
//! downstream calls.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Code;

use crate::ops::metrics::latency_histogram;

/// Labels of a downstream method's client series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
}

/// Labels of a downstream method's outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientCodeLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

/// The grpc-ecosystem client series (`grpc_client_*`) of Forward's
/// downstream calls; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ClientMetrics {
    started: Family<ClientLabels, Counter>,
    handled: Family<ClientCodeLabels, Counter>,
    sent: Family<ClientLabels, Counter>,
    received: Family<ClientLabels, Counter>,
    handling: Family<ClientLabels, Histogram, fn() -> Histogram>,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self {
            started: Family::default(),
            handled: Family::default(),
            sent: Family::default(),
            received: Family::default(),
            handling: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl ClientMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_client_started",
            "Downstream RPCs started by Forward",
            self.started.clone(),
        );
        registry.register(
            "grpc_client_handled",
            "Downstream RPCs of Forward completed, by status code",
            self.handled.clone(),
        );
        registry.register(
            "grpc_client_msg_sent",
            "Messages sent downstream by Forward",
            self.sent.clone(),
        );
        registry.register(
            "grpc_client_msg_received",
            "Messages received from downstream by Forward",
            self.received.clone(),
        );
        registry.register(
            "grpc_client_handling_seconds",
            "Downstream RPC duration, as Forward saw it",
            self.handling.clone(),
        );
    }

    /// A downstream call to `method` (unary) is starting: its request is sent.
    pub(super) fn started(&self, service: &'static str, method: &'static str) {
        let labels = client_labels(service, method);
        self.started.get_or_create(&labels).inc();
        self.sent.get_or_create(&labels).inc();
    }

    /// A downstream call to `method` ended with `code` after `elapsed`.
    pub(super) fn handled(
        &self,
        service: &'static str,
        method: &'static str,
        code: Code,
        elapsed: Duration,
    ) {
        let labels = client_labels(service, method);
        if code == Code::Ok {
            self.received.get_or_create(&labels).inc();
        }
        self.handling
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.handled
            .get_or_create(&ClientCodeLabels {
                grpc_type: labels.grpc_type,
                grpc_service: labels.grpc_service,
                grpc_method: labels.grpc_method,
                grpc_code: echo_wire::codes::camel_name(code as i32),
            })
            .inc();
    }
}

fn client_labels(service: &'static str, method: &'static str) -> ClientLabels {
    ClientLabels {
        grpc_type: "unary",
        grpc_service: service,
        grpc_method: method,
    }
}
