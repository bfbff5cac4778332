//! Prometheus metrics in the grpc-ecosystem dialect that dashboards and alert
//! rules expect (go-grpc-prometheus and its successor): calls started and
//! handled, messages received and sent, and latency histograms, labelled
//! `grpc_type`, `grpc_service`, `grpc_method` and `grpc_code` (gRPC's
//! canonical code names: "OK", "Canceled", ...); and beside them in-flight
//! calls, open streams and connections. The components that count other
//! things (the memory budgets, the chaos schedules, Forward's downstream
//! calls) register their own families in [`Metrics::registry`]. Served as
//! text on their own HTTP port (`--metrics-addr`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::net::TcpListener;
use tonic::Code;

use super::stats::Stats;

/// Labels of a method's series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
}

/// Labels of a method's outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

/// Which way a method's messages stream, as its descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RpcType {
    Unary,
    ClientStream,
    ServerStream,
    BidiStream,
}

impl RpcType {
    fn new(client_streaming: bool, server_streaming: bool) -> Self {
        match (client_streaming, server_streaming) {
            (false, false) => Self::Unary,
            (true, false) => Self::ClientStream,
            (false, true) => Self::ServerStream,
            (true, true) => Self::BidiStream,
        }
    }

    /// The `grpc_type` label.
    fn label(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ClientStream => "client_stream",
            Self::ServerStream => "server_stream",
            Self::BidiStream => "bidi_stream",
        }
    }

    /// Whether the caller sends a stream of messages (else one).
    pub(crate) fn client_streams(self) -> bool {
        matches!(self, Self::ClientStream | Self::BidiStream)
    }

    /// Whether the answer is a stream of messages (else one).
    pub(crate) fn server_streams(self) -> bool {
        matches!(self, Self::ServerStream | Self::BidiStream)
    }
}

type LatencyFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// The buckets of every latency histogram.
pub(crate) fn latency_histogram() -> Histogram {
    // 50 µs to about 52 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 21))
}

/// The series of one method (or of every unknown path), made at start so
/// that recording a call allocates nothing.
#[derive(Debug)]
struct MethodSeries {
    labels: MethodLabels,
    rpc_type: RpcType,
    started: Counter,
    received: Counter,
    sent: Counter,
    latency: Histogram,
    /// By status code; each made on its code's first use, so that only codes
    /// seen are exported.
    handled: [OnceLock<Counter>; 17],
}

/// Which method a call is for, as [`Metrics::method`] resolves its path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MethodId(usize);

/// The RPC metrics, and the registry that also holds the server's [`Stats`].
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    handled: Family<CodeLabels, Counter>,
    in_flight: Gauge,
    /// Tasks alive in the runtime, read when the metrics are: a leak of
    /// tasks shows as a climb (`bench/soak.py` samples it).
    alive_tasks: Gauge,
    /// Every method of the served services, and last the `unknown` series
    /// that any other path counts in, so that made-up paths cannot grow the
    /// label sets.
    methods: Vec<MethodSeries>,
    by_path: HashMap<Box<str>, MethodId>,
}

/// The families of the per-method series.
struct MethodFamilies {
    started: Family<MethodLabels, Counter>,
    received: Family<MethodLabels, Counter>,
    sent: Family<MethodLabels, Counter>,
    latency: LatencyFamily,
}

impl MethodFamilies {
    fn new() -> Self {
        Self {
            started: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            latency: LatencyFamily::new_with_constructor(latency_histogram),
        }
    }

    /// The series of one method, made now so that recording allocates nothing.
    fn series(&self, service: &str, method: &str, rpc_type: RpcType) -> MethodSeries {
        let labels = MethodLabels {
            grpc_type: rpc_type.label(),
            grpc_service: service.to_owned(),
            grpc_method: method.to_owned(),
        };
        MethodSeries {
            rpc_type,
            started: self.started.get_or_create(&labels).clone(),
            received: self.received.get_or_create(&labels).clone(),
            sent: self.sent.get_or_create(&labels).clone(),
            latency: self.latency.get_or_create(&labels).clone(),
            labels,
            handled: Default::default(),
        }
    }
}

