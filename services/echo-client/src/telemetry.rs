//! OpenTelemetry tracing (feature `otlp`), off unless an OTLP endpoint is
//! given: `tracing` spans exported over OTLP/gRPC, and W3C trace context
//! (`traceparent`, `tracestate`, `baggage`) read from requests and written
//! into every call this library makes. The standard variables apply:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`),
//! `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
//! Off, a call pays one relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Whether spans are exported: set once, when [`Telemetry::start`] starts.
static ON: AtomicBool = AtomicBool::new(false);

/// The variables that name an endpoint when no flag does.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct TelemetryError(String);

/// The span exporter; [`Telemetry::shutdown`] sends the last spans.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Starts exporting to `endpoint`, or to the one the standard variables
    /// name; `None` when neither names one (tracing off). The service is
    /// named by `OTEL_SERVICE_NAME`, else `service_name`. Call within a
    /// tokio runtime.
    pub fn start(
        endpoint: Option<&str>,
        service_name: &str,
    ) -> Result<Option<Self>, TelemetryError> {
        let configured = ENDPOINT_VARIABLES
            .iter()
            .any(|variable| std::env::var_os(variable).is_some_and(|v| !v.is_empty()));
        if endpoint.is_none() && !configured {
            return Ok(None);
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = endpoint {
            exporter = exporter.with_endpoint(endpoint);
        }
        let exporter = exporter
            .build()
            .map_err(|err| TelemetryError(err.to_string()))?;
        let service_name =
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.to_owned());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .build();
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        ON.store(true, Ordering::Relaxed);
        Ok(Some(Self { provider }))
    }

    /// The layer that turns the spans of this project's crates (not their
    /// events, nor other crates' spans) into OpenTelemetry spans, whatever
    /// the log level.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("grpc-echo"))
            // The RPC conventions' attributes only, not where in the code.
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                metadata.is_span()
                    && ["echo_server", "echo_client", "echo_cli"]
                        .iter()
                        .any(|krate| metadata.target().starts_with(krate))
            }))
    }
}

impl Telemetry {
    /// Sends the spans not sent yet, and stops. Off the runtime's threads:
    /// the exporter blocks until the runtime has sent them.
    pub async fn shutdown(self) {
        ON.store(false, Ordering::Relaxed);
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(cause = %err, "could not send the last spans"),
            Err(err) => tracing::warn!(cause = %err, "could not send the last spans"),
        }
    }
}

/// Whether spans are exported.
pub fn is_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Makes the trace context in `headers` (W3C) the parent of `span`.
pub fn set_parent_from(span: &tracing::Span, headers: &HeaderMap) {
    if !is_on() || span.is_disabled() {
        return;
    }
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// Writes the current span's trace context into `headers` (W3C), replacing
/// any the caller copied in.
pub(crate) fn inject_current(headers: &mut HeaderMap) {
    if !is_on() {
        return;
    }
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(headers));
        });
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
