//! Prometheus metrics: per-RPC counts by status code, latency histograms,
//! in-flight calls, stream messages and open connections, served as text on
//! their own HTTP port (`--metrics-addr`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::Code;

use crate::stats::Stats;

/// Labels of a method's series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: String,
    grpc_method: String,
}

/// Labels of a method's outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: String,
}

type LatencyFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 52 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 21))
}

/// The RPC metrics, and the registry that also holds the server's [`Stats`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    handled: Family<CodeLabels, Counter>,
    latency: LatencyFamily,
    in_flight: Gauge,
    /// Services whose method names become labels; any other path counts as
    /// `unknown`, so that made-up paths cannot grow the label sets.
    known_services: Vec<&'static str>,
}

impl Metrics {
    pub(crate) fn new(stats: &Stats, known_services: Vec<&'static str>) -> Self {
        let mut registry = Registry::default();
        let handled = Family::<CodeLabels, Counter>::default();
        let latency = LatencyFamily::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        registry.register(
            "grpc_server_handled",
            "RPCs completed, by status code",
            handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "RPC duration, to the last message",
            latency.clone(),
        );
        registry.register(
            "grpc_server_in_flight_calls",
            "RPCs started and not yet finished",
            in_flight.clone(),
        );
        registry.register(
            "grpc_server_open_streams",
            "Streaming RPCs open",
            stats.open_streams.clone(),
        );
        registry.register(
            "grpc_server_stream_messages_sent",
            "Responses sent on server and bidi streams",
            stats.stream_messages_sent.clone(),
        );
        registry.register(
            "grpc_server_open_connections",
            "Connections open",
            stats.open_connections.clone(),
        );
        Self {
            registry,
            handled,
            latency,
            in_flight,
            known_services,
        }
    }

    fn labels(&self, path: &str) -> MethodLabels {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", ""));
        if self.known_services.contains(&service) && !method.is_empty() && !method.contains('/') {
            MethodLabels {
                grpc_service: service.to_owned(),
                grpc_method: method.to_owned(),
            }
        } else {
            MethodLabels {
                grpc_service: "unknown".to_owned(),
                grpc_method: "unknown".to_owned(),
            }
        }
    }

    /// A call started.
    pub(crate) fn started(&self) {
        self.in_flight.inc();
    }

    /// A call ended, with `code` (none: its caller went away first).
    pub(crate) fn finished(&self, path: &str, code: Option<Code>, elapsed: Duration) {
        self.in_flight.dec();
        let labels = self.labels(path);
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let code = code.map_or_else(|| "Cancelled".to_owned(), |code| format!("{code:?}"));
        let labels = CodeLabels {
            grpc_service: labels.grpc_service,
            grpc_method: labels.grpc_method,
            grpc_code: code,
        };
        self.handled.get_or_create(&labels).inc();
    }

    /// The exposition text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