impl Metrics {
    /// Metrics with series for every method that `descriptor_sets` give the
    /// `served` services, and the gauges of `stats`.
    pub(crate) fn new(stats: &Stats, served: &[&str], descriptor_sets: &[&[u8]]) -> Self {
        let families = MethodFamilies::new();
        let handled = Family::<CodeLabels, Counter>::default();
        let alive_tasks = Gauge::default();
        let mut registry = Registry::default();
        register_rpc_families(&mut registry, &families, &handled);
        register_stats(&mut registry, stats, &alive_tasks);
        let mut methods = Vec::new();
        let mut by_path = HashMap::new();
        for (service, method, rpc_type) in served_methods(served, descriptor_sets) {
            let id = MethodId(methods.len());
            if by_path
                .insert(format!("/{service}/{method}").into_boxed_str(), id)
                .is_none()
            {
                methods.push(families.series(&service, &method, rpc_type));
            }
        }
        // Unknown paths are answered UNIMPLEMENTED before any message is read.
        methods.push(families.series("unknown", "unknown", RpcType::Unary));
        Self {
            registry,
            handled,
            in_flight: stats.in_flight_calls.clone(),
            alive_tasks,
            methods,
            by_path,
        }
    }

    /// Where the components that count other things register their families.
    pub(crate) fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The method of a call to `path`.
    pub(crate) fn method(&self, path: &str) -> MethodId {
        self.by_path
            .get(path)
            .copied()
            .unwrap_or(MethodId(self.methods.len() - 1))
    }

    /// The way `method`'s messages stream.
    pub(crate) fn rpc_type(&self, method: MethodId) -> RpcType {
        self.methods[method.0].rpc_type
    }

    /// Whether calls to `method` carry exactly one request message: a known
    /// unary or server-streaming method (not the `unknown` series).
    pub(crate) fn takes_one_message(&self, method: MethodId) -> bool {
        method.0 + 1 < self.methods.len() && !self.methods[method.0].rpc_type.client_streams()
    }

    /// A call to `method` started. A caller that sends one message has sent
    /// it (counted here, as grpc-go's interceptors count it before the
    /// handler); streamed messages are counted as they arrive.
    pub(crate) fn started(&self, method: MethodId) {
        self.in_flight.inc();
        let series = &self.methods[method.0];
        series.started.inc();
        if !series.rpc_type.client_streams() {
            series.received.inc();
        }
    }

    /// `count` more streamed messages of a call to `method` arrived.
    pub(crate) fn received(&self, method: MethodId, count: u64) {
        self.methods[method.0].received.inc_by(count);
    }

    /// `count` more streamed answers of a call to `method` were sent.
    pub(crate) fn sent(&self, method: MethodId, count: u64) {
        self.methods[method.0].sent.inc_by(count);
    }

    /// A call to `method` ended, with `code` (none: its caller went away
    /// first, counted as `Canceled`). A one-message answer counts as sent
    /// with OK, as grpc-go's interceptors count it.
    pub(crate) fn finished(&self, method: MethodId, code: Option<Code>, elapsed: Duration) {
        self.in_flight.dec();
        let series = &self.methods[method.0];
        series.latency.observe(elapsed.as_secs_f64());
        let code = code.unwrap_or(Code::Cancelled);
        if code == Code::Ok && !series.rpc_type.server_streams() {
            series.sent.inc();
        }
        series.handled[code as usize]
            .get_or_init(|| {
                self.handled
                    .get_or_create(&CodeLabels {
                        grpc_type: series.labels.grpc_type,
                        grpc_service: series.labels.grpc_service.clone(),
                        grpc_method: series.labels.grpc_method.clone(),
                        grpc_code: echo_wire::codes::camel_name(code as i32),
                    })
                    .clone()
            })
            .inc();
    }

    /// The exposition text of every metric.
    pub(crate) fn encode(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let alive = runtime.metrics().num_alive_tasks();
            self.alive_tasks
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The grpc-ecosystem families of every call.
fn register_rpc_families(
    registry: &mut Registry,
    families: &MethodFamilies,
    handled: &Family<CodeLabels, Counter>,
) {
    registry.register(
        "grpc_server_started",
        "RPCs started on the server",
        families.started.clone(),
    );
    registry.register(
        "grpc_server_handled",
        "RPCs completed on the server, by status code",
        handled.clone(),
    );
    registry.register(
        "grpc_server_msg_received",
        "Messages received from callers",
        families.received.clone(),
    );
    registry.register(
        "grpc_server_msg_sent",
        "Messages sent to callers",
        families.sent.clone(),
    );
    registry.register(
        "grpc_server_handling_seconds",
        "RPC duration, to the last message",
        families.latency.clone(),
    );
}

/// The live counters of [`Stats`], and the runtime's alive tasks.
fn register_stats(registry: &mut Registry, stats: &Stats, alive_tasks: &Gauge) {
    registry.register(
        "grpc_server_in_flight_calls",
        "RPCs started and not yet finished",
        stats.in_flight_calls.clone(),
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
    registry.register(
        "echo_http_requests",
        "HTTP requests by HTTP version (1.1, 2, 3)",
        stats.http_requests.family.clone(),
    );
    registry.register(
        "tokio_alive_tasks",
        "Tasks alive in the server's runtime",
        alive_tasks.clone(),
    );
}

/// `(full service name, method name, type)` of every method of `served` in `descriptor_sets`.
fn served_methods(served: &[&str], descriptor_sets: &[&[u8]]) -> Vec<(String, String, RpcType)> {
    let mut methods = Vec::new();
    for set in descriptor_sets {
        // The sets are compiled in; one that does not decode names no methods.
        let Ok(set) = outline::FileSet::decode(*set) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                let name = match file.package.as_str() {
                    "" => service.name.clone(),
                    package => format!("{package}.{}", service.name),
                };
                if served.contains(&name.as_str()) {
                    methods.extend(service.method.iter().map(|m| {
                        (
                            name.clone(),
                            m.name.clone(),
                            RpcType::new(m.client_streaming, m.server_streaming),
                        )
                    }));
                }
            }
        }
    }
    methods
}

/// The services and methods of a `FileDescriptorSet`, and nothing else:
/// decoding skips the messages, options and source info the metrics do not
/// need, which was most of the server's start-up work (BENCHMARKS.md). The
/// field numbers are `descriptor.proto`'s.
mod outline {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct FileSet {
        #[prost(message, repeated, tag = "1")]
        pub(super) file: Vec<File>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct File {
        #[prost(string, tag = "2")]
        pub(super) package: String,
        #[prost(message, repeated, tag = "6")]
        pub(super) service: Vec<Service>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Service {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(message, repeated, tag = "2")]
        pub(super) method: Vec<Method>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Method {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(bool, tag = "5")]
        pub(super) client_streaming: bool,
        #[prost(bool, tag = "6")]
        pub(super) server_streaming: bool,
    }
}

/// Serves `GET /metrics` on `listener` until dropped.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
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
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::outline;

    #[test]
    fn the_outline_reads_every_method_the_full_descriptors_hold() {
        let mut services = 0;
        for set in crate::services::DESCRIPTOR_SETS {
            let full = prost_types::FileDescriptorSet::decode(set).unwrap();
            let method = |method: &prost_types::MethodDescriptorProto| outline::Method {
                name: method.name().to_owned(),
                client_streaming: method.client_streaming(),
                server_streaming: method.server_streaming(),
            };
            let service = |service: &prost_types::ServiceDescriptorProto| outline::Service {
                name: service.name().to_owned(),
                method: service.method.iter().map(method).collect(),
            };
            let expected = outline::FileSet {
                file: (full.file.iter())
                    .map(|file| outline::File {
                        package: file.package().to_owned(),
                        service: file.service.iter().map(service).collect(),
                    })
                    .collect(),
            };
            services += expected
                .file
                .iter()
                .map(|file| file.service.len())
                .sum::<usize>();
            assert_eq!(outline::FileSet::decode(set).unwrap(), expected);
        }
        // Not a comparison of empty outlines.
        assert!(services >= 6, "{services} services");
    }
}
